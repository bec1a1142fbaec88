"""Signatures and attestations: keys, signed documents, and attaching them in registries."""
