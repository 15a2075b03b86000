from __future__ import annotations

import poststack
import pytest

from flask_poststack.sandbox import Sandbox


@pytest.fixture
def client(sandbox: Sandbox) -> poststack.PostStack:
    return poststack.PostStack("sk_test_preview123", base_url=sandbox.base_url)


def test_preview_renders_variables_and_scores(client: poststack.PostStack) -> None:
    answer = client.emails.preview(
        {
            "from": "a@acme.test",
            "to": ["b@example.com"],
            "subject": "WINNER WINNER!!",
            "html": "<p>Hi {{ name }}</p>",
            "variables": {"name": "Ada"},
        }
    )
    client.close()
    assert answer["rendered_html"] == "<p>Hi Ada</p>"
    assert answer["size"] == {"html_bytes": 13, "text_bytes": 0}
    names = {s["name"] for s in answer["spam"]["symbols"]}
    assert names == {"SUBJ_ALL_CAPS", "SUBJ_EXCLAIM", "FREE_MONEY", "HTML_ONLY"}
    assert answer["spam"]["action"] == "add header"
    assert answer["warnings"][0]["code"] == "missing_text_part"


def test_spam_preview_of_a_clean_draft(client: poststack.PostStack) -> None:
    draft = {"from": "a@acme.test", "to": ["b@example.com"], "subject": "Receipt",
             "text": "Thanks for your order."}  # fmt: skip
    assert client.emails.spam_preview(draft)["score"] == 0
    client.close()


def test_preview_validates(client: poststack.PostStack) -> None:
    with pytest.raises(poststack.PostStackError) as info:
        client.emails.preview(
            {"from": "a@acme.test", "to": ["1", "2", "3", "4", "5", "6"]}
        )
    client.close()
    assert info.value.status_code == 400
