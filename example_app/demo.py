"""``make demo``: the example app end to end, with nothing but this machine.

1. the sandbox (a local stand-in of the PostStack API), a Redis with
   append-only persistence, and a webhook registered at the sandbox through
   the SDK, pointing at the app;
2. one real ``rq worker`` process, started with ``worker_command()`` and
   configured by its environment only;
3. the example app on a SQLite file, served over HTTP by werkzeug in a
   thread, and its outbox relay in another;
4. a sign-up POSTed to the app's form, then a wait (bounded) until the worker
   has sent the welcome email and the sandbox's webhook has told the app that
   it was delivered;
5. what happened, then everything stopped.

Everything listens on 127.0.0.1 only. ``--keep`` keeps it all running until
Ctrl-C so that you can click around::

    python -m example_app.demo [--keep] [--timeout SECONDS]
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import typing as t
from pathlib import Path

import httpx
from flask import Flask
from poststack import PostStack
from werkzeug.serving import BaseWSGIServer
from werkzeug.serving import make_server
from werkzeug.serving import WSGIRequestHandler

from flask_poststack import get_state
from flask_poststack.cli import worker_command
from flask_poststack.cli import worker_environ
from flask_poststack.outbox.relay import run_relay
from flask_poststack.redis_server import RedisServer
from flask_poststack.sandbox import Sandbox

from . import create_app

#: Any key with a PostStack prefix works against the sandbox. A live-mode one,
#: because the sandbox applies injected outcomes (the bounce offered with
#: ``--keep``) only in live mode. Nothing leaves this machine either way.
API_KEY = "sk_live_sandbox_demo"
WEBHOOK_PATH = "/poststack/webhooks"
WEBHOOK_EVENTS = [
    "email.sent",
    "email.delivered",
    "email.deferred",
    "email.bounced",
    "email.complained",
    "email.failed",
]
FINAL = {"delivered", "bounced", "complained", "failed"}
BOUNCE_ADDRESS = "bounce@example.com"
#: With ``--keep``, the ports the sandbox and the app take when they are
#: free, so that the inbox and the app can be bookmarked (8025 is also
#: ``make sandbox``'s). A busy port falls back to one the OS picks.
KEEP_SANDBOX_PORT = 8025
KEEP_APP_PORT = 5025


class DemoError(Exception):
    """A step failed or timed out; the message says which."""


def main(argv: t.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m example_app.demo")
    parser.add_argument(
        "--keep", action="store_true", help="keep everything running until Ctrl-C"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the email to be delivered (default: 30)",
    )
    parser.add_argument(
        "--sandbox-port",
        type=int,
        help=f"the sandbox's port (default: {KEEP_SANDBOX_PORT} with --keep,"
        " else any free one)",
    )
    parser.add_argument(
        "--app-port",
        type=int,
        help=f"the app's port (default: {KEEP_APP_PORT} with --keep, else any"
        " free one)",
    )
    args = parser.parse_args(argv)
    ports = (
        KEEP_SANDBOX_PORT
        if args.sandbox_port is None and args.keep
        else args.sandbox_port,
        KEEP_APP_PORT if args.app_port is None and args.keep else args.app_port,
    )
    # Ctrl-C, or a SIGTERM (a test's timeout, a process manager), cleans up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)

    code = 0
    with contextlib.ExitStack() as stack:
        try:
            demo(stack, keep=args.keep, timeout=args.timeout, ports=ports)
        except DemoError as exc:
            print(f"\nDemo failed: {exc}", file=sys.stderr, flush=True)
            code = 1
        except KeyboardInterrupt:
            print("\nInterrupted.", file=sys.stderr)
            code = 130
        except Exception as exc:  # a bug, or a step that broke unexpectedly
            traceback.print_exc()
            print(f"\nDemo failed: {exc}", file=sys.stderr, flush=True)
            code = 1
        finally:
            # No second Ctrl-C halfway through: every step below is bounded.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            print(
                "Stopping the relay, the worker, the app, Redis and the sandbox...",
                flush=True,
            )
    print("Stopped.")
    return code


def demo(
    stack: contextlib.ExitStack,
    *,
    keep: bool,
    timeout: float,
    ports: tuple[int | None, int | None] = (None, None),
) -> None:
    """Run the demo; ``stack`` stops what was started, last first.

    ``ports`` are the sandbox's and the app's: a port that is taken (or
    ``None``) is replaced by a free one.
    """
    workdir = Path(stack.enter_context(tempfile.TemporaryDirectory("-demo")))

    sandbox = start_sandbox(ports[0])
    stack.callback(sandbox.stop)
    print(f"Sandbox:  {sandbox.base_url} (the PostStack API, on this machine)")
    if keep:
        sandbox.outcomes.add("bounced", BOUNCE_ADDRESS, times=None)

    redis_server = RedisServer(appendonly="everysec").start()
    stack.callback(redis_server.stop)
    print(f"Redis:    {redis_server.url} (appendonly)")

    # The webhook points at the app, so the app's socket is bound first (to a
    # port the OS picks, so no other process can take it meanwhile), and the
    # app, configured with the webhook's signing secret, is served from it.
    client = stack.enter_context(PostStack(API_KEY, base_url=sandbox.base_url))
    server = listen(stack, ports[1])
    app_url = f"http://127.0.0.1:{server.server_port}"
    webhook = client.webhooks.create(
        {"url": app_url + WEBHOOK_PATH, "events": WEBHOOK_EVENTS}
    )
    print(f"Webhook:  {app_url}{WEBHOOK_PATH} (its signing secret goes to the app)")

    app = create_app(
        {
            "SECRET_KEY": secrets.token_hex(16),
            "POSTSTACK_API_KEY": API_KEY,
            "POSTSTACK_BASE_URL": sandbox.base_url,
            "POSTSTACK_DEFAULT_FROM": "Acme <hello@example.com>",
            "POSTSTACK_REDIS_URL": redis_server.url,
            "POSTSTACK_WEBHOOK_URL": WEBHOOK_PATH,
            "POSTSTACK_WEBHOOK_SECRET": webhook["signingSecret"],
            "POSTSTACK_PREVIEWS": True,
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{workdir / 'app.db'}",
        }
    )
    worker = start_worker(app, workdir / "worker.log", stack)
    start_relay(app, stack)
    server.app = app
    print(f"App:      {app_url}/")
    print(f"Previews: {app_url}/_poststack/previews/")

    http = stack.enter_context(httpx.Client(base_url=app_url, timeout=10))
    response = http.post("/signup", data={"name": "Ada", "email": "ada@example.com"})
    if response.status_code != 303:
        raise DemoError(f"POST /signup answered {response.status_code}, not 303")
    location = response.headers["location"]
    print(f"\nSigned up ada@example.com: POST /signup -> 303 {location}")

    print(f"Waiting for the worker and the webhook (up to {timeout:g} s)...")
    row = wait_for_delivery(http, worker, workdir / "worker.log", timeout)
    email_id = row["email_id"]
    api_status = client.emails.get(email_id)["email"]["status"]
    print(f"Email id:        {email_id}")
    print(f"Sandbox status:  {api_status} (GET /emails/{email_id})")
    print(f"Job state:       {row['job_state']} (email_status)")
    print(f"Webhook status:  {row['delivery']} (recorded by the app)")
    print(f"Inbox:           {sandbox.inbox_url}")
    print(f"This email:      {sandbox.base_url}/inbox/{email_id}")

    if keep:
        print(f"\nEverything keeps running. Open {app_url}/ to sign up, send a")
        print(f"receipt and follow each email on {app_url}/emails; sign up as")
        print(f"{BOUNCE_ADDRESS} to see a bounce. Worker log: {workdir}/worker.log")
        print("Press Ctrl-C to stop.", flush=True)
        try:
            while worker.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            print()
            return
        raise DemoError(f"the worker exited with code {worker.returncode}")


def start_worker(
    app: Flask, log_path: Path, stack: contextlib.ExitStack
) -> subprocess.Popen[bytes]:
    """One ``rq worker`` process, the documented command, configured by its
    environment only (the ``POSTSTACK_*`` keys of the app; no Flask app)."""
    argv = worker_command(get_state(app).settings)
    env = worker_environ(app.config)
    env.pop("FLASK_APP", None)
    log = stack.enter_context(log_path.open("wb"))
    worker = subprocess.Popen(
        argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
    )
    stack.callback(stop_process, worker)
    print(f"Worker:   pid {worker.pid}: {shlex.join(argv)}")
    return worker


def start_relay(app: Flask, stack: contextlib.ExitStack) -> None:
    """The outbox relay, in a thread: it pushes the emails whose push after
    the commit failed (Redis down); ``flask poststack relay`` in production."""
    stop = threading.Event()
    thread = threading.Thread(
        target=run_relay, args=(app,), kwargs={"stop": stop}, daemon=True
    )
    thread.start()

    def halt() -> None:
        stop.set()
        thread.join(timeout=10)

    stack.callback(halt)
    print(f"Relay:    the outbox of {app.config['SQLALCHEMY_DATABASE_URI']}")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (rq finishes the job at hand), SIGKILL after 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_sandbox(port: int | None) -> Sandbox:
    """A sandbox on ``port`` if it is free, else on one the OS picks."""
    if port:
        try:
            return Sandbox(port=port, lifecycle_delay=0.2).start()
        except OSError:
            print(f"Port {port} is taken: the sandbox takes another.", flush=True)
    return Sandbox(lifecycle_delay=0.2).start()


def listen(stack: contextlib.ExitStack, port: int | None = None) -> BaseWSGIServer:
    """Serve on 127.0.0.1 (on ``port`` if it is free, else a port the OS
    picks) from a thread, until ``stack`` closes. It answers 503 until its
    ``app`` is set."""
    server = None
    if port:
        try:
            server = make_server(
                "127.0.0.1",
                port,
                not_ready,
                threaded=True,
                request_handler=QuietHandler,
            )
        except (OSError, SystemExit):  # werkzeug exits on a port in use
            print(f"Port {port} is taken: the app takes another.", flush=True)
    if server is None:
        server = make_server(
            "127.0.0.1", 0, not_ready, threaded=True, request_handler=QuietHandler
        )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()

    stack.callback(stop)
    return server


def not_ready(
    environ: dict[str, t.Any], start_response: t.Callable[..., t.Any]
) -> list[bytes]:
    start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
    return [b"The demo app is starting.\n"]


class QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: t.Any) -> None:
        pass  # no line per request: the demo prints what matters


def wait_for_delivery(
    http: httpx.Client,
    worker: subprocess.Popen[bytes],
    log_path: Path,
    timeout: float,
) -> dict[str, t.Any]:
    """Poll the app's ``/emails.json`` until the welcome email has a final
    delivery status; fail early if the worker dies."""
    deadline = time.monotonic() + timeout
    row: dict[str, t.Any] = {}
    while True:
        emails = http.get("/emails.json").json()["emails"]
        row = emails[0] if emails else {}
        if row.get("delivery") in FINAL and row.get("email_id"):
            return row
        if worker.poll() is not None:
            raise DemoError(
                f"the worker exited with code {worker.returncode}:\n{tail(log_path)}"
            )
        if time.monotonic() > deadline:
            raise DemoError(
                f"timed out after {timeout:g} s: job {row.get('job_state')!r},"
                f" webhook status {row.get('delivery')!r}.\n"
                f"Worker log:\n{tail(log_path)}"
            )
        time.sleep(0.1)


def tail(path: Path, lines: int = 20) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
