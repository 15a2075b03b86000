"""The package's shape: its public names, its import graph, what a worker loads."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import flask_poststack

PACKAGE = Path(flask_poststack.__file__).parent


def internal_imports() -> dict[str, set[str]]:
    """Each module of the package (outside the sandbox) and the package
    modules it imports, at the top or inside a function alike."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if "sandbox" in parts:
            continue
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        here = name if is_package else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")
                    base = base[: len(base) - node.level + 1]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                targets = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            found.update(t for t in targets if t.startswith("flask_poststack"))
        graph[name] = found
    # "from . import signals" names a module; "from .x import f" names x.
    return {
        name: {t for t in targets if t in graph and t != name}
        for name, targets in graph.items()
    }


def test_the_import_graph_has_no_cycle() -> None:
    graph = internal_imports()
    # The package's __init__ only re-exports (lazily): leave it out.
    graph = {n: d - {"flask_poststack"} for n, d in graph.items()}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = [*path[path.index(name) :], name]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if name in done:
            return
        for dep in sorted(graph[name]):
            visit(dep, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    assert "flask_poststack.extension" in graph


def test_nothing_imports_the_extension_module() -> None:
    users = {
        name
        for name, deps in internal_imports().items()
        if "flask_poststack.extension" in deps and name != "flask_poststack"
    }
    assert users == set()


def test_the_worker_loads_neither_flask_nor_jinja_nor_email_validator() -> None:
    # httpx (the SDK's HTTP client) imports click by itself when click is
    # installed, so click is compared with what httpx and rq alone load.
    script = (
        "import sys\n"
        "import httpx, rq, poststack\n"
        "before = set(sys.modules)\n"
        "import flask_poststack.tasks, flask_poststack.worker\n"
        "names = {'flask', 'jinja2', 'click', 'email_validator', 'werkzeug'}\n"
        "print(sorted(m for m in set(sys.modules) - before"
        " if m.split('.')[0] in names))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_every_public_name_is_exported_and_documented() -> None:
    for name in flask_poststack.__all__:
        value = getattr(flask_poststack, name)
        assert value.__doc__, name
    api = (PACKAGE.parent / "docs" / "api.md").read_text()
    for name in flask_poststack.__all__:
        assert name in api, f"{name} is not in docs/api.md"


def test_no_module_is_over_400_lines() -> None:
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in PACKAGE.rglob("*.py")
        if "sandbox" not in path.parts
        and (n := len(path.read_text().splitlines())) > 400
    }
    assert long == {}
