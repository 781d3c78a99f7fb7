"""The service started the ways ops start it (real gunicorn processes), on loopback, with the tiny model."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from sample_images import encode_image_bytes, photo_like

PROJECT_ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def service_env(model_dir, port: int, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("CLIP_", "PYTEST"))}
    env.update({"CLIP_MODEL": str(model_dir), "CLIP_SERVICE_HOST": "127.0.0.1", "CLIP_SERVICE_PORT": str(port),
                "DEVICE": "cpu", "CLIP_THREADS": "4", "HF_HUB_OFFLINE": "1",
                "CLIP_CACHE_DIR": str(Path(model_dir).parent / "cache"), **extra})
    return env


def wait_until_healthy(process: subprocess.Popen, url: str, seconds: float = 120) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"service exited with {process.returncode}: {process.stderr.read()}")
        try:
            response = requests.get(f"{url}/health", timeout=2)
            if response.status_code == 200:
                return response.json()
        except requests.RequestException:  # not listening yet, or the worker is still loading the model
            pass
        time.sleep(0.3)
    raise AssertionError("service did not become healthy in time")


def stop(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=40)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
    return stderr


@pytest.fixture
def served(tiny_model_dir, request):
    """Start the service with the command given by the test's parameter; yield its base URL."""
    port = free_port()
    command = request.param(port)
    process = subprocess.Popen(command, cwd="/", env=service_env(tiny_model_dir, port, CLIP_VENV=sys.prefix),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(process, url)
        yield url, process
    finally:
        stop(process)


START_COMMANDS = {
    "python3 clip_vectorize_service.py": lambda port: [sys.executable, str(PROJECT_ROOT / "clip_vectorize_service.py")],
    "start_clip_service.sh": lambda port: [str(PROJECT_ROOT / "start_clip_service.sh")],
}


@pytest.mark.parametrize("served", START_COMMANDS.values(), ids=START_COMMANDS.keys(), indirect=True)
def test_the_service_answers_the_ops_guide_checks(served):
    url, _ = served
    health = requests.get(f"{url}/health", timeout=10).json()
    assert health["status"] == "ok" and health["clip_loaded"] is True and health["service"] == "clip-vectorize"
    body = requests.post(f"{url}/encode-text", json={"text": "红色的宝马SUV"}, timeout=10).json()
    assert body["status"] == "success" and len(body["vector"]) == body["dimension"] == health["dimension"]
    assert abs(sum(value * value for value in body["vector"]) - 1) < 1e-4


@pytest.mark.parametrize("served", [START_COMMANDS["python3 clip_vectorize_service.py"]], indirect=True)
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
    result = subprocess.run([sys.executable, str(PROJECT_ROOT / "clip_vectorize_service.py")],
                            env=service_env(tiny_model_dir, port, **env), capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("served", [START_COMMANDS["python3 clip_vectorize_service.py"]], indirect=True)
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
