"""The `pyimg` command line."""
