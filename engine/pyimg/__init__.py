"""pyimg: a daemonless, rootless, Bazel-like build system for reproducible OCI images."""

__version__ = "0.1.0"
__all__ = ["__version__"]
