"""SBOMs and provenance statements of built images, derived from the action graph (docs/supply-chain.md)."""
