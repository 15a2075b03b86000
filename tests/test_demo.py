from __future__ import annotations

import re
import subprocess
import sys


def test_demo_sends_one_email() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flask_poststack.demo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    out = result.stdout
    assert re.search(r"^Sent email em_[0-9a-f]{18}$", out, re.M), out
    assert "Status: delivered" in out
    assert re.search(r"^Inbox: http://127\.0\.0\.1:\d+/$", out, re.M), out
