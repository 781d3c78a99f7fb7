"""The service started the ways ops start it (real gunicorn processes), on loopback, with the tiny model."""

import socket
import subprocess
import sys

import openai
import pytest
import requests

from support.images import encode_image_bytes, photo_like
from support.service_process import START_COMMANDS, free_port, service_env, start_service, stop, wait_until_healthy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture
def served(tiny_model_dir, tmp_path, request):
    """Start the service with the command named by the test's parameter; yield its base URL and process."""
    service = start_service(tiny_model_dir, tmp_path, request.param, CLIP_VENV=sys.prefix, CLIP_THREADS="4")
    try:
        wait_until_healthy(service)
        yield service.url, service.process
    finally:
        stop(service)


@pytest.mark.parametrize("served", START_COMMANDS, indirect=True)
def test_the_service_answers_the_ops_guide_checks(served):
    url, _ = served
    health = requests.get(f"{url}/health", timeout=10).json()
    assert health["status"] == "ok" and health["clip_loaded"] is True and health["service"] == "clip-vectorize"
    body = requests.post(f"{url}/encode-text", json={"text": "红色的宝马SUV"}, timeout=10).json()
    assert body["status"] == "success" and len(body["vector"]) == body["dimension"] == health["dimension"]
    assert abs(sum(value * value for value in body["vector"]) - 1) < 1e-4


@pytest.mark.parametrize("served", ["python3 clip_vectorize_service.py"], indirect=True)
def test_the_served_app_handles_uploads_and_bad_input_without_losing_the_worker(served):
    url, process = served
    image = encode_image_bytes(photo_like(seed=3))
    assert requests.post(f"{url}/encode-image", files={"image": ("car.jpg", image)}, timeout=10).status_code == 200
    bad = requests.post(f"{url}/encode-image", files={"image": ("x.jpg", b"\xff\xd8garbage")}, timeout=10)
    assert bad.status_code == 400 and bad.json()["status"] == "error"
    assert requests.post(f"{url}/encode-text", data="{", headers={"Content-Type": "application/json"},
                         timeout=10).status_code == 400
    assert requests.get(f"{url}/health", timeout=10).json()["clip_loaded"] is True
    assert process.poll() is None


@pytest.mark.parametrize("served", ["python3 clip_vectorize_service.py"], indirect=True)
def test_the_openai_client_embeds_through_the_served_app(served):
    url, _ = served
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused-without-a-key", max_retries=0)
    health = requests.get(f"{url}/health", timeout=10).json()
    result = client.embeddings.create(model="clip", input=["red BMW SUV", "white sedan"])
    assert [len(item.embedding) for item in result.data] == [health["dimension"]] * 2
    assert [model.id for model in client.models.list()] == ["clip"]


@pytest.mark.parametrize(
    "env, expected",
    [
        ({"CLIP_MODEL": "/nonexistent/clip"}, "CLIP_MODEL='/nonexistent/clip' is not an existing directory"),
        ({"DEVICE": "tpu"}, "DEVICE must be one of auto, cpu, cuda"),
    ],
    ids=["missing-model", "bad-device"],
)
def test_startup_failure_exits_non_zero_with_one_clear_line(tiny_model_dir, env, expected):
    port = free_port()
    result = subprocess.run(START_COMMANDS["python3 clip_vectorize_service.py"],
                            env=service_env(tiny_model_dir, port, **env), capture_output=True, text=True, timeout=120)
    assert result.returncode == 3  # gunicorn's "worker failed to boot": it stops rather than respawning
    assert expected in result.stderr and result.stderr.count("cannot start") == 1
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("served", ["python3 clip_vectorize_service.py"], indirect=True)
def test_an_upload_over_the_limit_is_refused_before_its_body_is_read(served):
    url, _ = served
    port = int(url.rsplit(":", 1)[1])
    claimed = 1024 * 1024 * 1024  # 1 GiB promised; only 1 KiB is ever sent
    with socket.create_connection(("127.0.0.1", port), timeout=20) as connection:
        connection.sendall(
            b"POST /encode-image HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            + f"Content-Length: {claimed}\r\n\r\n".encode() + b"x" * 1024
        )
        reply = connection.makefile("rb")
        status_line = reply.readline().decode()
        headers = dict(line.decode().strip().split(": ", 1) for line in iter(reply.readline, b"\r\n"))
        body = reply.read(int(headers["Content-Length"])).decode()
    assert status_line.startswith("HTTP/1.1 413") and "CLIP_MAX_REQUEST_BYTES" in body
