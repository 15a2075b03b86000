"""The practical ceiling for ``worker_classes.py``: a bare loop of SDK sends.

No queue, no Redis, no Flask: one process calls ``client.emails.send()``
``COUNT`` times in a row against the sandbox and prints, as JSON, the wall
clock time of its first send's start and its last send's end. Whatever a
worker adds on top of this is the queue's cost.

    POSTSTACK_API_KEY=sk_test_... python benchmarks/sdk_loop.py BASE_URL COUNT [OFFSET]
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid

import poststack


def main() -> int:
    base_url, count = sys.argv[1], min(int(sys.argv[2]), 100_000)
    offset = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    client = poststack.PostStack(
        api_key=os.environ["POSTSTACK_API_KEY"], base_url=base_url
    )
    start = time.time()
    for i in range(offset, offset + count):
        client.emails.send(
            {
                "from": "hello@example.com",
                "to": [f"user{i}@example.com"],
                "subject": "Welcome",
                "html": "<h1>Hi</h1>",
                "idempotency_key": f"loop-{uuid.uuid4().hex}",
            }
        )
    print(json.dumps({"start": start, "end": time.time(), "count": count}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
