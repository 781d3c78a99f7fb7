"""Request ids, one access-log line per request without user content, Prometheus metrics, JSON logs."""

import dataclasses
import json
import logging
import re
import threading
import time

import pytest

from clip_encoder import ClipEncoder
from clip_vectorize.errors import DeadlineExceededError
from clip_vectorize.inference.batching import BatchLimits, MicroBatcher
from clip_vectorize.log_format import JsonFormatter
from support.app import make_app

SECRET_QUERY = "my very private search 私密"


@pytest.fixture(scope="module")
def client(tiny_encoder):
    return make_app(tiny_encoder).test_client()


def test_a_callers_request_id_is_echoed_and_a_missing_one_is_made(client):
    assert client.get("/health", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    assert re.fullmatch(r"[0-9a-f]{32}", client.get("/health").headers["X-Request-ID"])


def test_an_unsafe_request_id_is_replaced(client):
    echoed = client.get("/health", headers={"X-Request-ID": "bad id <script>"}).headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", echoed)


def test_each_request_logs_one_line_with_id_status_and_latency_but_not_the_text(client, caplog):
    with caplog.at_level(logging.INFO):
        client.post("/encode-text", json={"text": SECRET_QUERY}, headers={"X-Request-ID": "req-42"})
    lines = [record for record in caplog.records if record.name == "clip_vectorize.access"]
    assert len(lines) == 1
    assert re.fullmatch(r"req-42 POST /encode-text 200 [0-9.]+ms", lines[0].getMessage())
    assert SECRET_QUERY not in caplog.text


def sample(client, name: str) -> float:
    """One sample's value from /metrics, given its name and labels as the exposition writes them; 0 when absent."""
    for line in client.get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith(f"{name} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_errors_are_counted_and_logged_too(client, caplog):
    requests_400 = 'clip_requests_total{endpoint="/encode-text",status="400"}'
    before = sample(client, requests_400)
    with caplog.at_level(logging.INFO, logger="clip_vectorize.access"):
        client.post("/encode-text", json={"text": ""})
    assert " 400 " in caplog.records[-1].getMessage()
    assert sample(client, requests_400) == before + 1


def test_metrics_cover_requests_latency_batches_queue_cache_load_time_and_memory(client):
    passes = sample(client, 'clip_batch_size_count{encoder="clip",tower="text"}')
    client.post("/encode-text", json={"text": "metrics probe car"})
    client.post("/encode-text", json={"text": "metrics probe car"})  # a cache hit
    client.post("/encode-text", json={})
    text = client.get("/metrics").get_data(as_text=True)
    for expected in (
        'clip_requests_total{endpoint="/encode-text",status="200"}',
        'clip_requests_total{endpoint="/encode-text",status="400"}',
        'clip_request_duration_seconds_bucket{endpoint="/encode-text",le="0.1"}',
        'clip_batch_size_bucket{encoder="clip",le="1.0",tower="text"}',
        'clip_queue_depth{encoder="clip",tower="image"} 0.0',
        'clip_text_cache_lookups_total{encoder="clip",result="hit"}',
        "clip_model_ready 1.0",
        "clip_model_load_seconds",
        "process_resident_memory_bytes",
    ):
        assert expected in text, expected
    # one pass for the two identical queries: the second was a cache hit
    assert sample(client, 'clip_batch_size_count{encoder="clip",tower="text"}') == passes + 1
    assert sample(client, 'clip_text_cache_lookups_total{encoder="clip",result="hit"}') >= 1


def test_the_json_log_format_writes_one_object_per_line_with_request_fields():
    record = logging.LogRecord("clip_vectorize.access", logging.INFO, __file__, 1, "%s done", ("req-1",), None)
    record.request_id, record.status, record.duration_ms = "req-1", 200, 3.5
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "req-1 done" and entry["level"] == "INFO"
    assert entry["request_id"] == "req-1" and entry["status"] == 200 and entry["duration_ms"] == 3.5


def test_a_request_that_waits_past_the_deadline_gets_a_503(tiny_settings, monkeypatch):
    encoder = ClipEncoder.load(tiny_settings(request_timeout_s=1, text_cache_size=0))
    real_model, slow_pass_done = encoder.text.model, threading.Event()

    def slow_encode(*args):
        time.sleep(2.5)
        slow_pass_done.set()
        return real_model.encode(*args)

    monkeypatch.setattr(encoder.text, "model", dataclasses.replace(real_model, encode=slow_encode))
    response = make_app(encoder).test_client().post("/encode-text", json={"text": "slow car"})
    assert response.status_code == 503 and response.get_json()["code"] == "deadline_exceeded"
    assert response.headers["Retry-After"]
    monkeypatch.undo()
    assert slow_pass_done.wait(5)
    assert encoder.encode_texts(["fast again"]).vectors.shape[0] == 1  # the worker lived on
    encoder.close()


def test_a_deadline_withdraws_queued_items_so_the_model_skips_them():
    gate, seen = threading.Event(), []
    batcher = MicroBatcher(lambda items: (gate.wait(5), seen.extend(items), items)[2], BatchLimits(1, 0, 10), name="t")
    first = batcher.submit(["running"])
    with pytest.raises(DeadlineExceededError):
        batcher.run(["abandoned"], timeout=0.2)
    assert batcher.depth == 0  # withdrawn at once: it no longer counts against CLIP_QUEUE_SIZE
    gate.set()
    assert first[0].result(5) == "running"
    assert batcher.run(["next"], timeout=5) == ["next"]
    assert "abandoned" not in seen and batcher.depth == 0
    batcher.close()
