"""The reproducibility audit: run conditions, runs, provenance of a difference, comparison,
reports."""
