"""`pyimg worker --remote URL`: a bot of an REAPI server's scheduler (docs/remote.md)."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from types import FrameType

from pyimg.cli.commands import command
from pyimg.errors import RemoteError, UsageError

__all__ = ["cmd_worker"]


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--remote", required=True, metavar="URL",
                   help="the REAPI server whose Bots service schedules onto this worker "
                        "(grpc://HOST:PORT or grpcs://HOST:PORT)")
    p.add_argument("--remote-instance-name", default="", metavar="NAME")
    p.add_argument("--remote-header", action="append", default=[], metavar="NAME=VALUE",
                   help="a header sent with every call (repeatable; never logged)")
    p.add_argument("--remote-ca-file", metavar="FILE")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="the worker's content store and scratch space (default "
                        "$XDG_CACHE_HOME/pyimg-worker)")
    p.add_argument("--bot-id", default="", help="the bot's name (default: host and pid)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="run N leases at a time: N bot sessions, named BOT-ID-0 ... "
                        "(default 1)")


@command("worker", "serve an REAPI server's scheduler as a worker (Remote Workers API)",
         _configure)
def cmd_worker(args: argparse.Namespace) -> int:
    from pyimg.remote.options import RemoteOptions, parse_header
    from pyimg.remote.worker import BotWorker, WorkerOptions, run_bots

    cache = args.cache_dir or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "pyimg-worker")
    remote = RemoteOptions(cache=args.remote, instance_name=args.remote_instance_name,
                           headers=tuple(parse_header(h) for h in args.remote_header),
                           ca_file=args.remote_ca_file)
    if args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {args.jobs}")
    stopping = threading.Event()
    bot_id = args.bot_id or f"pyimg-{socket.gethostname()}-{os.getpid()}"
    ids = [bot_id] if args.jobs == 1 else [f"{bot_id}-{i}" for i in range(args.jobs)]
    workers = [BotWorker(WorkerOptions(remote, Path(cache), name),
                         log=lambda line: print(line, file=sys.stderr, flush=True),
                         stop=stopping) for name in ids]

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
    try:
        run_bots(workers)
    except KeyboardInterrupt:
        pass  # a worker is stopped by Ctrl-C or SIGTERM: both end it the same way
    except Exception as e:
        # grpc.RpcError, which is not imported here: a refused token, an unknown instance.
        code, details = getattr(e, "code", None), getattr(e, "details", None)
        if code is None or details is None:
            raise
        raise RemoteError(f"{args.remote}: the server refused this worker ({code().name}: "
                          f"{details()})") from None
    finally:
        for worker in workers:
            worker.close()
    print(f"pyimg worker: {sum(w.leases_done for w in workers)} leases done", file=sys.stderr)
    return 0
