"""Analysis: rule implementations run on loaded targets, giving providers and actions; its caches."""
