"""The stores themselves: the old local-mode store moved into Qdrant Edge once with nothing lost (or left intact when
the move fails), the embedded store copied to a server's, one process per embedded store, and the search index
built in a child process and swapped in without changing what searches find."""

from __future__ import annotations

import logging
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from clip_vectorize.gallery.errors import StoreError
from clip_vectorize.gallery.payload import FileStat
from clip_vectorize.gallery.store import copying, edge, open_store
from clip_vectorize.gallery.store.base import NewPoint, SearchQuery, SkipRecord, StoreConfig
from clip_vectorize.gallery.store.filters import parse_filter
from clip_vectorize.gallery.store.server import ServerStore
from support.gallery import points

DIMENSION = 8
REPO_ROOT = Path(__file__).resolve().parents[1]


def random_points(count: int, seed: int = 0) -> list[NewPoint]:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(count, DIMENSION))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [i if i % 2 else str(uuid.UUID(int=i + 1)) for i in range(count)]  # integer and uuid ids, as indexed
    return [NewPoint(point_id, vector.tolist(), {"image_id": point_id, "brand": ["BMW", "Audi", "NIO"][i % 3],
                                                 "year": 2015 + i % 10, "model": "tiny-clip", "source": "/photos"})
            for i, (point_id, vector) in enumerate(zip(ids, vectors))]


def local_mode_store(path, written: list[NewPoint]) -> StoreConfig:
    """What every install had before Edge: qdrant-client's local mode in QDRANT_PATH."""
    config = StoreConfig("car_images", path=str(path))
    old = ServerStore(config)
    old.ensure_collection(DIMENSION)
    old.upsert(written)
    old.close()
    return config


def test_an_old_local_mode_store_moves_into_edge_once_with_every_point_and_payload(tmp_path, caplog):
    written = random_points(1500)  # more than a scroll page
    config = local_mode_store(tmp_path / "qdrant_data", written)
    before = (tmp_path / "qdrant_data" / "collection" / "car_images" / "storage.sqlite").read_bytes()

    with caplog.at_level(logging.WARNING):
        store = open_store(config)
    try:
        moved = points(store)
        assert isinstance(store, edge.EdgeStore) and len(moved) == 1500
        for point in written:
            payload, vector = moved[point.id]
            assert payload == point.payload and np.allclose(vector, point.vector, atol=1e-6)
        assert "moved 1500 points" in caplog.text and "nothing re-encoded" in caplog.text
    finally:
        store.close()
    assert (tmp_path / "qdrant_data" / "collection" / "car_images" / "storage.sqlite").read_bytes() == before

    caplog.clear()
    again = open_store(config)  # the move is done once
    again.close()
    assert "moved" not in caplog.text


def test_a_failed_move_leaves_the_old_store_intact_says_so_and_is_tried_again(tmp_path, monkeypatch):
    written = random_points(300)
    config = local_mode_store(tmp_path / "qdrant_data", written)
    real_upsert = edge.EdgeStore.upsert

    def disk_full(self, batch):
        real_upsert(self, batch[:10])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(edge.EdgeStore, "upsert", disk_full)
    with pytest.raises(StoreError, match="No space left on device. The old store is intact; nothing was lost"):
        open_store(config)
    monkeypatch.undo()

    old = ServerStore(config)
    assert old.count() == 300
    old.close()
    store = open_store(config)  # the next start moves it all
    try:
        assert store.count() == 300
    finally:
        store.close()


def test_the_embedded_store_copies_to_a_servers_collection_with_the_same_ids_vectors_and_payloads(tmp_path):
    written = random_points(40)
    source = open_store(StoreConfig("car_images", path=str(tmp_path / "edge")))
    target = ServerStore(StoreConfig("gallery", path=str(tmp_path / "server")))  # the server's calls, on local mode
    try:
        source.ensure_collection(DIMENSION)
        source.upsert(written)
        bad = SkipRecord(99, "/photos", "/photos/bad.jpg", "not a readable image", "truncated", FileStat(10, 20))
        source.remember_skipped([bad])

        assert copying.copy_points(source, target) == 40

        copied = points(target)
        assert copied.keys() == points(source).keys()
        assert all(copied[p.id][0] == p.payload and np.allclose(copied[p.id][1], p.vector) for p in written)
        assert target.skipped_files() == {99: bad}
    finally:
        source.close()
        target.close()


def test_copy_to_server_refuses_an_unreachable_server_in_one_line(tmp_path):
    store = open_store(StoreConfig("car_images", path=str(tmp_path / "qdrant_data")))
    store.ensure_collection(DIMENSION)
    store.upsert(random_points(3))
    store.close()
    done = subprocess.run([sys.executable, "-m", "clip_vectorize.gallery", "copy-to-server", "http://127.0.0.1:9"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT), "HOME": str(tmp_path)})
    assert done.returncode == 1 and "cannot copy: cannot reach Qdrant at http://127.0.0.1:9" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_second_process_on_the_embedded_store_gets_one_line_naming_the_way_out(tmp_path):
    config = StoreConfig("car_images", path=str(tmp_path / "qdrant_data"))
    holder = open_store(config)
    try:
        script = ("import sys; from clip_vectorize.gallery.store import open_store, base\n"
                  f"open_store(base.StoreConfig('car_images', path={str(tmp_path / 'qdrant_data')!r}))")
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                              cwd=REPO_ROOT)
        assert "is in use by another process" in done.stderr and "POST /gallery/reindex" in done.stderr
    finally:
        holder.close()


def test_the_search_index_is_built_in_a_child_and_swapped_in_finding_what_exact_search_found(tmp_path, monkeypatch):
    monkeypatch.setattr(edge, "EXACT_UP_TO", 100)
    monkeypatch.setattr(edge, "UNINDEXED_UP_TO", 50)
    monkeypatch.setattr(edge, "INDEXING_THRESHOLD_KB", 1)  # tiny segments get an index too
    written = random_points(3000)
    store = open_store(StoreConfig("car_images", path=str(tmp_path / "qdrant_data")))
    try:
        store.ensure_collection(DIMENSION)
        store.upsert(written)
        query, condition = written[7].vector, SearchQuery(limit=10, condition=parse_filter(
            {"must": [{"key": "brand", "match": {"value": "NIO"}}]}))
        exact = [hit.id for hit in store.nearest(query, condition)]

        assert store.build_search_index()

        info = store.shard.info()
        assert info.indexed_vectors_count > 0 and info.points_count == 3000
        assert [hit.id for hit in store.nearest(query, condition)] == exact
        assert not store.build_search_index()  # nothing new outside the index
        store.upsert(random_points(5, seed=1))
        assert store.count() == 3000  # the new ones overwrite ids 0..4: the swapped-in shard takes writes
    finally:
        store.close()


def test_an_empty_store_builds_no_index_and_says_so(tmp_path):
    store = open_store(StoreConfig("car_images", path=str(tmp_path / "qdrant_data")))
    try:
        assert store.build_search_index() is False
    finally:
        store.close()


def test_a_shard_left_under_its_retired_name_by_a_killed_swap_is_restored_at_open(tmp_path):
    config = StoreConfig("car_images", path=str(tmp_path / "qdrant_data"))
    store = open_store(config)
    store.ensure_collection(DIMENSION)
    store.upsert(random_points(5))
    store.close()
    shard = tmp_path / "qdrant_data" / "edge" / "car_images"
    shard.rename(shard.with_name("car_images.old"))  # killed between the swap's two renames

    again = open_store(config)
    try:
        assert again.count() == 5
    finally:
        again.close()


def test_a_failed_index_build_leaves_exact_search_and_the_run_succeeds(tmp_path, monkeypatch):
    monkeypatch.setattr(edge, "EXACT_UP_TO", 10)
    monkeypatch.setattr(edge, "UNINDEXED_UP_TO", 5)

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(edge, "build_copy", disk_full)
    store = open_store(StoreConfig("car_images", path=str(tmp_path / "qdrant_data")))
    try:
        store.ensure_collection(DIMENSION)
        store.upsert(random_points(50))
        assert store.build_search_index() is False
        assert len(store.nearest(random_points(1)[0].vector, SearchQuery(limit=5))) == 5
    finally:
        store.close()
