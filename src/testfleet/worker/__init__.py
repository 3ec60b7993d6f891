"""What runs inside a lane's pytest process, in the project's interpreter: the lane plugin, the
early lane's boot script and the recheck reporter. Each imports only the standard library,
pytest and the protocol (a test keeps it so): testfleet's own dependencies may be missing there."""
