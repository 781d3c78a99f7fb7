"""Replicas behind nginx with deploy/nginx-clip-vectorize.conf: spread, failover, request ids, limits, retry rules."""

from __future__ import annotations

import http.client
import json
import re
import sys
import threading

import pytest

from support.assertions import eventually
from support.nginx import (
    SITE_CONF,
    FakeReplica,
    Nginx,
    check_conf,
    nginx_binary,
    start_nginx,
    stop_nginx,
    with_max_conns,
    write_conf,
)
from support.service_process import HOST, Service, post_json, request, start_service, stop, wait_until_healthy

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(180),
    pytest.mark.skipif(nginx_binary() is None, reason="nginx is not installed (tests/run.sh installs it as root)"),
]


def test_the_deploy_file_passes_nginx_t(tmp_path):
    # Inside a minimal nginx.conf; only its log directory and listen address are moved.
    result = check_conf(write_conf(tmp_path, upstream_ports=[5001, 5002], listen_port=8080))
    assert result.returncode == 0, result.stderr
    assert "[warn]" not in result.stderr and "[emerg]" not in result.stderr, result.stderr


# ------------------------------------------------------------------- two real replicas (tiny model) and nginx


@pytest.fixture(scope="module")
def replicas(tiny_model_dir, tmp_path_factory):
    """Two replicas started as ops start them; both are loading their models at the same time."""
    log_dir = tmp_path_factory.mktemp("replicas")
    services = [start_service(tiny_model_dir, log_dir, CLIP_VENV=sys.prefix, CLIP_THREADS="4") for _ in range(2)]
    try:
        for service in services:
            wait_until_healthy(service)
        yield services
    finally:
        for service in services:
            stop(service)


@pytest.fixture(scope="module")
def proxy(replicas, tmp_path_factory):
    nginx = start_nginx(tmp_path_factory.mktemp("nginx"), [service.port for service in replicas])
    yield nginx
    stop_nginx(nginx)


@pytest.fixture(scope="module")
def dimension(replicas) -> int:
    return wait_until_healthy(replicas[0])["dimension"]


def encode_text(port: int, text: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], dict]:
    body = json.dumps({"text": text}).encode()
    return request(port, "POST", "/encode-text", body, {"Content-Type": "application/json", **(headers or {})})


def assert_vector(status: int, body: dict, dimension: int) -> None:
    assert status == 200, body
    assert body["status"] == "success" and len(body["vector"]) == dimension
    assert abs(sum(value * value for value in body["vector"]) - 1) < 1e-4


def encode_text_successes(service: Service) -> int:
    """The replica's own count of 200s on /encode-text, read from its /metrics directly (not through nginx)."""
    connection = http.client.HTTPConnection(HOST, service.port, timeout=10)
    try:
        connection.request("GET", "/metrics")
        metrics = connection.getresponse().read().decode()
    finally:
        connection.close()
    match = re.search(r'^clip_requests_total\{endpoint="/encode-text",status="200"\} ([0-9.]+)$', metrics, re.MULTILINE)
    return int(float(match.group(1))) if match else 0



def test_requests_through_nginx_are_answered_by_both_replicas(replicas, proxy, dimension):
    before = [encode_text_successes(service) for service in replicas]
    for index in range(10):
        status, _, body = encode_text(proxy.port, f"red BMW SUV {index}")
        assert_vector(status, body, dimension)
    served = [encode_text_successes(service) - count for service, count in zip(replicas, before)]
    assert sum(served) == 10 and min(served) > 0, served


def test_health_through_nginx_is_a_replicas_health(proxy, dimension):
    status, _, body = request(proxy.port, "GET", "/health")
    assert status == 200 and body["clip_loaded"] is True and body["dimension"] == dimension


def test_a_client_request_id_comes_back_unchanged_through_nginx(proxy, dimension):
    status, headers, body = encode_text(proxy.port, "white sedan", {"X-Request-ID": "client-id.e2e:42"})
    assert_vector(status, body, dimension)
    assert headers["x-request-id"] == "client-id.e2e:42"


def test_without_a_request_id_nginx_makes_one_that_both_logs_name(replicas, proxy, dimension):
    status, headers, body = encode_text(proxy.port, "black hatchback")
    assert_vector(status, body, dimension)
    request_id = headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)  # nginx's $request_id
    assert eventually(lambda: f"id={request_id} " in proxy.access_log())
    assert eventually(lambda: any(request_id in service.log() for service in replicas))


def test_a_body_over_the_limit_is_refused_by_nginx_with_413(proxy):
    too_large = str(32 * 1024 * 1024 + 1)  # one byte over CLIP_MAX_REQUEST_BYTES; nginx judges Content-Length
    status, headers, body = request(proxy.port, "POST", "/encode-text", b"{}",
                                    {"Content-Type": "application/json", "Content-Length": too_large})
    assert status == 413 and body["status"] == "error" and body["code"] == "request_entity_too_large"
    assert "client_max_body_size" in body["error"]  # nginx's answer: no replica read a byte
    assert headers["x-request-id"]  # nginx's own answers carry the id too


# These two stop the replicas, so they are the last to use them (pytest runs a module's tests in order).


def test_when_one_replica_stops_every_request_is_answered_by_the_other(replicas, proxy, dimension):
    outcomes: list[int | str] = []
    stopping = threading.Event()
    sender = threading.Thread(target=_send_until, args=(proxy.port, stopping, outcomes, dimension))
    sender.start()
    try:
        assert stop(replicas[0]) == 0  # SIGTERM: gunicorn finishes what it holds and stops accepting
    finally:
        stopping.set()
        sender.join(60)
    for index in range(40):
        status, _, body = encode_text(proxy.port, f"grey pickup {index}")
        assert_vector(status, body, dimension)
    assert outcomes and set(outcomes) == {200}, outcomes
    stopped = f"{HOST}:{replicas[0].port}, {HOST}:{replicas[1].port}"
    assert eventually(lambda: stopped in proxy.access_log())  # some met the stopped replica and were sent on


def _send_until(port: int, stopping: threading.Event, outcomes: list[int | str], dimension: int) -> None:
    """Requests one after another while a replica shuts down: each one's status, or what went wrong."""
    while not stopping.is_set():
        try:
            status, _, body = post_json(port, "/encode-text", {"text": f"blue van {len(outcomes)}"})
        except OSError as exc:
            outcomes.append(repr(exc))
            continue
        outcomes.append(status if status != 200 or len(body["vector"]) == dimension else "wrong dimension")


def test_with_every_replica_stopped_nginx_answers_503_with_retry_after(replicas, proxy):
    for service in replicas:
        stop(service)
    status, headers, body = encode_text(proxy.port, "anything", {"X-Request-ID": "all-down-1"})
    assert status == 503 and body == {"status": "error", "code": "unavailable",
                                      "error": "no replica of the service could take the request; retry shortly"}
    assert headers["retry-after"] == "1" and headers["x-request-id"] == "all-down-1"


# ------------------------------------------------ retry rules, with stand-in replicas (no model, a second each)


@pytest.fixture
def fake_replicas():
    made: list[FakeReplica] = []

    def make(*statuses: int, delay: float = 0.0) -> list[FakeReplica]:
        made.extend(FakeReplica(status, delay) for status in statuses)
        return made[-len(statuses):]

    yield make
    for replica in made:
        replica.close()


@pytest.fixture
def nginx_in_front(tmp_path):
    started: list[Nginx] = []

    def start(fakes: list[FakeReplica], site_text: str | None = None):
        started.append(start_nginx(tmp_path / f"nginx-{len(started)}", [fake.port for fake in fakes], site_text))
        return started[-1]

    yield start
    for nginx in started:
        stop_nginx(nginx)


def test_a_post_answered_503_is_tried_on_the_other_replica(fake_replicas, nginx_in_front):
    overloaded, healthy = fake_replicas(503, 200)
    nginx = nginx_in_front([overloaded, healthy])
    for index in range(4):
        status, _, body = post_json(nginx.port, "/encode-text", {"text": str(index)})
        assert status == 200 and body == {"port": healthy.port}
    assert overloaded.paths  # it was tried, and its 503s were not what the client got


def test_a_reindex_that_reached_a_replica_is_never_sent_to_another(fake_replicas, nginx_in_front):
    first, second = fake_replicas(503, 503)
    nginx = nginx_in_front([first, second])
    status, _, _ = post_json(nginx.port, "/gallery/reindex", {})
    assert status == 503 and len(first.paths) + len(second.paths) == 1


def test_a_search_answered_503_is_passed_on_and_takes_no_replica_out(fake_replicas, nginx_in_front):
    first, second = fake_replicas(503, 503)  # as when the shared Qdrant server is down
    nginx = nginx_in_front([first, second])
    for _ in range(8):  # more than max_fails per replica
        status, _, body = post_json(nginx.port, "/search", {"text": "red car"})
        assert status == 503 and "port" in body  # the replica's own answer, not nginx's "unavailable"
    assert len(first.paths) == len(second.paths) == 4  # each request went to one replica, alternating


def test_with_max_conns_full_replicas_get_an_immediate_503_from_nginx(fake_replicas, nginx_in_front):
    slow = fake_replicas(200, 200, delay=3.0)  # long enough that all four are in flight together, even on a busy CI
    nginx = nginx_in_front(slow, with_max_conns(SITE_CONF.read_text(), 1))  # the deploy file's commented option
    results: list[tuple[int, dict]] = []
    together = threading.Barrier(4)

    def send() -> None:
        together.wait(10)
        results.append(post_json(nginx.port, "/encode-text", {})[::2])

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(status for status, _ in results) == [200, 200, 503, 503]
    assert all(body["code"] == "unavailable" for status, body in results if status == 503)
    assert sum(len(replica.paths) for replica in slow) == 2  # the refused two never reached Python
