"""Local Docker images of the services testfleet runs, built from the binaries on this machine
(`testfleet images build`), for engines that no registry reaches: each image is a root
filesystem written as a tar stream and piped to `docker import`."""
