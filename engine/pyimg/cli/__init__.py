"""The `pyimg` command line."""

__all__ = ["COMMAND_MODULES"]

# The module that defines each command: `pyimg COMMAND` imports only that one, because start-up
# time is part of every command's latency (a unit test checks that this table is complete).
COMMAND_MODULES = {
    "build": "pyimg.cli.build",
    "run": "pyimg.cli.run",
    "clean": "pyimg.cli.clean",
    "cache": "pyimg.cli.cache",
    "query": "pyimg.cli.query",
    "aquery": "pyimg.cli.query",
    "explain": "pyimg.cli.explain",
    "audit": "pyimg.cli.audit",
    "lock": "pyimg.cli.lock",
    "fetch": "pyimg.cli.fetch",
    "push": "pyimg.cli.push",
    "worker": "pyimg.cli.worker",
    "sign": "pyimg.cli.sign",
    "attest": "pyimg.cli.sign",
    "verify": "pyimg.cli.sign",
    "keygen": "pyimg.cli.sign",
}
