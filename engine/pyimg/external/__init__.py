"""External inputs that MODULE.pyimg declares: the lock file, fetching, the repository cache,
materialized repositories, the lazy layers of pulled images, and safe archive extraction."""
