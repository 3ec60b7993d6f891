"""How a service runs: `native` processes on this machine (Docker and external come later)."""
