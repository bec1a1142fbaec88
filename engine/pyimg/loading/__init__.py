"""Loading: Starlark evaluation, the prelude, BUILD files and glob(), MODULE.pyimg, and the
loading cache."""
