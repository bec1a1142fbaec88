"""What a build is asked to do: one `BuildRequest` holding the typed options of each layer.

The command line (cli/) turns flags and `PYIMG_*` switches into a request; nothing below cli/
reads either. Light on imports: the incremental build makes one from its record before the
engine is imported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pyimg.external.options import RegistryOptions

if TYPE_CHECKING:
    from pyimg.core.secrets import SecretProvider
    from pyimg.remote.options import RemoteOptions

__all__ = ["BuildRequest", "DisplayOptions", "ExecutionOptions", "cores"]


@dataclass(frozen=True)
class DisplayOptions:
    """How progress is shown on stderr: every action logged (`verbose`), bold text (`color`:
    yes, no, or auto for a terminal)."""

    verbose: bool = False
    color: str = "auto"


@dataclass(frozen=True)
class ExecutionOptions:
    """How the engine (core/) runs actions."""

    jobs: int = 0  # parallel actions; 0: one more than the cores (`workers`)
    keep_going: bool = False  # build as much as possible after a failure
    sandbox_strict: bool = False  # fail instead of running an action unsandboxed
    # Permutes the start order of ready actions (PYIMG_SCHEDULE_SEED, set by `pyimg audit`).
    schedule_seed: str | None = None

    def workers(self) -> int:
        """How many actions run at once: --jobs, else one more than the cores. A command's
        action spends part of its time on no core (starting its sandbox, waiting for the
        engine's thread to take its result): with a slot per core, a 10,000-genrule cold build
        on 2 cores left 26% of the CPU idle; one more slot took 9% off its time
        (docs/benchmarks.md, "One more action than cores"). Ninja guesses the same (cores + 1
        on 2 cores, + 2 above)."""
        return self.jobs or cores() + 1

    def parallelism(self) -> int:
        """How many threads one action may use (a layer's compression): --jobs, else the cores.
        At most this many built-in actions, which run in this process, run at once."""
        return self.jobs or cores()


def cores() -> int:
    """The cores this process may run on: its CPU affinity, which a container's cpuset limits
    (os.cpu_count() counts the machine's)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class BuildRequest:
    """A build of `patterns` (target patterns, relative to the current directory's package)."""

    patterns: tuple[str, ...]
    display: DisplayOptions = field(default_factory=DisplayOptions)
    execution: ExecutionOptions = field(default_factory=ExecutionOptions)
    registry: RegistryOptions = field(default_factory=RegistryOptions)
    # The --secret values; the build closes the provider when it ends (none outlives it).
    secrets: SecretProvider | None = None
    # Serve unchanged targets' analyses when a BUILD file changed (PYIMG_ANALYSIS_REUSE=0: no).
    reuse_analysis: bool = True
    # Write the lazy layers of pulled bases into the image layouts under pyimg-out/. `pyimg push`
    # does not: it fetches only what the destination registry can neither mount nor has.
    fetch_lazy: bool = True
    # --remote-cache and its options (docs/remote.md); None: the local disk cache only.
    remote: RemoteOptions | None = None
    # `--platforms`: build the top-level targets for each (`os/arch[/variant]`); none: the
    # default configuration (docs/concepts.md, "Platforms").
    platforms: tuple[str, ...] = ()
