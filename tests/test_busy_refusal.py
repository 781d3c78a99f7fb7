"""The app's side of quick refusals: a request the gunicorn worker marks as arriving with every thread busy."""

from __future__ import annotations

from clip_vectorize.web.busy_refusal import BUSY_ENVIRON_KEY
from support.app import make_client
from support.assertions import assert_error

BUSY = {BUSY_ENVIRON_KEY: True}


def test_a_request_marked_busy_is_refused_with_503_overloaded_and_retry_after():
    response = make_client().post("/encode-text", json={"text": "red car"}, environ_base=BUSY)
    body = assert_error(response, 503, "every request thread is busy")
    assert body["code"] == "overloaded"
    assert int(response.headers["Retry-After"]) >= 1


def test_a_busy_refusal_is_checked_before_the_api_key_and_keeps_the_openai_shape():
    client = make_client(api_key="secret")
    response = client.post("/v1/embeddings", json={"input": "red car"}, environ_base=BUSY)
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "overloaded"


def test_probes_are_answered_even_when_every_thread_is_busy():
    client = make_client()
    assert client.get("/health", environ_base=BUSY).status_code == 200
    assert client.get("/metrics", environ_base=BUSY).status_code == 200


def test_an_unmarked_request_is_served():
    assert make_client().post("/encode-text", json={"text": "red car"}).status_code == 200
