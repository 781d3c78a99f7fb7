"""Starting, probing and stopping the two gunicorn servers, one at a time, on loopback.

Both run under gunicorn's gthread worker so the comparison is about the app, not the server. Each runs in its
own session (process group) so a stuck start can be cleaned up without touching anything else.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.model import REPO_ROOT

HOST = "127.0.0.1"


@dataclass
class Server:
    name: str  # "ours" or "naive", or a label such as "ours-taiyi"
    process: subprocess.Popen
    port: int
    log_path: Path
    started: float  # perf_counter just before the process was spawned


class ServerFailed(RuntimeError):
    """The server exited or did not become healthy; the message ends with the tail of its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def command(name: str, port: int, model: Path, extra_env: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """argv and environment of `ours` (the project's own gunicorn config) or `naive` (bench/naive_service.py).

    The environment is inherited, so CLIP_* settings the user exported reach our service; only the bind
    address, model and device are forced, and `extra_env` on top (an empty value means unset to the service)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if name == "ours":
        env.update(CLIP_MODEL=str(model), CLIP_SERVICE_HOST=HOST, CLIP_SERVICE_PORT=str(port), DEVICE="cpu",
                   **extra_env)
        return [sys.executable, "-m", "gunicorn", "--config", "deploy/gunicorn.conf.py"], env
    env["NAIVE_MODEL"] = str(model)
    argv = [sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--workers", "1", "--threads", "16",
            "--bind", f"{HOST}:{port}", "--timeout", "300", "bench.naive_service:app"]
    return argv, env


def start(name: str, model: Path, log_path: Path, extra_env: Mapping[str, str] | None = None,
          label: str | None = None) -> Server:
    """Spawn `name` (ours or naive) on a free port; `label` names it in messages (default: `name`)."""
    port = free_port()
    argv, env = command(name, port, model, extra_env or {})
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        started = time.perf_counter()
        process = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    return Server(label or name, process, port, log_path, started)


def wait_ready(server: Server, timeout: float = 300.0) -> float:
    """Seconds from spawning the process until GET /health answers 200."""
    deadline = server.started + timeout
    while time.perf_counter() < deadline:
        if server.process.poll() is not None:
            raise ServerFailed(f"{server.name} exited with {server.process.returncode}\n{log_tail(server)}")
        if health_status(server.port) == 200:
            return time.perf_counter() - server.started
        time.sleep(0.1)
    raise ServerFailed(f"{server.name} not healthy after {timeout:.0f} s\n{log_tail(server)}")


def health_status(port: int) -> int | None:
    """GET /health's status, or None while nothing answers. gunicorn binds before its worker has loaded the
    model, so a request can wait in the listen queue: the timeout bounds that wait and we simply ask again."""
    reply = get_health(port)
    return reply[0] if reply else None


def health_body(port: int) -> dict:
    """GET /health's JSON body ({} when nothing answers or it is not JSON)."""
    reply = get_health(port)
    try:
        return json.loads(reply[1]) if reply else {}
    except ValueError:
        return {}


def get_health(port: int) -> tuple[int, bytes] | None:
    """GET /health: status and body, or None while nothing answers."""
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def stop(server: Server) -> None:
    """SIGTERM to the gunicorn master (graceful), SIGKILL to its process group if it lingers."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(server.process.pid, signal.SIGKILL)  # the group is ours alone (start_new_session)
    except ProcessLookupError:
        pass
    server.process.wait()


def peak_rss_mib(server: Server) -> dict:
    """VmHWM (peak resident set) of the gunicorn master and of each worker (its children), in MiB."""
    return rss_mib(server, "VmHWM")


def rss_mib(server: Server, field: str) -> dict:
    """`field` of /proc/PID/status (VmHWM: peak resident set, VmRSS: resident now) of the gunicorn master and
    of each worker (its children), in MiB."""
    master = server.process.pid
    workers = [pid for pid in _pids() if _status_field(pid, "PPid") == str(master)]
    sizes = [_kib_field_mib(pid, field) for pid in workers]
    sizes = [size for size in sizes if size is not None]
    return {"master_mib": _kib_field_mib(master, field), "workers_mib": sizes, "workers_sum_mib": sum(sizes)}


def log_tail(server: Server, lines: int = 15) -> str:
    return "\n".join(server.log_path.read_text(errors="replace").splitlines()[-lines:])


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _status_field(pid: int, field: str) -> str | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return line.split(":", 1)[1].strip()
    except OSError:  # the process is gone
        return None
    return None


def _kib_field_mib(pid: int, field: str) -> float | None:
    value = _status_field(pid, field)  # "1234567 kB"
    return int(value.split()[0]) / 1024 if value else None
