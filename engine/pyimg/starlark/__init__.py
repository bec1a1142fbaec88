"""Loading and analysis: the only code that imports `starlark`."""
