"""What ``POSTSTACK_TEXT_FROM_HTML`` and ``POSTSTACK_INLINE_CSS`` add to the
render of one email: the example app's receipt.

No network, no Redis: ``render_email`` of ``emails/receipt`` (the example
app's layout, with its ``<style>`` block, and the receipt's HTML and subject;
its ``.txt`` is left out, so the text part is the one made from the HTML),
in one process, four variants interleaved call by call (the order rotates
every call), so drift and the other processes on a noisy machine hit every
variant alike:

* plain: Jinja only (what the render costs with both settings off);
* text from HTML (inscriptis);
* CSS inlined (css-inline);
* both.

Median and p99 per email. Writes ``benchmarks/results/render_cost.json``.

    python benchmarks/render_cost.py [--quick] [--rounds 20] [--calls 200]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import typing as t
from pathlib import Path

from _common import print_table
from _common import summary_ms
from _common import write_results
from flask import Flask

from flask_poststack import PostStack
from flask_poststack._templates import render_email

EXAMPLE = Path(__file__).resolve().parent.parent / "example_app" / "templates"
FILES = ("emails/layout.html", "emails/receipt.html", "emails/receipt.subject.txt")
ORDER = {"id": 42, "total": 4200}
VARIANTS: dict[str, dict[str, bool]] = {
    "plain render": {},
    "+ text from HTML": {"text_from_html": True},
    "+ CSS inlined": {"inline_css": True},
    "+ both": {"text_from_html": True, "inline_css": True},
}
#: The whole run stops measuring after this many seconds, whatever the counts.
DEADLINE = 240.0


def main(argv: t.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 50")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=200, help="calls a round")
    args = parser.parse_args(argv)
    rounds, calls = (3, 50) if args.quick else (args.rounds, args.calls)
    rounds, calls = min(rounds, 200), min(calls, 5000)

    with tempfile.TemporaryDirectory() as folder:
        for name in FILES:
            (Path(folder) / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(EXAMPLE / name, Path(folder) / name)
        app = Flask(__name__, template_folder=folder)
        app.config.update(TESTING=True, SITE_NAME="Acme")
        PostStack(app)
        names = list(VARIANTS)
        times: dict[str, list[float]] = {name: [] for name in names}
        sizes: dict[str, tuple[int, int]] = {}
        deadline = time.monotonic() + DEADLINE
        with app.app_context():
            for name in names:  # warm up: templates compiled, libraries loaded
                out = render_email("emails/receipt", {"order": ORDER}, **VARIANTS[name])
                sizes[name] = (len(out.html or ""), len(out.text or ""))
            for call in range(rounds * calls):
                if time.monotonic() > deadline:
                    break
                shift = call % len(names)
                for name in names[shift:] + names[:shift]:
                    options = VARIANTS[name]
                    start = time.perf_counter()
                    render_email("emails/receipt", {"order": ORDER}, **options)
                    times[name].append(time.perf_counter() - start)

    stats = {name: summary_ms(values) for name, values in times.items()}
    plain = stats["plain render"]["median_ms"]
    rows = [
        (
            name,
            f"{stats[name]['median_ms']:.3f}",
            f"{stats[name]['p99_ms']:.3f}",
            f"{stats[name]['median_ms'] / plain:.1f}x",
            f"{sizes[name][0]} / {sizes[name][1]}",
        )
        for name in names
    ]
    print_table(
        ["variant", "median ms", "p99 ms", "vs plain", "html / text chars"], rows
    )
    write_results(
        "render_cost",
        {"variants": stats, "sizes": sizes, "rounds": rounds, "calls": calls},
        quick=args.quick,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
