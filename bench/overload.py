"""The overload section: our service on the full-size model at twice its capacity, stock gthread beside ours.

The load generator is the project's own load test (tests/e2e/test_load.py: open loop, texts with one image
upload in ten, every 200's vector checked), pointed at the benchmark's model with the service's defaults. It runs
twice: with gunicorn's stock gthread worker (`GUNICORN_CMD_ARGS=--worker-class gthread`), where a request that
arrives with every thread busy waits in the pool's queue, and as deployed (QuickRefusalWorker).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.model import REPO_ROOT

SECTION = "overload"  # the section's key in the results, and its name for `run_bench.py --only`
WORKERS = {"stock-gthread": "--worker-class gthread", "quick-refusal": ""}


def measure(model: Path, seconds: float, results_dir: Path, stamp: str) -> dict:
    """{worker: the load test's report}, or {worker: {"error": ...}} when it produced none."""
    return {name: _run(model, seconds, results_dir / f"{stamp}-overload-{name}", args)
            for name, args in WORKERS.items()}


def _run(model: Path, seconds: float, prefix: Path, gunicorn_args: str) -> dict:
    report = prefix.with_suffix(".json")
    env = {**os.environ, "CLIP_LOAD_TEST_MODEL": str(model), "CLIP_LOAD_TEST_SECONDS": str(seconds),
           "CLIP_LOAD_TEST_REPORT": str(report), "GUNICORN_CMD_ARGS": gunicorn_args}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                           "tests/e2e/test_load.py"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=seconds + 900)
    prefix.with_suffix(".log").write_text(done.stdout + done.stderr)
    if not report.is_file():
        return {"error": f"the load test wrote no report (exit {done.returncode}); see {prefix}.log"}
    figures = json.loads(report.read_text())
    figures["test_passed"] = done.returncode == 0  # False: some request hung, was reset or got a slow 503
    return figures
