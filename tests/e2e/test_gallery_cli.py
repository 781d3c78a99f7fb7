"""The indexer as a person runs it: `python -m clip_vectorize.gallery index SOURCE` with the tiny model and the
embedded store, from another working directory; what it prints, its exit codes, and a rerun that finds nothing."""

from __future__ import annotations

import os
import signal
import sqlite3
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
    holder = open_test_store(tmp_path)  # local mode: one process at a time
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


def stored_count(tmp_path: Path) -> int:
    """Points the embedded store has committed, read from its SQLite file while the indexer holds the store."""
    database = tmp_path / "qdrant_data" / "collection" / "car_images" / "storage.sqlite"
    if not database.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1) as connection:
            return connection.execute("SELECT count(*) FROM points").fetchone()[0]
    except sqlite3.Error:
        return 0  # the table is not there yet


def test_a_killed_run_loses_at_most_its_batch_and_the_rerun_finishes_without_duplicates_or_gaps(
        tiny_model_dir, tmp_path):
    total = 300
    write_photos(tmp_path / "photos", total, size=(640, 480))  # big enough to take a few seconds on 2 cores
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("CLIP_", "QDRANT_"))}
    environment.update({"CLIP_MODEL": str(tiny_model_dir), "DEVICE": "cpu", "HF_HUB_OFFLINE": "1",
                        "CLIP_CACHE_DIR": str(tiny_model_dir.parent / "cache"), "PYTHONPATH": str(REPO)})
    run = subprocess.Popen([sys.executable, "-m", "clip_vectorize.gallery", "index", "photos", "--quiet",
                            "--batch", "8"], cwd=tmp_path, env=environment, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while stored_count(tmp_path) < 16 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    run.send_signal(signal.SIGKILL)
    run.wait()
    written = stored_count(tmp_path)
    if written >= total:
        pytest.skip("the run finished before it could be killed")
    assert written >= 16

    rerun = indexer(tiny_model_dir, tmp_path, "photos", "--quiet")

    assert rerun.returncode == 0, rerun.stderr
    assert f"unchanged {written}" in rerun.stderr and f"indexed {total - written}" in rerun.stderr, rerun.stderr
    store = open_test_store(tmp_path)
    try:
        assert sorted(payload["image_id"] for payload, _ in points(store).values()) == sorted(
            p.relative_to(tmp_path / "photos").as_posix() for p in (tmp_path / "photos").rglob("*.jpg"))
    finally:
        store.close()
