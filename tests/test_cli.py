from __future__ import annotations

import socket
import typing as t
from pathlib import Path

import httpx
import poststack.resources.emails
import pytest
import redis
from flask import Flask
from rq import Queue
from rq import SimpleWorker
from rq.scheduler import RQScheduler
from rq.serializers import JSONSerializer

from flask_poststack import enqueue_email
from flask_poststack import PostStack
from flask_poststack.cli import NO_KEY_FOR_API
from flask_poststack.cli import worker_environ
from flask_poststack.client import reset_worker
from flask_poststack.redis_server import free_port
from flask_poststack.sandbox import Sandbox
from tests.helpers import wait_until

if t.TYPE_CHECKING:
    from tests.conftest import AppFactory

KEY = "sk_test_cli0123456789"


@pytest.fixture
def app(
    make_app: AppFactory, sandbox: Sandbox, redis_url: str, tmp_path: Path
) -> Flask:
    return make_app(
        template_folder=str(tmp_path),
        TESTING=False,
        POSTSTACK_API_KEY=KEY,
        POSTSTACK_BASE_URL=sandbox.base_url,
        POSTSTACK_REDIS_URL=redis_url,
        POSTSTACK_SUPPRESS_SEND=False,
    )


def run(app: Flask, *args: str) -> t.Any:
    return app.test_cli_runner().invoke(args=["poststack", *args])


def test_every_command_has_help(app: Flask) -> None:
    result = run(app, "--help")
    assert result.exit_code == 0
    for command in (
        "send-test",
        "check",
        "preview",
        "worker",
        "sandbox",
        "requeue-failed",
    ):
        assert command in result.output
        assert run(app, command, "--help").exit_code == 0


def test_send_test_prints_the_id_and_status(app: Flask, sandbox: Sandbox) -> None:
    result = run(app, "send-test", "--to", "ada@example.com")
    assert result.exit_code == 0, result.output
    (email,) = sandbox.emails
    assert f"id:     {email.id}" in result.output
    status = result.output.split("status: ")[1].split()[0]
    assert status in {"queued", "sending", "delivered"}  # it moves on quickly
    assert "mode:   test" in result.output
    assert KEY not in result.output


def test_send_test_reads_a_bare_email_object_too(
    app: Flask, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The API's docs show GET /emails/{id} as the bare object; the SDKs (and
    # the sandbox) wrap it in {"email": ...}. Unwrapped here, as such an API would.
    get = poststack.resources.emails.EmailsResource.get

    def bare(self: t.Any, email_id: str, **kwargs: t.Any) -> t.Any:
        return get(self, email_id, **kwargs)["email"]

    monkeypatch.setattr(poststack.resources.emails.EmailsResource, "get", bare)
    result = run(app, "send-test", "--to", "ada@example.com")
    assert result.exit_code == 0, result.output
    status = result.output.split("status: ")[1].split()[0]
    assert status in {"queued", "sending", "delivered"}


def test_send_test_bad_address_is_a_usage_error(app: Flask, sandbox: Sandbox) -> None:
    result = run(app, "send-test", "--to", "not-an-address")
    assert result.exit_code == 2
    assert "'--to'" in result.output
    assert sandbox.stats["requests"] == 0


def test_send_test_api_error_exits_1_with_the_request_id(
    app: Flask, sandbox: Sandbox
) -> None:
    sandbox.faults.add("quota", path="/emails")
    result = run(app, "send-test", "--to", "ada@example.com")
    assert result.exit_code == 1
    assert "monthly_limit_exceeded" in result.output
    assert "request id req_" in result.output


def test_send_test_when_suppressed(app: Flask, sandbox: Sandbox) -> None:
    app.config["POSTSTACK_SUPPRESS_SEND"] = True
    result = run(app, "send-test", "--to", "ada@example.com")
    assert result.exit_code == 0
    assert "suppressed" in result.output
    assert sandbox.stats["requests"] == 0


def test_check_reports_everything(app: Flask, redis_url: str) -> None:
    with app.app_context():
        enqueue_email(to="ada@example.com", subject="s", text="t")
    result = run(app, "check")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "API key: set, test mode" in out
    assert "reachable, key accepted" in out
    assert "default sender: hello@acme.test" in out
    assert "queue 'poststack': 1 waiting" in out
    assert "failed jobs: 0" in out
    assert (
        "warn  workers: none listening on 'poststack': queued emails wait until"
        " one runs. Start one: flask poststack worker"
    ) in out


def test_check_fails_when_the_api_or_redis_is_down(sandbox: Sandbox) -> None:
    app = Flask(__name__)
    app.config.update(
        POSTSTACK_API_KEY=KEY,
        POSTSTACK_BASE_URL=f"http://127.0.0.1:{free_port()}",
        POSTSTACK_REDIS_URL=f"redis://:s3cret@127.0.0.1:{free_port()}/0",
    )
    PostStack(app)
    result = run(app, "check")
    assert result.exit_code == 1
    assert "unreachable (ConnectError)" in result.output
    assert "FAIL  Redis at redis://:***@127.0.0.1" in result.output
    assert (
        "unreachable (ConnectionError): set POSTSTACK_REDIS_URL to your Redis,"
        " or run `flask poststack dev` for a local one"
    ) in result.output
    assert "s3cret" not in result.output


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:{port}/0?password=s3cret",
        "redis://127.0.0.1:{port}/0?username=u&password=s3cret",
        "unix:///tmp/poststack-{port}.sock?password=s3cret",
    ],
)
def test_a_password_in_the_query_is_hidden_too(make_app: AppFactory, url: str) -> None:
    from flask_poststack import enqueue_email
    from flask_poststack import QueueUnavailableError

    app = make_app(
        POSTSTACK_API_KEY=KEY, POSTSTACK_REDIS_URL=url.format(port=free_port())
    )
    printed = run(app, "worker", "--print").output
    assert "password=***" in printed and "s3cret" not in printed
    assert "s3cret" not in run(app, "check").output
    with app.app_context(), pytest.raises(QueueUnavailableError) as caught:
        enqueue_email(to="ada@example.com", subject="Hi", text="Hi")
    assert "s3cret" not in str(caught.value)


def test_check_reports_a_refused_key(app: Flask, sandbox: Sandbox) -> None:
    sandbox.faults.add("error", status=401, code="unauthorized", path="/emails")
    result = run(app, "check")
    assert result.exit_code == 1
    assert "refused the API key" in result.output


def test_preview_renders_locally_and_asks_the_api(app: Flask, tmp_path: Path) -> None:
    (tmp_path / "emails").mkdir()
    (tmp_path / "emails/welcome.html").write_text("<p>Hi {{ name }}</p>")
    (tmp_path / "emails/welcome.subject.txt").write_text("FREE MONEY, {{ name }}!!")
    local = run(app, "preview", "emails/welcome", "--context", '{"name": "<Ada>"}')
    assert local.exit_code == 0, local.output
    assert "<p>Hi &lt;Ada&gt;</p>" in local.output
    assert "FREE MONEY, <Ada>!!" in local.output
    remote = run(
        app, "preview", "emails/welcome", "--context", '{"name": "A"}', "--api"
    )
    assert remote.exit_code == 0, remote.output
    assert "spam score: " in remote.output
    assert "FREE_MONEY" in remote.output


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["emails/welcome", "--context", "{oops"], "'--context'"),
        (["emails/welcome", "--context", "[1]"], "'--context'"),
        (["emails/missing"], "'TEMPLATE'"),
    ],
)
def test_preview_bad_input_is_a_usage_error(
    app: Flask, args: list[str], hint: str
) -> None:
    result = run(app, "preview", *args)
    assert result.exit_code == 2
    assert hint in result.output


def test_requeue_failed_puts_jobs_back(
    app: Flask, sandbox: Sandbox, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:

    monkeypatch.setenv("POSTSTACK_API_KEY", KEY)
    monkeypatch.setenv("POSTSTACK_BASE_URL", sandbox.base_url)
    with app.app_context():
        for to in ("a@example.com", "b@example.com"):
            enqueue_email(to=to, subject="s", text="t")
    conn = redis.Redis.from_url(redis_url)
    queue = Queue("poststack", connection=conn, serializer=JSONSerializer)
    sandbox.faults.add("quota", path="/emails", times=2)
    SimpleWorker([queue], connection=conn, serializer=JSONSerializer).work(burst=True)
    assert sandbox.emails == []
    result = run(app, "requeue-failed", "--code", "monthly_limit_exceeded")
    assert result.exit_code == 0, result.output
    assert "2 job(s) requeued" in result.output
    SimpleWorker([queue], connection=conn, serializer=JSONSerializer).work(burst=True)
    reset_worker()
    assert sorted(e.to[0] for e in sandbox.emails) == ["a@example.com", "b@example.com"]


def test_flask_poststack_worker_prints_the_documented_command(
    make_app: AppFactory,
) -> None:
    app = make_app(
        POSTSTACK_API_KEY=KEY,
        POSTSTACK_REDIS_URL="redis://:hunter2@127.0.0.1:6379/0",
        POSTSTACK_BASE_URL="http://127.0.0.1:8025",
        POSTSTACK_RETRY_INTERVALS="1,2",
    )
    result = app.test_cli_runner().invoke(args=["poststack", "worker", "--print"])
    assert result.exit_code == 0, result.output
    line, *notes = result.output.splitlines()
    words = line.split()
    assert words[0] == "RQ_REDIS_URL='redis://:***@127.0.0.1:6379/0'"
    # What the real run passes from app.config, the key as a placeholder.
    assert words[1:4] == ["POSTSTACK_API_KEY=...",
                          "POSTSTACK_BASE_URL=http://127.0.0.1:8025",
                          "POSTSTACK_RETRY_INTERVALS=1,2"]  # fmt: skip
    assert any("RQ_REDIS_URL is masked" in note for note in notes), notes
    assert all(note.startswith("# ") for note in notes)
    words = words[words.index("worker") - 2 :]
    assert words[2:] == [
        "worker",
        "--serializer",
        "rq.serializers.JSONSerializer",
        "--worker-class",
        "flask_poststack.worker.PostStackWorker",
        "--with-scheduler",
        "--maintenance-interval",
        "30",
        "poststack",
    ]
    assert KEY not in result.output
    assert "hunter2" not in result.output
    argv = ["poststack", "worker", "--loglevel", "DEBUG", "--print"]
    result = app.test_cli_runner().invoke(args=argv)
    assert "rq worker --logging_level DEBUG --serializer" in result.output


def test_flask_poststack_worker_passes_the_concurrency(make_app: AppFactory) -> None:
    app = make_app(POSTSTACK_API_KEY=KEY, POSTSTACK_REDIS_URL="redis://127.0.0.1:9/0")
    args = ["poststack", "worker", "--concurrency", "32", "--print"]
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code == 0, result.output
    assert result.output.split()[1] == "POSTSTACK_WORKER_CONCURRENCY=32"
    bad = app.test_cli_runner().invoke(
        args=["poststack", "worker", "--concurrency", "0"]
    )
    assert bad.exit_code == 2 and "--concurrency" in bad.output


def test_every_command_runs_without_a_key(
    make_app: AppFactory, sandbox: Sandbox
) -> None:
    app = make_app(TESTING=False, POSTSTACK_BASE_URL=sandbox.base_url)
    for args in (["--help"], ["sandbox", "--help"], ["worker", "--print"]):
        result = run(app, *args)
        assert result.exit_code == 0, (args, result.output)
    result = run(app, "check")
    assert "POSTSTACK_API_KEY is not set: set it in the app's config or export" in (
        result.output
    )
    assert "not checked without a key" in result.output
    assert sandbox.stats["requests"] == 0  # no placeholder key went out


def test_a_testing_apps_worker_gets_no_outside_setting_from_the_shell(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTSTACK_API_KEY", "sk_live_fromtheshell123")
    monkeypatch.setenv("POSTSTACK_SUPPRESS_SEND", "0")
    monkeypatch.setenv("POSTSTACK_REDIS_URL", "redis://real-redis:6379/0")
    monkeypatch.setenv("POSTSTACK_QUEUE", "from-shell")
    env = worker_environ(make_app().config)
    assert "POSTSTACK_API_KEY" not in env
    assert "POSTSTACK_SUPPRESS_SEND" not in env
    assert "POSTSTACK_REDIS_URL" not in env  # never the shell's, nor localhost
    assert env["POSTSTACK_QUEUE"] == "from-shell"  # harmless keys still pass
    production = worker_environ(make_app(TESTING=False).config)
    assert production["POSTSTACK_API_KEY"] == "sk_live_fromtheshell123"


def test_check_names_a_missing_scheduler_and_the_fix(
    app: Flask, conn: redis.Redis
) -> None:
    with app.app_context():
        enqueue_email(to="ada@example.com", subject="s", text="t", delay=3600)
    out = run(app, "check").output
    assert "1 scheduled or retrying" in out
    assert (
        "warn  scheduler: none holds the lock for 'poststack', so 1 job(s)"
        " scheduled or retrying never run. Run a worker with --with-scheduler"
    ) in out
    # What a running scheduler (rq worker --with-scheduler) holds:
    conn.set(RQScheduler.get_locking_key("poststack"), "scheduler-1", ex=60)
    out = run(app, "check").output
    assert "  ok  scheduler: running for 'poststack'" in out
    assert "--with-scheduler" not in out


def test_check_says_nothing_of_a_scheduler_with_nothing_to_schedule(
    app: Flask,
) -> None:
    out = run(app, "check").output
    assert "scheduler" not in out  # no worker, no scheduled job: nothing to say


def test_send_test_with_the_api_down_prints_only_its_own_error(
    make_app: AppFactory,
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    app = make_app(
        TESTING=False,
        POSTSTACK_API_KEY=KEY,
        POSTSTACK_BASE_URL=url,
        POSTSTACK_MAX_RETRIES=0,
        POSTSTACK_SUPPRESS_SEND=False,
    )
    result = run(app, "send-test", "--to", "ada@example.com")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output  # no "PostStack send failed" line
    assert lines[0].startswith(f"Error: could not reach {url}: ")


def test_send_test_still_logs_failures_outside_the_command(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    from flask_poststack import send_email

    app = make_app(
        TESTING=False,
        POSTSTACK_API_KEY=KEY,
        POSTSTACK_BASE_URL=f"http://127.0.0.1:{free_port()}",
        POSTSTACK_MAX_RETRIES=0,
        POSTSTACK_SUPPRESS_SEND=False,
    )
    run(app, "send-test", "--to", "ada@example.com")
    with app.app_context(), pytest.raises(httpx.TransportError):
        send_email(to="ada@example.com", subject="s", text="t")
    assert "PostStack send failed" in caplog.text  # the filter was removed


def test_send_test_without_a_sender_names_the_option_and_the_key(
    make_app: AppFactory, sandbox: Sandbox
) -> None:
    app = make_app(
        TESTING=False,
        POSTSTACK_API_KEY=KEY,
        POSTSTACK_BASE_URL=sandbox.base_url,
        POSTSTACK_DEFAULT_FROM=None,
    )
    result = run(app, "send-test", "--to", "ada@example.com")
    assert result.exit_code == 2
    assert "pass --from or set POSTSTACK_DEFAULT_FROM" in result.output
    assert "from_=" not in result.output
    assert sandbox.stats["requests"] == 0


def test_preview_warns_about_variables_not_in_the_context(
    app: Flask, tmp_path: Path
) -> None:
    (tmp_path / "emails").mkdir()
    (tmp_path / "emails/layout.html").write_text(
        "{{ footer }}{% block b %}{% endblock %}"
    )
    (tmp_path / "emails/welcome.html").write_text(
        '{% extends "emails/layout.html" %}{% block b %}<p>Hi {{ name }},'
        " {{ plan }} {{ config.DEBUG }} {{ url_for }}</p>{% endblock %}"
    )
    (tmp_path / "emails/welcome.txt").write_text("Hi {{ name }}")
    result = run(app, "preview", "emails/welcome", "--context", '{"name": "Ada"}')
    assert result.exit_code == 0, result.output
    assert (
        "warning: emails/welcome.html uses footer, plan, not in --context:"
        " rendered as blank."
    ) in result.output
    assert "welcome.txt uses" not in result.output
    full = run(
        app, "preview", "emails/welcome", "--context",
        '{"name": "Ada", "plan": "Pro", "footer": "-"}',
    )  # fmt: skip
    assert "warning" not in full.output


def test_sandbox_command_takes_the_same_options_as_python_m(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flask_poststack.sandbox.__main__ as sandbox_main

    seen: list[list[str]] = []

    def main(argv: list[str]) -> int:
        seen.append(argv)
        return 0

    monkeypatch.setattr(sandbox_main, "main", main)
    args = ["--port", "0", "--lifecycle-delay", "1.5", "--seed", "7", "--quiet"]
    result = run(app, "sandbox", *args)
    assert result.exit_code == 0, result.output
    (argv,) = seen
    assert argv[argv.index("--lifecycle-delay") + 1] == "1.5"
    assert argv[argv.index("--seed") + 1] == "7"
    assert "--quiet" in argv


def test_dev_has_help_with_its_ports(app: Flask) -> None:
    result = run(app, "dev", "--help")
    assert result.exit_code == 0
    assert "--sandbox-port" in result.output and "8025" in result.output
    assert "--redis-port" in result.output and "6380" in result.output


def test_dev_warns_about_settings_the_apps_config_pins(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask_poststack import get_state
    from flask_poststack._dev import _shadowed

    exports = {
        "POSTSTACK_BASE_URL": "http://127.0.0.1:8025",
        "POSTSTACK_REDIS_URL": "redis://127.0.0.1:6380/0",
        "POSTSTACK_API_KEY": "sk_test_dev_local",
    }
    pinned = make_app(
        TESTING=False,
        POSTSTACK_BASE_URL="https://api.poststack.dev/v2",
        POSTSTACK_API_KEY="sk_live_pinned0123",
    )
    assert _shadowed(get_state(pinned).settings, exports) == [
        "POSTSTACK_BASE_URL",
        "POSTSTACK_API_KEY",
    ]
    for key, value in exports.items():
        monkeypatch.setenv(key, value)
    from_env = make_app(TESTING=False)
    assert _shadowed(get_state(from_env).settings, exports) == []


def test_dev_takes_test_keys_only(app: Flask) -> None:
    result = run(app, "dev", "--api-key", "sk_live_nope0123")
    assert result.exit_code == 2
    assert "'--api-key'" in result.output


def test_preview_api_without_a_key_refuses_and_sends_nothing(
    make_app: AppFactory, sandbox: Sandbox, tmp_path: Path
) -> None:
    (tmp_path / "emails").mkdir()
    (tmp_path / "emails/welcome.html").write_text("<p>Hi</p>")
    app = make_app(template_folder=str(tmp_path), TESTING=False,
                   POSTSTACK_BASE_URL=sandbox.base_url)  # fmt: skip
    result = run(app, "preview", "emails/welcome", "--api")
    assert result.exit_code == 1, result.output
    assert result.output.strip() == "Error: " + NO_KEY_FOR_API
    assert "Traceback" not in result.output
    assert sandbox.stats["requests"] == 0  # no placeholder key went out
    assert run(app, "preview", "emails/welcome").exit_code == 0


def test_requeue_failed_with_redis_down_says_so_in_one_line(
    make_app: AppFactory,
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    app = make_app(TESTING=False, POSTSTACK_API_KEY=KEY, POSTSTACK_REDIS_URL=url)
    result = run(app, "requeue-failed")
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    (line,) = result.output.strip().splitlines()
    assert line == (
        f"Error: cannot reach Redis at {url} (ConnectionError): is it running?"
        " The app's POSTSTACK_REDIS_URL says where it is."
    )


def _time_wait_on_a_port() -> int:
    """A port whose only socket is the server side of a closed connection,
    in TIME-WAIT: the server closed first, as a SIGKILLed Redis does."""
    with socket.socket() as listener:
        # As redis-server and the sandbox listen (and the TIME-WAIT socket
        # inherits the flag).
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port: int = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            served, _ = listener.accept()
            served.close()
            assert client.recv(1) == b""  # the server's FIN arrived
    tcp = Path("/proc/net/tcp")
    if tcp.exists():  # Linux: see the TIME-WAIT (state 06) itself

        def time_wait() -> bool:
            rows = [line.split() for line in tcp.read_text().splitlines()[1:]]
            return any(
                row[1].endswith(f":{port:04X}") and row[3] == "06" for row in rows
            )

        wait_until(time_wait, 10, f"a TIME-WAIT socket on port {port}")
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))  # what the check did before
    return port


def test_a_port_left_in_time_wait_is_free_for_dev() -> None:
    from flask_poststack._ports import port_taken

    port = _time_wait_on_a_port()
    assert port_taken(port) is None
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        assert port_taken(listening.getsockname()[1]) == "Address already in use"


def test_dev_checks_every_port_before_starting_anything(app: Flask) -> None:
    sandbox_port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(
            app, "dev", "--sandbox-port", str(sandbox_port), "--redis-port", str(port)
        )
    assert result.exit_code == 1, result.output
    # Nothing started, so nothing is stopped: the error is the only line.
    assert result.output.strip() == (
        f"Error: Redis cannot listen on 127.0.0.1:{port} (Address already in use);"
        " pass another --redis-port."
    )


def test_check_names_the_fix_for_a_missing_sender(make_app: AppFactory) -> None:
    app = make_app(TESTING=False, POSTSTACK_DEFAULT_FROM=None)
    result = run(app, "check")
    assert (
        "warn  default sender: POSTSTACK_DEFAULT_FROM is not set: set it in the"
        " app's config, or pass from_= to each send\n"
    ) in result.output


def test_check_names_the_latest_failures_cause_and_the_fix(
    app: Flask, sandbox: Sandbox, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTSTACK_API_KEY", KEY)
    monkeypatch.setenv("POSTSTACK_BASE_URL", sandbox.base_url)
    with app.app_context():
        enqueue_email(to="ada@example.com", subject="s", text="t")
    conn = redis.Redis.from_url(redis_url)
    queue = Queue("poststack", connection=conn, serializer=JSONSerializer)
    sandbox.faults.add("quota", path="/emails", times=1)
    SimpleWorker([queue], connection=conn, serializer=JSONSerializer).work(burst=True)
    out = run(app, "check").output
    (line,) = [line for line in out.splitlines() if "failed jobs" in line]
    assert line.startswith("warn  failed jobs: 1; the latest: monthly_limit_exceeded: ")
    assert line.endswith(
        ". Once that is fixed, send them again: flask poststack requeue-failed"
    )


def test_check_reads_a_failure_our_code_never_saw_and_masks_secrets(
    app: Flask, redis_url: str
) -> None:
    conn = redis.Redis.from_url(redis_url)
    queue = Queue("poststack", connection=conn, serializer=JSONSerializer)
    # A job that fails in rq, before any of our code: only exc_info says why.
    queue.enqueue("builtins.int", "sk_live_s3cret0123")
    SimpleWorker([queue], connection=conn, serializer=JSONSerializer).work(burst=True)
    out = run(app, "check").output
    (line,) = [line for line in out.splitlines() if "failed jobs" in line]
    assert (
        "failed jobs: 1; the latest: ValueError: invalid literal for"
        " int() with base 10: 'sk_live_***'. Once that is fixed"
    ) in line
    assert "s3cret" not in out


def test_worker_with_redis_down_says_so_in_one_line_and_starts_nothing(
    make_app: AppFactory, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    execs: list[list[str]] = []
    monkeypatch.setattr("os.execvpe", lambda file, argv, env: execs.append(argv))
    down = f"redis://:s3cret@127.0.0.1:{free_port()}/0"  # nothing listens there
    app = make_app(TESTING=False, POSTSTACK_API_KEY=KEY, POSTSTACK_REDIS_URL=down)
    result = run(app, "worker")
    assert result.exit_code == 1, result.output
    (line,) = result.output.strip().splitlines()
    assert line == (
        f"Error: cannot reach Redis at {down.replace('s3cret', '***')}"
        " (ConnectionError): set POSTSTACK_REDIS_URL to your Redis, or run"
        " `flask poststack dev` for a local one."
    )
    assert execs == []
    up = make_app(TESTING=False, POSTSTACK_API_KEY=KEY, POSTSTACK_REDIS_URL=redis_url)
    assert run(up, "worker").exit_code == 0
    assert execs and execs[0][1] == "worker"


@pytest.mark.parametrize(
    "option", ["--batch=0", "--batch=-5", "--grace=-1", "--lease=0", "--interval=0"]
)
def test_relay_refuses_an_option_out_of_range(
    make_app: AppFactory, option: str
) -> None:
    app = make_app(POSTSTACK_OUTBOX="sqlalchemy")
    result = app.test_cli_runner().invoke(args=["poststack", "relay", "--once", option])
    assert result.exit_code == 2, result.output
    assert option.split("=")[0] in result.output
