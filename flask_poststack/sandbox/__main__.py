"""``python -m flask_poststack.sandbox --port 8025``: run the sandbox until
Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import sys
import typing as t

from . import Sandbox


def main(argv: t.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flask_poststack.sandbox",
        description="A local stand-in of the PostStack email API.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    parser.add_argument("--port", type=int, default=8025, help="0 picks a free port")
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        metavar="MS",
        help="API response time, counted from the request's arrival",
    )
    parser.add_argument(
        "--lifecycle-delay",
        type=float,
        default=0.2,
        metavar="S",
        help="seconds between queued, sent and delivered",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="seed for fault randomness"
    )
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(message)s",
        stream=sys.stderr,
    )
    sandbox = Sandbox(
        args.host,
        args.port,
        latency=args.latency / 1000.0,
        lifecycle_delay=args.lifecycle_delay,
        seed=args.seed,
    )
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"warning: the sandbox listens on {args.host}, not loopback",
            file=sys.stderr,
        )
    sandbox.start()
    print(f"PostStack sandbox on {sandbox.base_url}", flush=True)
    print(f"  inbox:  {sandbox.inbox_url}", flush=True)
    print(f"  admin:  {sandbox.base_url}/_sandbox/stats", flush=True)
    sandbox.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
