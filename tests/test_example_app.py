from __future__ import annotations

from pathlib import Path

from example_app import create_app


def test_example_app_starts(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'example.db'}"
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": uri})
    response = app.test_client().get("/")
    assert response.status_code == 200
    assert b"Flask-PostStack" in response.data


def test_the_demo_takes_its_fixed_ports_when_free() -> None:
    import contextlib
    import socket

    from example_app.demo import listen
    from example_app.demo import start_sandbox
    from flask_poststack.redis_server import free_port

    port = free_port()
    sandbox = start_sandbox(port)
    try:
        assert sandbox.port == port
        # Taken now: the second one falls back to a free port.
        other = start_sandbox(port)
        assert other.port not in (0, port)
        other.stop()
    finally:
        sandbox.stop()
    with socket.socket() as busy, contextlib.ExitStack() as stack:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        assert listen(stack, taken).server_port != taken
