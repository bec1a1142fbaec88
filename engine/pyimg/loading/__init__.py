"""Loading: Starlark evaluation, the prelude, BUILD files and glob(), MODULE.pyimg, the loading cache."""
