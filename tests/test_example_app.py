from __future__ import annotations

from example_app import create_app


def test_example_app_starts() -> None:
    app = create_app({"TESTING": True})
    response = app.test_client().get("/")
    assert response.status_code == 200
    assert b"Flask-PostStack" in response.data
