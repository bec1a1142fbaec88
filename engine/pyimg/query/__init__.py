"""The query language and the persisted target graph it walks; serving `pyimg query`."""
