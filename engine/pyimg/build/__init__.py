"""The build tool: load, analyze, execute and place outputs; the no-op, incremental and explain
records; pushing a built image."""
