"""Where a service's servers run: `native` processes on this machine, `docker` containers, or
`external` servers someone else runs; all behind the seam in `base`."""
