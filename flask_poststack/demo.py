"""``make demo``: start the sandbox, send one email through the SDK, show it.

An interim demo until the example app lands: it needs no account, no Redis
and no network beyond 127.0.0.1.
"""

from __future__ import annotations

import argparse
import sys
import typing as t

from poststack import PostStack

from .sandbox import Sandbox

#: Any key with the test prefix works against the sandbox.
DEMO_KEY = "sk_test_demo"


def main(argv: t.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flask_poststack.demo")
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument(
        "--keep", action="store_true", help="keep the sandbox running until Ctrl-C"
    )
    args = parser.parse_args(argv)

    sandbox = Sandbox(port=args.port, lifecycle_delay=0.1).start()
    try:
        print(f"Sandbox running on {sandbox.base_url}")
        with PostStack(DEMO_KEY, base_url=sandbox.base_url) as client:
            sent = client.emails.send(
                {
                    "from": "Flask-PostStack demo <demo@example.com>",
                    "to": ["ada@example.com"],
                    "subject": "Hello from Flask-PostStack",
                    "html": "<h1>Hello Ada</h1><p>Sent through the PostStack SDK.</p>",
                    "text": "Hello Ada\n\nSent through the PostStack SDK.",
                    "tags": ["demo"],
                }
            )
            print(f"Sent email {sent['id']}")
            sandbox.wait_for_status(sent["id"], timeout=10)
            status = client.emails.get(sent["id"])["email"]["status"]
        print(f"Status: {status}")
        print(f"Inbox: {sandbox.inbox_url}")
        print(f"This email: {sandbox.base_url}/inbox/{sent['id']}")
        if args.keep:
            print("Serving until Ctrl-C.", flush=True)
            sandbox.serve_forever()
    finally:
        sandbox.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
