"""Merged reports: JUnit XML, coverage, the terminal summary."""
