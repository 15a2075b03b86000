"""The ``flask poststack`` command group."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import typing as t

import click
import httpx
from flask import current_app
from flask.cli import AppGroup
from markupsafe import escape
from poststack import PostStackError

from ._celery_cli import celery_check
from ._celery_cli import run_celery_worker
from ._cli_checks import check_api
from ._cli_checks import check_outbox_rows
from ._cli_checks import check_queue
from ._cli_checks import check_render_options
from ._cli_checks import quick_client
from ._cli_checks import redis_unreachable
from ._dev import dev
from ._requeue import requeue
from ._state import get_state
from ._templates import undefined_variables
from ._workercmd import printed_command
from ._workercmd import worker_command
from ._workercmd import worker_environ
from .errors import ConfigurationError
from .errors import InvalidEmailError
from .errors import redact_url
from .outbox.relay_cli import relay_command
from .sending import send_email

__all__ = ["poststack_cli", "worker_command", "worker_environ"]

poststack_cli = AppGroup("poststack", help="Flask-PostStack commands.")
poststack_cli.add_command(relay_command)


@poststack_cli.command("worker")
@click.option("--queue", "-q", "queues", multiple=True, help="Queue(s) to listen on.")
@click.option("--burst", is_flag=True, help="Quit once the queues are empty.")
@click.option(
    "--maintenance-interval",
    type=int,
    default=None,
    help="RQ only: seconds between checks for jobs abandoned by a dead worker"
    " (default 30).",
)
@click.option("--loglevel", default=None, help="Passed on: rq's or celery's log level.")
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Emails sent at once (POSTSTACK_WORKER_CONCURRENCY).",
)
@click.option("--print", "print_only", is_flag=True, help="Print the command only.")
def worker(
    queues: tuple[str, ...],
    burst: bool,
    maintenance_interval: int | None,
    loglevel: str | None,
    concurrency: int | None,
    print_only: bool,
) -> None:
    """Run a worker for Flask-PostStack jobs, from the app's config.

    Runs the `rq worker` command the docs give (with
    POSTSTACK_QUEUE_BACKEND = 'celery': the `celery worker` command), with
    the app's POSTSTACK_* settings passed in its environment.
    """
    state = get_state()
    if state.settings.queue_backend == "celery":
        if maintenance_interval is not None:
            raise click.ClickException(
                "--maintenance-interval is an RQ option; a Celery worker's"
                " ledger sweep brings abandoned tasks back."
            )
        env = worker_environ(current_app.config)
        return run_celery_worker(
            state,
            env,
            queues=queues,
            burst=burst,
            concurrency=concurrency,
            print_only=print_only,
            loglevel=loglevel,
        )
    try:
        redis_url = state.redis_url()
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None
    if not print_only and (unreachable := redis_unreachable(redis_url)):
        raise click.ClickException(unreachable)  # not rq's raw "Error 111"
    settings = state.settings
    argv = worker_command(
        settings,
        queues=queues,
        burst=burst,
        maintenance_interval=maintenance_interval or 30,
        url_in_argv=False,
    )
    if loglevel:
        argv[2:2] = ["--logging_level", loglevel]
    # The Redis URL goes through the environment, so no password shows in
    # this output or in the process list.
    env = worker_environ(current_app.config)
    extra = (
        {}
        if concurrency is None
        else {"POSTSTACK_WORKER_CONCURRENCY": str(concurrency)}
    )
    click.echo(printed_command(env, argv, ("RQ_REDIS_URL", redis_url), extra))
    if print_only:
        return
    sys.stdout.flush()
    env.update(extra, RQ_REDIS_URL=redis_url)
    os.execvpe(argv[0], argv, env)


def _api_error(exc: PostStackError) -> click.ClickException:
    return click.ClickException(
        f"the API refused it: {exc.status_code} {exc.code or ''} {exc.error}"
        f" (request id {exc.request_id})"
    )


class _NotTheFailureLine(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # pipeline.log_failure puts its facts in extra={"poststack": ...}.
        return not hasattr(record, "poststack")


@contextlib.contextmanager
def _own_error_only() -> t.Iterator[None]:
    """Hold back the pipeline's one-line failure log: the command prints the
    same facts as its own error, and a raw log line before it (from Python's
    last-resort handler when the app configured no logging) only confuses."""
    log = logging.getLogger("flask_poststack")
    quiet = _NotTheFailureLine()
    log.addFilter(quiet)
    try:
        yield
    finally:
        log.removeFilter(quiet)


#: What a missing sender says on the command line (the Python API's message
#: names ``from_=``).
NO_SENDER = "no sender: pass --from or set POSTSTACK_DEFAULT_FROM in the config."
NO_KEY_FOR_API = (
    "--api asks the API, which needs a key: POSTSTACK_API_KEY is not set. Set"
    " it in the app's config or export it (sk_test_... for the sandbox), or"
    " leave out --api to render locally only."
)


@poststack_cli.command("send-test")
@click.option("--to", required=True, help="Recipient address.")
@click.option("--from", "from_", help="Sender. [default: POSTSTACK_DEFAULT_FROM]")
@click.option("--subject", default="Flask-PostStack test email", show_default=True)
def send_test(to: str, from_: str | None, subject: str) -> None:
    """Send a test email with the app's configuration; print its id and status."""
    app = current_app
    if from_ is None and not get_state().settings.default_from:
        raise click.BadParameter(NO_SENDER, param_hint="'--from'")
    try:
        with _own_error_only():
            result = send_email(
                to=to,
                from_=from_,
                subject=subject,
                text="A test email sent by 'flask poststack send-test'"
                f" from {app.name}.",
                html="<p>A test email sent by <code>flask poststack send-test</code>"
                f" from {escape(app.name)}.</p>",
            )
    except InvalidEmailError as exc:
        hint = "--from" if exc.argument == "from_" else f"--{exc.argument}"
        raise click.BadParameter(exc.message, param_hint=repr(hint)) from None
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None
    except PostStackError as exc:
        raise _api_error(exc) from None
    except httpx.TransportError as exc:
        url = get_state().settings.base_url
        raise click.ClickException(f"could not reach {url}: {exc}") from None
    click.echo(f"id:     {result.id}")
    if result.suppressed:
        click.echo("status: suppressed (POSTSTACK_SUPPRESS_SEND is on: nothing sent)")
        return
    client = quick_client()
    try:
        answer = client.emails.get(result.id)
    except (PostStackError, httpx.TransportError, ValueError):
        answer = {}
    finally:
        client.close()
    # {"email": {...}} as the SDKs read it; the API's docs show the bare object.
    email = answer.get("email", answer) if isinstance(answer, dict) else {}
    if not isinstance(email, dict):
        email = {}
    click.echo(f"status: {email.get('status', 'accepted')}")
    click.echo(f"mode:   {'test' if result.test_mode else 'live'}")


@poststack_cli.command("check")
def check() -> None:
    """Check the configuration: key, API, sender, Redis, queue and workers.

    Exits with status 1 if anything needed to send is broken.
    """
    settings = get_state().settings
    failures = 0

    def report(level: str, what: str, detail: str) -> None:
        nonlocal failures
        failures += level == "FAIL"
        colour = {"ok": "green", "warn": "yellow", "FAIL": "red"}[level]
        click.echo(f"{click.style(f'{level:>4}', fg=colour)}  {what}: {detail}")

    if settings.api_key:
        report("ok", "API key", f"set, {settings.mode} mode")
    else:
        report(
            "FAIL",
            "API key",
            "POSTSTACK_API_KEY is not set: set it in the app's config or export"
            " it (the worker reads it from its environment); sk_test_... for"
            " tests",
        )
    if get_state().suppressed:
        report("warn", "sending", "suppressed: send_email() captures, sends nothing")
    if settings.api_key:
        report(*check_api(settings))
    else:
        report("warn", f"API at {settings.base_url}", "not checked without a key")
    if settings.default_from:
        report("ok", "default sender", settings.default_from)
    else:
        report(
            "warn",
            "default sender",
            "POSTSTACK_DEFAULT_FROM is not set: set it in the app's config, or"
            " pass from_= to each send",
        )
    celery = settings.queue_backend == "celery"
    for row in celery_check(get_state()) if celery else check_queue(settings):
        report(*row)
    for row in [*check_render_options(settings), *check_outbox_rows(settings)]:
        report(*row)
    if failures:
        raise click.exceptions.Exit(1)


@poststack_cli.command("preview")
@click.argument("template")
@click.option("--context", "context_json", default="{}", help="Template context, JSON.")
@click.option(
    "--api", is_flag=True, help="Also ask the API for its preview and spam score."
)
@click.option("--to", default="preview@example.com", show_default=True,
              help="Recipient for the API preview.")  # fmt: skip
@click.option("--locale", default=None, help="Render in this locale (Flask-Babel).")
def preview(
    template: str, context_json: str, api: bool, to: str, locale: str | None
) -> None:
    """Render an email template (TEMPLATE without suffix, e.g. emails/welcome)
    as a send would: its layout, POSTSTACK_TEXT_FROM_HTML and
    POSTSTACK_INLINE_CSS included."""
    from ._templates import render_email

    try:
        context = json.loads(context_json)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="'--context'") from None
    if not isinstance(context, dict):
        raise click.BadParameter("must be a JSON object", param_hint="'--context'")
    settings = get_state().settings
    if api and not settings.api_key:
        raise click.ClickException(NO_KEY_FOR_API)
    try:
        rendered = render_email(
            template,
            context,
            locale,
            text_from_html=settings.text_from_html,
            inline_css=settings.inline_css,
        )
    except InvalidEmailError as exc:
        hint = "'--locale'" if exc.argument == "locale" else "'TEMPLATE'"
        raise click.BadParameter(exc.message, param_hint=hint) from None
    for name, missing in undefined_variables(template, context):
        click.echo(
            click.style("warning:", fg="yellow")
            + f" {name} uses {', '.join(missing)}, not in --context:"
            " rendered as blank.",
            err=True,
        )
    for name, value in rendered._asdict().items():
        click.echo(click.style(f"--- {name} ---", bold=True))
        click.echo(value if value is not None else "(no template)")
    if not api:
        return
    draft = {
        "from": settings.default_from or "preview@example.com",
        "to": [to],
        **{k: v for k, v in rendered._asdict().items() if v is not None},
    }
    client = quick_client()
    try:
        answer = client.emails.preview(draft)
    except PostStackError as exc:
        raise _api_error(exc) from None
    except httpx.TransportError as exc:
        raise click.ClickException(
            f"could not reach {settings.base_url}: {exc}"
        ) from None
    finally:
        client.close()
    spam = answer.get("spam") or {}
    click.echo(click.style("--- API preview ---", bold=True))
    click.echo(f"spam score: {spam.get('score')} ({spam.get('action')})")
    for symbol in spam.get("symbols") or []:
        click.echo(f"  {symbol.get('name')}: {symbol.get('score')}")
    size = answer.get("size") or {}
    click.echo(
        f"size: html {size.get('html_bytes')} B, text {size.get('text_bytes')} B"
    )
    for warning in answer.get("warnings") or []:
        click.echo(f"warning: {warning.get('message')}")


@poststack_cli.command("requeue-failed")
@click.option("--queue", help="Queue name. [default: POSTSTACK_QUEUE]")
@click.option("--code", help="Only jobs that failed with this API error code.")
def requeue_failed(queue: str | None, code: str | None) -> None:
    """Put failed jobs back on the queue (after fixing what made them fail).

    Each job keeps its idempotency key, so an email the API had accepted
    before the failure is not sent twice. Exits with status 1 if Redis
    cannot be reached.
    """
    import redis

    state = get_state()
    try:
        count, name = requeue(state, queue or state.settings.queue, code)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None
    except redis.RedisError as exc:
        url = redact_url(state.settings.redis_url)
        raise click.ClickException(
            f"cannot reach Redis at {url} ({type(exc).__name__}): is it running?"
            " The app's POSTSTACK_REDIS_URL says where it is."
        ) from None
    if code is not None and not count:
        click.echo(f"no failed task matched --code {code}")
    click.echo(f"{count} job(s) requeued on {name}.")


@poststack_cli.command("sandbox", with_appcontext=False)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8025, show_default=True, help="0 picks a free port.")
@click.option("--latency", default=0.0, show_default=True, help="Milliseconds.")
@click.option(
    "--lifecycle-delay",
    default=0.2,
    show_default=True,
    help="Seconds between queued, sent and delivered.",
)
@click.option("--seed", type=int, default=None, help="Seed for fault randomness.")
@click.option("--quiet", is_flag=True, help="Do not log each request.")
def sandbox(
    host: str,
    port: int,
    latency: float,
    lifecycle_delay: float,
    seed: int | None,
    quiet: bool,
) -> None:
    """Run the local PostStack sandbox until Ctrl-C."""
    from .sandbox.__main__ import main

    argv = ["--host", host, "--port", str(port), "--latency", str(latency)]
    argv += ["--lifecycle-delay", str(lifecycle_delay)]
    if seed is not None:
        argv += ["--seed", str(seed)]
    if quiet:
        argv.append("--quiet")
    raise click.exceptions.Exit(main(argv))


poststack_cli.add_command(dev)
