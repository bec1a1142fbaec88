"""The OCI model and bytes: media types, descriptors, manifests, configs, canonical tar, layouts."""
