"""Analysis: rule implementations run on loaded targets, giving providers and actions; the
analysis and target caches."""
