"""The overload section: our service on the full-size model at twice its capacity, stock gthread beside ours.

The load generator is the project's own load test (tests/e2e/test_load.py: open loop, texts with one image
upload in ten, every 200's vector checked), pointed at the benchmark's model with the service's defaults. It runs
three times: with gunicorn's stock gthread worker (`GUNICORN_CMD_ARGS=--worker-class gthread`), where a request
that arrives with every thread busy waits in the pool's queue; as deployed (QuickRefusalWorker); and as deployed
behind nginx (deploy/nginx-clip-vectorize.conf) with its `max_conns` option on, which refuses a request beyond
NGINX_MAX_CONNS in flight before it reaches Python.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.model import REPO_ROOT

SECTION = "overload"  # the section's key in the results, and its name for `run_bench.py --only`
NGINX_MAX_CONNS = 64  # CLIP_QUEUE_SIZE: what the model's queue holds; more in flight would only wait or be refused
VARIANTS = {"stock-gthread": {"GUNICORN_CMD_ARGS": "--worker-class gthread"}, "quick-refusal": {},
            "nginx-max-conns": {"CLIP_LOAD_TEST_NGINX_MAX_CONNS": str(NGINX_MAX_CONNS)}}


def measure(model: Path, seconds: float, results_dir: Path, stamp: str) -> dict:
    """{variant: the load test's report}, or {variant: {"error": ...}} when it produced none."""
    return {name: _run(model, seconds, results_dir / f"{stamp}-overload-{name}", extra)
            for name, extra in VARIANTS.items()}


def _run(model: Path, seconds: float, prefix: Path, extra_env: dict[str, str]) -> dict:
    report = prefix.with_suffix(".json")
    env = {**os.environ, "CLIP_LOAD_TEST_MODEL": str(model), "CLIP_LOAD_TEST_SECONDS": str(seconds),
           "CLIP_LOAD_TEST_REPORT": str(report), "GUNICORN_CMD_ARGS": "", **extra_env}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                           "tests/e2e/test_load.py"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=seconds + 900)
    prefix.with_suffix(".log").write_text(done.stdout + done.stderr)
    if not report.is_file():
        return {"error": f"the load test wrote no report (exit {done.returncode}); see {prefix}.log"}
    figures = json.loads(report.read_text())
    figures["test_passed"] = done.returncode == 0  # False: some request hung, was reset or got a slow 503
    return figures
