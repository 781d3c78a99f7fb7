"""The service's background index stays behind live requests: it encodes only when no search or encode is being
served, and the service counts exactly those requests."""

from __future__ import annotations

import pytest

from clip_vectorize.gallery import background
from clip_vectorize.gallery.background import PoliteEncoder
from clip_vectorize.web.state import service_state
from support.app import make_app
from support.fake_encoder import FakeEncoder


class RecordingEncoder:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def encode_images(self, images):
        self.log.append("encode")
        return ["vector"] * len(images)


def busy_for(calls: int, log: list[str]):
    """A live-request signal that is busy for the first `calls` questions, then idle; each answer is logged."""
    answers = iter([True] * calls)

    def busy() -> bool:
        answer = next(answers, False)
        log.append("busy" if answer else "idle")
        return answer

    return busy


def test_the_background_index_encodes_only_once_live_requests_are_done():
    log: list[str] = []
    polite = PoliteEncoder(RecordingEncoder(log), busy_for(3, log))
    assert polite.encode_images([b"jpeg"]) == ["vector"]
    assert log == ["busy", "busy", "busy", "idle", "encode"]


def test_under_a_steady_stream_of_requests_the_index_still_moves(monkeypatch):
    monkeypatch.setattr(background, "MAX_YIELD_S", 0.05)
    log: list[str] = []
    polite = PoliteEncoder(RecordingEncoder(log), lambda: True)
    assert polite.encode_images([b"jpeg"]) == ["vector"]
    assert log == ["encode"]


class WatchingEncoder(FakeEncoder):
    """Notes whether the app counted the request it is serving as live."""

    def __init__(self) -> None:
        super().__init__()
        self.app = None
        self.seen: list[bool] = []

    def encode_texts(self, texts, encoder=None):
        self.seen.append(service_state(self.app).live_requests.busy())
        return super().encode_texts(texts, encoder)


@pytest.mark.parametrize("path, body", [("/encode-text", {"text": "car"}), ("/search", {"text": "car"}),
                                        ("/v1/embeddings", {"input": "car", "model": "fake/clip"})])
def test_encode_search_and_openai_requests_count_as_live_while_served(path, body):
    encoder = WatchingEncoder()
    app = encoder.app = make_app(encoder)
    app.test_client().post(path, json=body)
    assert encoder.seen == [True]
    assert not service_state(app).live_requests.busy()


def test_probes_and_failed_requests_leave_the_count_at_zero():
    app = make_app()
    client = app.test_client()
    client.get("/health")
    client.post("/encode-text", json={"text": ""})  # a 400 before any encoding
    client.post("/search", data="not json")  # a 415
    assert not service_state(app).live_requests.busy()
