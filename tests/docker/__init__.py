"""Tests that need a Docker engine (marked `docker`)."""
