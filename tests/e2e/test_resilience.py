"""The real service (gunicorn, started as ops start it) under stress: graceful shutdown with requests in flight,
a killed worker, a full queue, and requests past their deadline. Loopback only.

These run on `small_model_dir` (support.models.build_small_clip), whose forward passes take tens of
milliseconds, so requests really queue; BATCH_SIZE=1 makes each text or image its own pass.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import statistics
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from support.assertions import cosine, eventually
from support.gallery import write_photos
from support.images import encode_image_bytes, photo_like
from support.service_process import (
    HOST,
    MODEL_LOADED_LINE,
    post_images,
    post_json,
    queue_depth,
    request,
    start_service,
    stop,
    wait_for_one_worker,
    wait_until_healthy,
    worker_pids,
)

pytestmark = [pytest.mark.slow]

GRACEFUL_TIMEOUT_S = 30  # deploy/gunicorn.conf.py
# One inference thread leaves the other core to gunicorn and to the test's own clients.
SLOW_SERVICE = {"BATCH_SIZE": "1", "CLIP_TEXT_CACHE_SIZE": "0", "CLIP_INFERENCE_THREADS": "1"}
TEXTS = ["红色的宝马SUV", "white sedan", "blue truck on a highway at night", "a photo of a dog sitting on a sofa",
         "黑色奔驰轿车", "vintage convertible, 1965, cherry red, chrome bumpers", "yellow taxi", "fire engine"]


@pytest.fixture
def service_factory(small_model_dir, tmp_path):
    started = []

    def start(**env: str):
        service = start_service(small_model_dir, tmp_path, **env)
        started.append(service)
        wait_until_healthy(service)
        return service

    yield start
    for service in started:
        stop(service)


def reference_vectors(port: int, texts: list[str]) -> dict[str, list[float]]:
    references = {}
    for text in texts:
        status, _, body = post_json(port, "/encode-text", {"text": text})
        assert status == 200, body
        references[text] = body["vector"]
    return references


def timed(call, *args, **kwargs):
    """(seconds, result or the exception raised)."""
    started = time.monotonic()
    try:
        result = call(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001  (network errors are results to check here)
        result = exc
    return time.monotonic() - started, result


@pytest.mark.timeout(240)
def test_sigterm_lets_in_flight_requests_finish_and_the_master_exits_0(service_factory):
    service = service_factory(**SLOW_SERVICE, CLIP_QUEUE_SIZE="1000")  # room for all 320 texts: none refused
    dimension = request(service.port, "GET", "/health")[2]["dimension"]
    clients, texts_each = 8, 40  # 320 forward passes of 5-30 ms each: seconds of work
    batches = [[f"{TEXTS[n % len(TEXTS)]} #{client}-{n}" for n in range(texts_each)] for client in range(clients)]
    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(post_json, service.port, "/encode-texts", {"texts": texts}, 60) for texts in batches]
        # Wait until (nearly) every request's texts are queued for the model, so all are really in flight.
        deadline = time.monotonic() + 10
        while (depth := queue_depth(service.port)) is not None and depth < (clients - 1) * texts_each:
            assert time.monotonic() < deadline, f"requests did not queue up (depth {depth})"
            time.sleep(0.02)
        if depth is None:  # no /metrics to read: give the requests time to arrive
            time.sleep(1.0)
        assert not any(future.done() for future in futures), "requests finished before SIGTERM: make them slower"
        signalled = time.monotonic()
        os.kill(service.pid, signal.SIGTERM)
        results = [future.result(timeout=GRACEFUL_TIMEOUT_S + 15) for future in futures]
    try:
        returncode = service.process.wait(GRACEFUL_TIMEOUT_S + 5)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the master did not exit within graceful_timeout:\n{service.log_tail()}")
    exited_after = time.monotonic() - signalled
    for texts, (status, _, body) in zip(batches, results):
        assert status == 200, body
        assert body["count"] == len(texts) and all(len(vector) == dimension for vector in body["vectors"])
        assert all(abs(np.linalg.norm(vector) - 1) < 1e-3 for vector in body["vectors"])
    print(f"graceful shutdown: {clients} requests x {texts_each} texts in flight at SIGTERM (queue depth {depth}); "
          f"all answered, master exited with {returncode} after {exited_after:.1f} s")
    assert returncode == 0, service.log_tail()
    assert exited_after < GRACEFUL_TIMEOUT_S, f"master took {exited_after:.1f} s to exit"
    with pytest.raises(ConnectionRefusedError):
        request(service.port, "GET", "/health", timeout=5)


@pytest.mark.timeout(240)
def test_a_killed_worker_is_replaced_and_health_never_claims_a_model_it_has_not_loaded(service_factory):
    service = service_factory(**SLOW_SERVICE)
    text = "红色的宝马SUV"
    before = post_json(service.port, "/encode-text", {"text": text})[2]["vector"]
    old_worker = wait_for_one_worker(service.pid)
    assert len(MODEL_LOADED_LINE.findall(service.log())) == 1, service.log_tail()

    os.kill(old_worker, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while old_worker in worker_pids(service.pid):  # until the master has reaped it
        assert time.monotonic() < deadline, "the killed worker is still there"
        time.sleep(0.02)

    seen: list[str] = []  # what /health said, in order, for the failure message
    loading_encode_checked = False
    deadline = time.monotonic() + 150
    while True:
        assert time.monotonic() < deadline, (
            f"no healthy worker after the kill; /health said {seen}\n{service.log_tail()}")
        assert service.process.poll() is None, (
            f"the master exited with {service.process.returncode}:\n{service.log_tail()}")
        try:
            status, _, body = request(service.port, "GET", "/health", timeout=5)
        except TimeoutError:
            seen.append("(waited)")  # acceptable: the connection waits in the listen queue while the worker boots
            continue
        loads_logged = len(MODEL_LOADED_LINE.findall(service.log()))  # read after the answer
        seen.append(f"{status}:{body.get('clip_loaded')}")
        if body.get("clip_loaded") is True:
            assert status == 200 and body["status"] == "ok", body
            assert loads_logged == 2, (
                f"/health said clip_loaded before the new worker loaded its model:\n{service.log_tail()}")
            break
        assert status == 503 and body["clip_loaded"] is False and body["status"] == "loading", body
        if not loading_encode_checked:  # an encode meanwhile is refused with a hint to retry, not left hanging
            status, headers, body = post_json(service.port, "/encode-text", {"text": text}, timeout=10)
            if status == 503:
                assert body["code"] == "model_not_ready" and "retry-after" in headers, (headers, body)
                loading_encode_checked = True
            else:  # the model finished loading in between
                assert status == 200, body
        time.sleep(0.1)

    new_worker = wait_for_one_worker(service.pid)
    print(f"worker {old_worker} killed, replaced by {new_worker}; /health said: {' '.join(seen)}")
    assert new_worker != old_worker
    status, _, body = post_json(service.port, "/encode-text", {"text": text})
    assert status == 200, body
    assert np.allclose(body["vector"], before, atol=1e-6), "the new worker's vector differs from the old worker's"


@pytest.mark.timeout(240)
def test_a_full_queue_refuses_at_once_with_retry_after_and_the_rest_get_correct_vectors(service_factory):
    service = service_factory(**SLOW_SERVICE, CLIP_QUEUE_SIZE="4")
    references = reference_vectors(service.port, TEXTS)
    clients = 48
    start = threading.Barrier(clients)

    def one(index: int):
        start.wait()
        text = TEXTS[index % len(TEXTS)]
        return text, *timed(post_json, service.port, "/encode-text", {"text": text}, 30)

    with ThreadPoolExecutor(clients) as pool:
        outcomes = list(pool.map(one, range(clients)))

    errors = [result for _, _, result in outcomes if isinstance(result, Exception)]
    assert not errors, errors
    ok = [(text, seconds, body) for text, seconds, (status, _, body) in outcomes if status == 200]
    refused = [(seconds, headers, body) for _, seconds, (status, headers, body) in outcomes if status == 503]
    assert len(ok) + len(refused) == clients, [result[0] for _, _, result in outcomes]
    assert refused, "nothing was refused: the queue bound did not act"
    assert ok, "everything was refused"
    print(f"queue bound: {len(ok)} x 200, {len(refused)} x 503; 503 latency median "
          f"{statistics.median(s for s, _, _ in refused) * 1000:.0f} ms, "
          f"max {max(s for s, _, _ in refused) * 1000:.0f} ms")
    for _seconds, headers, body in refused:
        assert body["status"] == "error" and body["code"] == "overloaded", body
        assert int(headers["retry-after"]) >= 1, headers
    # Refusals come at once (no forward pass waited for); a little slack for two busy cores.
    assert statistics.median(seconds for seconds, _, _ in refused) < 1.0, sorted(s for s, _, _ in refused)
    for text, _, body in ok:
        assert cosine(body["vector"], references[text]) >= 0.9999, text

    assert request(service.port, "GET", "/health")[0] == 200
    status, _, body = post_json(service.port, "/encode-text", {"text": TEXTS[0]})
    assert status == 200 and cosine(body["vector"], references[TEXTS[0]]) >= 0.9999


@pytest.mark.timeout(240)
def test_a_request_the_model_cannot_reach_within_the_deadline_gets_503_and_leaves_the_queue(service_factory):
    service = service_factory(**SLOW_SERVICE, CLIP_REQUEST_TIMEOUT_S="1")
    # Images: an image pass costs a few times a text pass, so 256 of them outlast 1 s by a wide margin.
    images = [encode_image_bytes(photo_like(224, 224, seed=seed)) for seed in range(4)]
    seconds, (status, _, body) = timed(post_images, service.port, "/encode-images", "images", images * 2)
    assert status == 200, body
    pass_seconds = seconds / 8  # an upper bound: decoding and HTTP are in there too
    count = 256  # CLIP_MAX_BATCH_ITEMS; with BATCH_SIZE=1 each image is its own forward pass
    if count * pass_seconds < 3:
        pytest.skip(f"an image pass takes {pass_seconds * 1000:.1f} ms: {count} do not reliably outlast 1 s here")

    seconds, (status, headers, body) = timed(post_images, service.port, "/encode-images", "images",
                                             images * (count // len(images)), 60)
    print(f"deadline: image pass <= {pass_seconds * 1000:.1f} ms, "
          f"{count} images answered {status} after {seconds:.2f} s")
    assert status == 503, body
    assert body["status"] == "error" and body["code"] == "deadline_exceeded", body
    assert "retry-after" in headers
    assert 0.9 < seconds < 5, f"answered after {seconds:.2f} s with CLIP_REQUEST_TIMEOUT_S=1"

    # The images the model had not reached were withdrawn: the next request does not wait behind them.
    seconds, (status, _, body) = timed(post_images, service.port, "/encode-image", "image", images[:1], 30)
    assert status == 200, body
    assert seconds < 1.0, f"the next request took {seconds:.2f} s: withdrawn images still used the model"
    assert request(service.port, "GET", "/health")[0] == 200


@pytest.mark.timeout(120)
def test_with_every_request_thread_busy_a_request_is_refused_at_once_and_health_still_answers(service_factory):
    service = service_factory(CLIP_THREADS="2")
    body = json.dumps({"text": TEXTS[0]}).encode()
    head = (f"POST /encode-text HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    holders: list[socket.socket] = []

    def hold_a_thread() -> bool:
        """A request whose thread waits for the rest of its body. A thread still finishing an earlier request (it
        counts as busy a moment after its client has the reply) gets this one refused at once: then try again."""
        holder = socket.create_connection((HOST, service.port), timeout=0.5)
        holder.sendall(head + body[:3])
        try:
            holder.recv(1)
        except TimeoutError:  # no answer: it holds a thread
            holder.settimeout(30)
            holders.append(holder)
            return len(holders) == 2
        holder.close()
        return False

    assert eventually(hold_a_thread, 20), f"{len(holders)} of 2 request threads held"
    seconds, (status, headers, refused) = timed(post_json, service.port, "/encode-text", {"text": TEXTS[1]}, 10)
    assert status == 503, refused
    assert refused["code"] == "overloaded" and "thread" in refused["error"], refused
    assert int(headers["retry-after"]) >= 1 and headers.get("x-request-id"), headers
    assert seconds < 1.0, f"the refusal took {seconds:.2f} s: it waited for a thread"
    status, _, health = request(service.port, "GET", "/health")
    assert status == 200 and health["clip_loaded"] is True, health

    for holder in holders:  # the held requests complete normally once their bodies arrive
        holder.sendall(body[3:])
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += holder.recv(65536)
        assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
        holder.close()
    # A thread counts as free once its handler has returned, a moment after the client has the reply.
    assert eventually(lambda: post_json(service.port, "/encode-text", {"text": TEXTS[1]})[0] == 200)


def gallery_status(service) -> dict:
    status, _, body = request(service.port, "GET", "/gallery/status")
    assert status == 200, body
    return body


def index_run(service) -> dict:
    """The service's index run as /gallery/status shows it; empty before the start-up thread has begun it."""
    return gallery_status(service)["indexing"] or {}


@pytest.mark.timeout(300)
def test_a_service_stopped_mid_index_ends_the_run_cleanly_and_its_next_start_goes_on(service_factory, tmp_path):
    photos = tmp_path / "photos"
    write_photos(photos, 200, size=(640, 480))
    gallery = {"CLIP_GALLERY_DIR": str(photos), "QDRANT_PATH": str(tmp_path / "qdrant_data"), **SLOW_SERVICE}
    service = service_factory(**gallery)
    assert eventually(lambda: index_run(service).get("done", 0) >= 5, 120), service.log_tail()

    assert stop(service) == 0
    log = service.log()
    if re.search(r"gallery \S+ indexed: ", log):
        pytest.skip("the run ended before the service was stopped: nothing to check")
    assert "stopped with the service" in log and "Traceback" not in log, log
    written = int(re.search(r"stopped with the service after (\d+) of 200", log).group(1))

    restarted = service_factory(**gallery)
    assert eventually(lambda: index_run(restarted).get("state") == "done", 180), restarted.log_tail()
    body = gallery_status(restarted)
    assert body["points"] == 200 and body["indexing"]["unchanged"] >= written > 0, body
