"""The indexer as a person runs it: `python -m clip_vectorize.gallery index SOURCE` with the tiny model and the
embedded store, from another working directory; what it prints, its exit codes, and a rerun that finds nothing."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.gallery import open_test_store, points, write_photos

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def indexer(tiny_model_dir: Path, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("CLIP_", "QDRANT_"))}
    environment.update({"CLIP_MODEL": str(tiny_model_dir), "DEVICE": "cpu", "HF_HUB_OFFLINE": "1",
                        "CLIP_CACHE_DIR": str(tiny_model_dir.parent / "cache"), "PYTHONPATH": str(REPO), **env})
    return subprocess.run([sys.executable, "-m", "clip_vectorize.gallery", "index", *args], cwd=cwd,
                          env=environment, capture_output=True, text=True, timeout=240)


def test_one_command_indexes_a_folder_and_a_rerun_finds_nothing_to_do(tiny_model_dir, tmp_path):
    write_photos(tmp_path / "photos", 12)
    broken = tmp_path / "photos" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really")

    first = indexer(tiny_model_dir, tmp_path, "photos", "--quiet")

    assert first.returncode == 0, first.stderr
    assert "indexed 12" in first.stderr and "skipped 1" in first.stderr, first.stderr
    assert "not a readable image: 1; a bad file is tried again once it changes; the list is in skipped-images.tsv" \
        in first.stderr, first.stderr
    assert "broken.jpg\tnot a readable image" in (tmp_path / "skipped-images.tsv").read_text()
    assert (tmp_path / "qdrant_data").is_dir()  # QDRANT_PATH's default, in the working directory

    second = indexer(tiny_model_dir, tmp_path, "photos", "--quiet")  # the bad file is still there, unchanged

    assert second.returncode == 0, second.stderr
    assert "indexed 0" in second.stderr and "unchanged 12" in second.stderr and "skipped 1" in second.stderr
    assert "1 unchanged since an earlier run skipped them: not read again" in second.stderr, second.stderr
    assert "loading the model" not in second.stderr
    store = open_test_store(tmp_path)
    try:
        assert len(points(store)) == 12
    finally:
        store.close()

    write_photos(tmp_path / "fixed", 1, first_seed=50)[0].replace(broken)  # the bad file replaced by a good one
    third = indexer(tiny_model_dir, tmp_path, "photos", "--quiet")

    assert third.returncode == 0, third.stderr
    assert "indexed 1" in third.stderr and "unchanged 12" in third.stderr and "skipped 0" in third.stderr


def test_what_cannot_run_exits_1_with_one_line(tiny_model_dir, tmp_path):
    missing = indexer(tiny_model_dir, tmp_path, "no-such-folder")
    assert missing.returncode == 1
    assert "cannot index: " in missing.stderr and "does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr

    write_photos(tmp_path / "photos", 1)
    holder = open_test_store(tmp_path)  # the embedded store: one process at a time
    try:
        locked = indexer(tiny_model_dir, tmp_path, "photos")
    finally:
        holder.close()
    assert locked.returncode == 1 and "in use by another process" in locked.stderr, locked.stderr
    assert "Traceback" not in locked.stderr


def test_a_qdrant_server_url_that_does_not_answer_is_one_line(tiny_model_dir, tmp_path):
    write_photos(tmp_path / "photos", 1)
    result = indexer(tiny_model_dir, tmp_path, "photos", QDRANT_URL="http://127.0.0.1:9")
    assert result.returncode == 1 and "cannot reach Qdrant at http://127.0.0.1:9" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


PROBE = Path(__file__).resolve().parents[1] / "support" / "upsert_probe"


def written_before(probe: Path) -> int:
    """Points whose write had returned, as the probe in the indexer's process counted them."""
    try:
        return sum(int(line) for line in probe.read_text().split())
    except FileNotFoundError:
        return 0


def test_a_killed_run_loses_at_most_its_batch_and_the_rerun_finishes_without_duplicates_or_gaps(
        tiny_model_dir, tmp_path):
    total = 300
    write_photos(tmp_path / "photos", total, size=(640, 480))  # big enough to take a few seconds on 2 cores
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("CLIP_", "QDRANT_"))}
    environment.update({"CLIP_MODEL": str(tiny_model_dir), "DEVICE": "cpu", "HF_HUB_OFFLINE": "1",
                        "CLIP_CACHE_DIR": str(tiny_model_dir.parent / "cache"), "PYTHONPATH": f"{PROBE}:{REPO}",
                        "UPSERT_PROBE": str(tmp_path / "written")})
    run = subprocess.Popen([sys.executable, "-m", "clip_vectorize.gallery", "index", "photos", "--quiet",
                            "--batch", "8"], cwd=tmp_path, env=environment, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while written_before(tmp_path / "written") < 16 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    run.send_signal(signal.SIGKILL)  # mid-run: Qdrant Edge's write-ahead log has the points, flushed or not
    run.wait()
    written = written_before(tmp_path / "written")
    if written >= total:
        pytest.skip("the run finished before it could be killed")
    assert written >= 16

    rerun = indexer(tiny_model_dir, tmp_path, "photos", "--quiet")

    assert rerun.returncode == 0, rerun.stderr
    kept, encoded = (int(re.search(rf"{word} (\d+)", rerun.stderr).group(1)) for word in ("unchanged", "indexed"))
    assert written <= kept <= written + 8, rerun.stderr  # every returned write kept; at most the batch in flight more
    assert kept + encoded == total, rerun.stderr
    store = open_test_store(tmp_path)
    try:
        assert sorted(payload["image_id"] for payload, _ in points(store).values()) == sorted(
            p.relative_to(tmp_path / "photos").as_posix() for p in (tmp_path / "photos").rglob("*.jpg"))
    finally:
        store.close()
