"""nginx with the real deploy/nginx-clip-vectorize.conf, its replica addresses and port rewritten, on loopback."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from support.service_process import HOST, PROJECT_ROOT, free_port

SITE_CONF = PROJECT_ROOT / "deploy" / "nginx-clip-vectorize.conf"
UPSTREAM_SERVER = re.compile(r"^(\s*server\s+)127\.0\.0\.1:\d+", re.MULTILINE)  # active lines, not the comments
LISTEN = re.compile(r"^(\s*listen\s+)\d+;", re.MULTILINE)
LOG_DIR = "/var/log/nginx/"


def nginx_binary() -> str | None:
    """Debian puts nginx in /usr/sbin, which is not on every user's PATH."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")


UPSTREAM_LINE = re.compile(r"^\s*server\s+127\.0\.0\.1:\d+[^\n]*\n", re.MULTILINE)


def render_site(text: str, upstream_ports: list[int], listen_port: int, log_dir: Path) -> str:
    """The deploy file with only its replica addresses, listen port and log directory changed (fewer replicas than
    the file lists: its first lines, the others left out)."""
    servers = UPSTREAM_SERVER.findall(text)
    assert 0 < len(upstream_ports) <= len(servers), f"the deploy file has {len(servers)} replicas"
    lines = iter(range(len(servers)))
    text = UPSTREAM_LINE.sub(lambda match: match.group(0) if next(lines) < len(upstream_ports) else "", text)
    ports = iter(upstream_ports)
    text = UPSTREAM_SERVER.sub(lambda match: f"{match.group(1)}{HOST}:{next(ports)}", text)
    text, listens = LISTEN.subn(rf"\g<1>{HOST}:{listen_port};", text)
    assert listens == 1, "the deploy file should listen once"
    return text.replace(LOG_DIR, f"{log_dir}/")


def with_max_conns(text: str, limit: int) -> str:
    """The deploy file with its commented-out option on: `max_conns=limit` on every replica's line."""
    text, count = re.subn(r"^(\s*server\s+[^;{\n]*);", rf"\g<1> max_conns={limit};", text, flags=re.MULTILINE)
    assert count, "no replica lines"
    return text


def main_conf(site: Path, work_dir: Path) -> str:
    """A top-level nginx.conf around the site file, everything it writes under work_dir. As root, workers stay
    root: the default user (nobody) could not enter pytest's private temporary directories."""
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = "".join(f"    {kind}_temp_path {work_dir}/{kind}_temp;\n"
                   for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return (f"{user}daemon off;\nworker_processes 1;\npid {work_dir}/nginx.pid;\nerror_log {work_dir}/error.log info;\n"
            f"events {{ worker_connections 256; }}\n"
            f"http {{\n{temp}    include {site};\n}}\n")


def write_conf(work_dir: Path, upstream_ports: list[int], listen_port: int, site_text: str | None = None) -> Path:
    """Writes the rendered site and the top-level conf into work_dir; returns the top-level conf's path."""
    work_dir.mkdir(parents=True, exist_ok=True)
    site = work_dir / "clip-vectorize.conf"
    site.write_text(render_site(site_text or SITE_CONF.read_text(), upstream_ports, listen_port, work_dir))
    conf = work_dir / "nginx.conf"
    conf.write_text(main_conf(site, work_dir))
    return conf


def check_conf(conf: Path) -> subprocess.CompletedProcess:
    """`nginx -t`: parses the configuration, opens its files, binds nothing."""
    return subprocess.run([_binary(), "-t", "-e", "stderr", "-p", str(conf.parent), "-c", str(conf)],
                          capture_output=True, text=True, timeout=30)


@dataclass
class Nginx:
    """A foreground nginx (the Popen is its master process) and where its logs are."""

    process: subprocess.Popen
    port: int
    work_dir: Path

    def error_log(self) -> str:
        return (self.work_dir / "error.log").read_text(errors="replace")

    def access_log(self) -> str:
        path = self.work_dir / "clip-vectorize.access.log"
        return path.read_text(errors="replace") if path.exists() else ""


def start_nginx(work_dir: Path, upstream_ports: list[int], site_text: str | None = None) -> Nginx:
    port = free_port()
    conf = write_conf(work_dir, upstream_ports, port, site_text)
    with open(work_dir / "stderr.log", "wb") as stderr:
        process = subprocess.Popen([_binary(), "-e", "stderr", "-p", str(work_dir), "-c", str(conf)],
                                   stdout=subprocess.DEVNULL, stderr=stderr)
    nginx = Nginx(process, port, work_dir)
    _wait_until_listening(nginx)
    return nginx


def stop_nginx(nginx: Nginx) -> None:
    """SIGTERM: nginx's fast shutdown."""
    if nginx.process.poll() is None:
        nginx.process.terminate()
        nginx.process.wait(10)


def _wait_until_listening(nginx: Nginx, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if nginx.process.poll() is not None:
            raise AssertionError(f"nginx exited with {nginx.process.returncode}:\n"
                                 f"{(nginx.work_dir / 'stderr.log').read_text(errors='replace')}")
        try:
            socket.create_connection((HOST, nginx.port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nginx did not listen on {nginx.port} within {seconds} s")


def _binary() -> str:
    binary = nginx_binary()
    assert binary, "nginx is not installed"
    return binary


@dataclass
class FakeReplica:
    """A stand-in replica on loopback that answers every request with `status` after `delay` seconds and records
    the paths it was sent: for nginx's retry rules without loading a model."""

    status: int = 200
    delay: float = 0.0
    paths: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.server = ThreadingHTTPServer((HOST, 0), _fake_handler(self))
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _fake_handler(replica: FakeReplica) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as gunicorn: nginx reuses the connection

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            replica.paths.append(self.path)
            time.sleep(replica.delay)
            body = json.dumps({"port": replica.port}).encode()
            self.send_response(replica.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # quiet
            pass

    return Handler
