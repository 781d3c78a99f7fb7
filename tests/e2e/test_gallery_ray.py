"""`--engine ray` on a local Ray instance started by `ray.init()`: the same points as the in-process engine."""

from __future__ import annotations

import functools

import pytest

from clip_vectorize.gallery.__main__ import load_clip_encoder, load_image_preparer
from clip_vectorize.gallery.errors import StoreError
from clip_vectorize.gallery.indexing import IndexOptions, index
from clip_vectorize.gallery.payload import model_id
from clip_vectorize.gallery.sources import list_source
from clip_vectorize.gallery.store.base import StoreConfig
from clip_vectorize.url_fetch import UrlPolicy
from support.assertions import cosine
from support.gallery import CountingLoader, SilentProgress, open_test_store, points, run_index, write_photos

ray = pytest.importorskip("ray", reason="Ray is optional: pip install -r requirements_ray.txt")
ray_engine = pytest.importorskip("clip_vectorize.gallery.engines.ray")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_the_ray_engine_writes_the_same_points_as_the_local_engine(local_ray, tmp_path, tiny_settings, tiny_encoder):
    folder = tmp_path / "photos"
    photos = write_photos(folder, 24)
    (folder / "broken.jpg").write_bytes(b"not an image")
    for copy in range(3):  # copies within one run: encoded once, whichever reading actor gets them
        (folder / f"copy-{copy}.jpg").write_bytes(photos[0].read_bytes())
    local = open_test_store(tmp_path / "local")
    run_index(folder, local, CountingLoader(tiny_encoder))
    expected = points(local)
    local.close()

    store = open_test_store(tmp_path / "ray")
    try:
        settings = tiny_settings(batch_size=4)  # the command hands Ray these very loaders
        engine = ray_engine.RayEngine(functools.partial(load_clip_encoder, settings),
                                      functools.partial(load_image_preparer, settings), UrlPolicy(), actors=1)
        options = IndexOptions(model=model_id(tiny_encoder.model_name), upsert_batch=8)
        summary = index(list_source(folder), store, options, engine, SilentProgress())
        assert (summary.indexed, summary.reused, len(summary.skipped)) == (24, 3, 1)
        assert summary.skipped[0].reason == "not a readable image"
        produced = points(store)
        assert produced.keys() == expected.keys()
        for point_id, (payload, vector) in produced.items():
            assert payload == expected[point_id][0]
            assert cosine(vector, expected[point_id][1]) >= 0.9999

        again = index(list_source(folder), store, options, engine, SilentProgress())
        assert (again.indexed, again.unchanged, again.skipped_before) == (0, 27, 1)
    finally:
        store.close()


def test_a_ray_cluster_needs_a_qdrant_server(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    with pytest.raises(StoreError, match="needs a Qdrant server"):
        ray_engine.check_target(StoreConfig("car_images"))
    ray_engine.check_target(StoreConfig("car_images", url="http://qdrant:6333"))
