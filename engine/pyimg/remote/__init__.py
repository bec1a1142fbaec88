"""Remote caching and execution over the Remote Execution API v2 (REAPI), and `pyimg worker`."""
