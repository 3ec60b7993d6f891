"""testfleet: run a pytest suite fast against real services."""

__version__ = "0.1.0"
