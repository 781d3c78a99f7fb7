"""An install from before Qdrant Edge, upgraded: its gallery sits in qdrant-client's local mode in QDRANT_PATH. The
service, started as users start it, moves every point into Edge at start-up, re-encodes nothing, and searches."""

from __future__ import annotations

import sys
import time

import pytest
import requests

from support.gallery import CountingLoader, open_test_store, points, run_index, write_photos
from support.service_process import start_service, stop, wait_until_healthy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

PHOTOS = 10


def test_the_service_moves_an_old_local_mode_gallery_into_edge_at_start_up_and_searches_it(
        tiny_model_dir, tiny_encoder, tmp_path):
    photos = tmp_path / "photos"
    write_photos(photos, PHOTOS)
    old = open_test_store(tmp_path, kind="server")  # qdrant-client's local mode: what QDRANT_PATH held until now
    run_index(photos, old, CountingLoader(tiny_encoder))
    before = points(old)
    old.close()

    service = start_service(tiny_model_dir, tmp_path, CLIP_VENV=sys.prefix, CLIP_GALLERY_DIR=str(photos),
                            QDRANT_PATH=str(tmp_path / "qdrant_data"), CLIP_THUMBNAIL_DIR=str(tmp_path / "thumbs"))
    try:
        wait_until_healthy(service)
        status = wait_for_the_first_run(service)
        assert (status["indexing"]["unchanged"], status["indexing"]["indexed"]) == (PHOTOS, 0), status
        assert status["points"] == PHOTOS
        assert f"moved {PHOTOS} points of the collection 'car_images' from the old local-mode store" in service.log()
        hits = requests.post(f"{service.url}/search", json={"text": "a red car", "limit": 3}, timeout=30).json()
        assert len(hits["results"]) == 3 and all(hit["id"] in before for hit in hits["results"])
    finally:
        stop(service)

    moved = open_test_store(tmp_path)
    try:
        after = points(moved)
        assert after.keys() == before.keys()
        assert all(after[i][0] == before[i][0] and (abs(after[i][1] - before[i][1]) < 1e-6).all() for i in before)
    finally:
        moved.close()


def wait_for_the_first_run(service, seconds: float = 120) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        body = requests.get(f"{service.url}/gallery/status", timeout=10).json()
        if (body.get("indexing") or {}).get("state") in ("done", "failed"):
            assert body["indexing"]["state"] == "done", body
            return body
        time.sleep(0.3)
    raise AssertionError(f"no index run ended within {seconds} s:\n{service.log_tail()}")
