"""`python -m dataplane [--listen HOST:PORT] [--admin-listen HOST:PORT] [--seed FILE] [--workers N]`
(ARCHITECTURE §10): flags override the DATAPLANE_* variables. One process serves the proxy and admin
listeners (process.py); `--workers N` runs N proxy processes on one listening socket under a supervisor
that owns the admin listener (workers.py). Standalone on a missing or invalid seed it exits with 2 and
the reasons (process.BootError)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .process import BootError, configure_logging, run, serve
from .settings import Settings, SettingsError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dataplane", description="The gateway's data plane.")
    parser.add_argument("--listen", help="proxy listener HOST:PORT (overrides DATAPLANE_LISTEN)")
    parser.add_argument("--admin-listen", help="ops listener HOST:PORT (overrides DATAPLANE_ADMIN_LISTEN)")
    parser.add_argument("--seed", help="seed config file (overrides DATAPLANE_SEED)")
    parser.add_argument("--workers", type=int, default=1, help="proxy worker processes (default 1)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(os.environ).with_overrides(
            listen=args.listen, admin_listen=args.admin_listen, seed=args.seed
        )
    except SettingsError as exc:
        print(f"dataplane: {exc}", file=sys.stderr)
        return 2
    if args.workers < 1:
        print("dataplane: --workers must be at least 1", file=sys.stderr)
        return 2
    # After the settings: DATAPLANE_LOG_LEVEL is one of them, so a bad level is refused like the others.
    listener = configure_logging(settings.log_level)
    refused: BootError | None = None
    try:
        if args.workers == 1:
            run(serve(settings))
        else:
            from .workers import supervise

            run(supervise(settings, args.workers))
    except BootError as exc:
        refused = exc
    finally:
        listener.stop()
    if refused is not None:  # after the listener stopped: the log lines before it come first
        print(f"dataplane: {refused}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
