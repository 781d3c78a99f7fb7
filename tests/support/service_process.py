"""Helpers for tests that run the real service (gunicorn) as ops start it, on loopback only.

Shared by the tests in tests/e2e/: starting and stopping `python3 clip_vectorize_service.py`, finding its
worker, and small HTTP helpers (plain http.client, one connection per request).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"  # loopback only, always
MODEL_LOADED_LINE = re.compile(r"CLIP model .* loaded on ")  # clip_encoder.ClipEncoder.load logs it once per load


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def service_env(model_dir: Path, port: int, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("CLIP_", "PYTEST"))}
    env.update({"CLIP_MODEL": str(model_dir), "CLIP_SERVICE_HOST": HOST, "CLIP_SERVICE_PORT": str(port),
                "DEVICE": "cpu", "HF_HUB_OFFLINE": "1", "CLIP_CACHE_DIR": str(Path(model_dir).parent / "cache"),
                **extra})
    return env


@dataclass
class Service:
    """A running `python3 clip_vectorize_service.py`: the Popen is the gunicorn master (the script execs it)."""

    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


START_COMMANDS = {  # the ways ops start it; each ends in the same gunicorn command
    "python3 clip_vectorize_service.py": [sys.executable, str(PROJECT_ROOT / "clip_vectorize_service.py")],
    "start_clip_service.sh": [str(PROJECT_ROOT / "start_clip_service.sh")],
}


def start_service(model_dir: Path, log_dir: Path, command: str = "python3 clip_vectorize_service.py",
                  **env: str) -> Service:
    """Start the service from `/` (it must not depend on the caller's directory); its stdout and stderr go to a
    file (a pipe nobody reads would block a busy server)."""
    port = free_port()
    log_path = log_dir / f"service-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(START_COMMANDS[command], cwd="/", env=service_env(model_dir, port, **env),
                                   stdout=log, stderr=subprocess.STDOUT)
    return Service(process, port, log_path)


def wait_until_healthy(service: Service, seconds: float = 150) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise AssertionError(f"service exited with {service.process.returncode}:\n{service.log_tail()}")
        try:
            status, _, body = request(service.port, "GET", "/health", timeout=2)
            if status == 200:
                return body
        except OSError:  # not listening yet, or the worker is still loading the model
            pass
        time.sleep(0.3)
    raise AssertionError(f"service did not become healthy within {seconds} s:\n{service.log_tail()}")


def stop(service: Service, timeout: float = 40) -> int:
    """SIGTERM the master and wait; SIGKILL only if it ignores that. Returns the exit code."""
    if service.process.poll() is None:
        service.process.send_signal(signal.SIGTERM)
        try:
            service.process.wait(timeout)
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait()
    return service.process.returncode


def worker_pids(master_pid: int) -> list[int]:
    """The master's live children (gunicorn workers), from /proc; zombies not yet reaped are left out."""
    children: set[int] = set()
    for task in Path(f"/proc/{master_pid}/task").glob("*"):
        try:
            children.update(int(pid) for pid in (task / "children").read_text().split())
        except OSError:
            pass
    return sorted(pid for pid in children if _state(pid) not in (None, "Z"))


def _state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def wait_for_one_worker(master_pid: int, seconds: float = 30) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pids = worker_pids(master_pid)
        if len(pids) == 1:
            return pids[0]
        time.sleep(0.05)
    raise AssertionError(f"expected one worker under master {master_pid}, found {worker_pids(master_pid)}")


# ---------------------------------------------------------------- HTTP (plain http.client: one connection per request)


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
            timeout: float = 30) -> tuple[int, dict[str, str], dict]:
    """One request on a fresh connection; returns (status, headers, JSON body). Network errors propagate."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers={"Connection": "close", **(headers or {})})
        response = connection.getresponse()
        raw = response.read()
        return response.status, {key.lower(): value for key, value in response.getheaders()}, json.loads(raw)
    finally:
        connection.close()


def post_json(port: int, path: str, payload: dict, timeout: float = 30) -> tuple[int, dict[str, str], dict]:
    return request(port, "POST", path, json.dumps(payload).encode(), {"Content-Type": "application/json"}, timeout)


def multipart(field: str, files: list[bytes]) -> tuple[bytes, dict[str, str]]:
    boundary = "clip-test-boundary-7d1f0a"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{index}.jpg"\r\n'
             f"Content-Type: image/jpeg\r\n\r\n".encode() + blob + b"\r\n" for index, blob in enumerate(files)]
    return (b"".join(parts) + f"--{boundary}--\r\n".encode(),
            {"Content-Type": f"multipart/form-data; boundary={boundary}"})


def post_images(port: int, path: str, field: str, files: list[bytes], timeout: float = 30):
    body, headers = multipart(field, files)
    return request(port, "POST", path, body, headers, timeout)


def queue_depth(port: int) -> int | None:
    """Items waiting for a forward pass (both towers), from /metrics; None if it cannot be read."""
    connection = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        connection.request("GET", "/metrics", headers={"Connection": "close"})
        response = connection.getresponse()
        text = response.read().decode(errors="replace")
        if response.status != 200:
            return None
    except OSError:
        return None
    finally:
        connection.close()
    depths = re.findall(r"^clip_queue_depth\{[^}]*\}\s+([0-9.eE+-]+)$", text, re.MULTILINE)
    return int(sum(float(depth) for depth in depths)) if depths else None
