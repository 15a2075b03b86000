"""Profile ``enqueue_email``: where the time of one queued email goes.

Queues 5,000 small emails (after 200 to warm up) on a throwaway
``redis-server`` and prints pyinstrument's call tree (``pip install
pyinstrument``, in the ``dev`` extra), or cProfile's top functions when
pyinstrument is missing. This is how the hot spots described in
``benchmarks/README.md`` ("Profiling") were found.

    python benchmarks/profile_enqueue.py [--calls 5000] [--all]
"""

from __future__ import annotations

import argparse
import sys
import typing as t

from _common import make_app
from _common import redis_process
from _common import SMALL_EMAIL

from flask_poststack import enqueue_email


def main(argv: t.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--all", action="store_true", help="show library frames")
    args = parser.parse_args(argv)
    calls = min(args.calls, 50_000)
    with redis_process() as server:
        app = make_app(server.url)
        with app.app_context():
            for _ in range(200):
                enqueue_email(**SMALL_EMAIL)
            try:
                from pyinstrument import Profiler
            except ImportError:
                import cProfile
                import pstats

                profile = cProfile.Profile()
                profile.enable()
                for _ in range(calls):
                    enqueue_email(**SMALL_EMAIL)
                profile.disable()
                pstats.Stats(profile).sort_stats("cumulative").print_stats(30)
                return 0
            profiler = Profiler(interval=0.0001)
            profiler.start()
            for _ in range(calls):
                enqueue_email(**SMALL_EMAIL)
            profiler.stop()
            print(profiler.output_text(unicode=True, show_all=args.all))
    return 0


if __name__ == "__main__":
    sys.exit(main())
