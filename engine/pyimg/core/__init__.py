"""The generic build engine: digests, content store, actions, graph, scheduler, sandbox.

Nothing here knows about OCI, Starlark or registries (a unit test checks the import direction).
"""
