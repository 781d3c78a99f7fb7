"""The indexer with the tiny model on both stores (Qdrant Edge; a server's, through qdrant-client): the vectors the
service makes, reruns that only do what changed, prune, interruption, manifests with the backend's ids, bad images,
and the store's refusals."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from clip_vectorize.errors import ModelLoadError
from clip_vectorize.gallery.engines.local import LocalEngine
from clip_vectorize.gallery.errors import SourceError, StoreError
from clip_vectorize.gallery.indexing import IndexOptions, index
from clip_vectorize.gallery.sources import list_source
from clip_vectorize.url_fetch import UrlPolicy
from support.assertions import cosine
from support.gallery import CountingLoader, SilentProgress, open_test_store, points, run_index, write_photos
from support.images import encode_image_bytes, photo_like


@pytest.fixture(params=["edge", "server"])
def store(tmp_path, request):
    """Every test on both stores: Qdrant Edge (embedded) and a server's (through qdrant-client)."""
    store = open_test_store(tmp_path, kind=request.param)
    yield store
    store.close()


@pytest.fixture
def loader(tiny_encoder):
    return CountingLoader(tiny_encoder)


def test_a_folder_is_indexed_with_the_services_own_vectors_and_bookkeeping_payload(tmp_path, store, loader,
                                                                                  tiny_encoder):
    photos = write_photos(tmp_path / "photos", 10)

    summary = run_index(tmp_path / "photos", store, loader)

    assert (summary.indexed, summary.unchanged, summary.skipped) == (10, 0, [])
    stored = points(store)
    assert len(stored) == 10
    by_path = {payload["path"]: (payload, vector) for payload, vector in stored.values()}
    for path in photos:
        payload, vector = by_path[str(path)]
        expected = tiny_encoder.encode_images([path.read_bytes()])[0]
        assert cosine(vector, expected) >= 0.9999
        assert payload["image_id"] == path.relative_to(tmp_path / "photos").as_posix()
        assert payload["model"] == "tiny-clip" and payload["source"] == str((tmp_path / "photos").resolve())
        assert payload["file_size"] == path.stat().st_size and len(payload["content_hash"]) == 32
    assert all(len(vector) == tiny_encoder.dimension for _, vector in stored.values())
    with pytest.raises(StoreError, match=f"holds {tiny_encoder.dimension}-d vectors"):
        store.ensure_collection(tiny_encoder.dimension + 1)


def test_a_rerun_with_nothing_changed_loads_no_model_and_duplicates_nothing(tmp_path, store, loader):
    write_photos(tmp_path / "photos", 6)
    run_index(tmp_path / "photos", store, loader)
    before = points(store)

    again = CountingLoader(loader.encoder)
    summary = run_index(tmp_path / "photos", store, again)

    assert again.calls == 0, "the model was loaded for a run with nothing to encode"
    assert (summary.indexed, summary.unchanged, summary.reused) == (0, 6, 0)
    assert points(store).keys() == before.keys()


def test_added_renamed_and_deleted_files_are_all_that_a_pruning_rerun_changes(tmp_path, store, loader):
    folder = tmp_path / "photos"
    photos = write_photos(folder, 8)
    run_index(folder, store, loader)
    before = points(store)

    write_photos(folder, 1, first_seed=100)  # added
    renamed = photos[0].with_name("renamed.jpg")
    photos[0].rename(renamed)
    photos[1].unlink()  # deleted
    summary = run_index(folder, store, loader, prune=True)

    assert (summary.indexed, summary.reused, summary.deleted, summary.unchanged) == (1, 1, 2, 6)
    after = points(store)
    assert len(after) == 8
    assert {str(payload["path"]) for payload, _ in after.values()} == {str(p) for p in folder.rglob("*.jpg")}
    untouched = set(before) & set(after)
    assert len(untouched) == 6 and all(np.array_equal(before[i][1], after[i][1]) for i in untouched)
    renamed_vector = next(vector for payload, vector in after.values() if payload["path"] == str(renamed))
    assert cosine(renamed_vector, before[next(i for i in before if i not in after and before[i][0]["path"]
                                              == str(photos[0]))][1]) >= 0.9999999


def test_without_prune_points_of_removed_files_stay(tmp_path, store, loader):
    photos = write_photos(tmp_path / "photos", 3)
    run_index(tmp_path / "photos", store, loader)
    photos[0].unlink()
    summary = run_index(tmp_path / "photos", store, loader)
    assert summary.deleted == 0 and len(points(store)) == 3


def test_prune_leaves_other_sources_points_alone(tmp_path, store, loader):
    write_photos(tmp_path / "a", 2)
    write_photos(tmp_path / "b", 2, first_seed=10)
    run_index(tmp_path / "a", store, loader)
    run_index(tmp_path / "b", store, loader, prune=True)
    assert len(points(store)) == 4


def test_a_changed_file_is_encoded_again(tmp_path, store, loader):
    photos = write_photos(tmp_path / "photos", 3)
    run_index(tmp_path / "photos", store, loader)
    photos[0].write_bytes(encode_image_bytes(photo_like(96, 72, seed=999)))
    os.utime(photos[0], ns=(1, 1))  # even with an older mtime: the size and mtime no longer match
    summary = run_index(tmp_path / "photos", store, loader)
    assert (summary.indexed, summary.unchanged) == (1, 2)


class InterruptAfter:
    """An encoder that behaves like Ctrl-C after `count` images."""

    def __init__(self, encoder, count: int) -> None:
        self.encoder, self.left = encoder, count
        self.dimension, self.precision, self.model_name = encoder.dimension, encoder.precision, encoder.model_name

    def encode_images(self, images):
        self.left -= 1
        if self.left < 0:
            raise KeyboardInterrupt
        return self.encoder.encode_images(images)


def test_an_interrupted_run_keeps_its_written_batches_and_the_rerun_finishes_without_duplicates(
        tmp_path, store, tiny_encoder):
    write_photos(tmp_path / "photos", 40)
    with pytest.raises(KeyboardInterrupt):
        run_index(tmp_path / "photos", store, CountingLoader(InterruptAfter(tiny_encoder, 20)), upsert_batch=8)
    written = len(points(store))
    assert 8 <= written <= 20, written  # whole batches only: at most the batch in flight is lost

    summary = run_index(tmp_path / "photos", store, CountingLoader(tiny_encoder))

    assert summary.unchanged == written and summary.indexed == 40 - written
    assert len(points(store)) == 40


def test_a_manifests_integer_ids_are_the_point_ids_with_its_columns_in_the_payload(tmp_path, store, loader):
    photos = write_photos(tmp_path / "photos", 3)
    manifest = tmp_path / "gallery.csv"
    manifest.write_text("image_id,path,brand\n" + "".join(
        f"{1000 + i},{p.relative_to(tmp_path)},brand-{i}\n" for i, p in enumerate(photos)))

    run_index(manifest, store, loader)

    stored = points(store)
    assert sorted(stored) == [1000, 1001, 1002]
    assert stored[1001][0]["image_id"] == 1001 and stored[1001][0]["brand"] == "brand-1"
    assert stored[1001][0]["path"] == str(photos[1])


def test_an_edited_manifest_column_updates_the_payload(tmp_path, store, loader):
    photos = write_photos(tmp_path / "photos", 1)
    manifest = tmp_path / "gallery.csv"
    manifest.write_text(f"image_id,path,brand\n1,{photos[0]},BMW\n")
    run_index(manifest, store, loader)
    manifest.write_text(f"image_id,path,brand\n1,{photos[0]},Audi\n")
    summary = run_index(manifest, store, loader)
    assert summary.indexed + summary.reused == 1
    assert points(store)[1][0]["brand"] == "Audi"


def bomb_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(buffer, "PNG")  # 100 MP (limit 64 MP) of one colour: a tiny file
    return buffer.getvalue()


def test_a_removed_manifest_column_leaves_the_payload(tmp_path, store, loader):
    photos = write_photos(tmp_path / "photos", 1)
    manifest = tmp_path / "gallery.csv"
    manifest.write_text(f"image_id,path,brand,body\n1,{photos[0]},BMW,SUV\n")
    run_index(manifest, store, loader)
    manifest.write_text(f"image_id,path,brand,body\n1,{photos[0]},BMW,\n")  # emptied
    run_index(manifest, store, loader)
    assert "body" not in points(store)[1][0]


def test_copies_of_one_new_image_in_one_run_share_a_vector_without_failing(tmp_path, store, loader):
    photos = write_photos(tmp_path / "photos", 1)
    for copy in range(12):  # more than the threads: some copies find their twin still pending
        (tmp_path / "photos" / f"copy-{copy}.jpg").write_bytes(photos[0].read_bytes())
    summary = run_index(tmp_path / "photos", store, loader, upsert_batch=64)
    assert summary.indexed + summary.reused == 13 and not summary.skipped
    vectors = [vector for _, vector in points(store).values()]
    assert all(cosine(vector, vectors[0]) >= 0.9999999 for vector in vectors)


def test_prune_refuses_to_empty_a_source_that_lists_nothing(tmp_path, store, loader):
    photos = write_photos(tmp_path / "photos", 2)
    run_index(tmp_path / "photos", store, loader)
    for photo in photos:
        photo.unlink()
    with pytest.raises(SourceError, match="lists no images, so --prune would delete all 2 of its points"):
        run_index(tmp_path / "photos", store, loader, prune=True)
    assert len(points(store)) == 2


def test_a_model_that_fails_to_load_is_tried_once(tmp_path, store):
    write_photos(tmp_path / "photos", 6)
    calls = []

    def failing_loader():
        calls.append(1)
        raise ModelLoadError("cannot load CLIP model: broken")

    failing_loader.encoder = type("Named", (), {"model_name": "tiny-clip"})()
    with pytest.raises(ModelLoadError):
        run_index(tmp_path / "photos", store, failing_loader)
    assert len(calls) == 1


def test_bad_images_are_skipped_with_their_reasons_and_the_rest_indexed(tmp_path, store, tiny_settings, tiny_encoder):
    folder = tmp_path / "photos"
    write_photos(folder, 2)
    good = (folder / "side" / "car-0000.jpg").read_bytes()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (folder / "text.png").write_bytes(b"this is not an image")
    (folder / "bomb.png").write_bytes(bomb_png())
    manifest = tmp_path / "gallery.jsonl"
    manifest.write_text("\n".join([
        *(f'{{"image_id": {i}, "path": "{p}"}}' for i, p in enumerate(sorted(folder.rglob("*.*")))),
        '{"image_id": 90, "url": "http://127.0.0.1:9/private.jpg"}',  # loopback: refused by the SSRF policy
        '{"image_id": 91, "url": "http://allowed.invalid/gone.jpg"}',  # allowed, but does not resolve
        f'{{"image_id": 92, "path": "{folder}/missing.jpg"}}']))
    policy = UrlPolicy(frozenset({"allowed.invalid"}), connect_timeout_s=1, read_timeout_s=1)

    summary = run_index(manifest, store, CountingLoader(tiny_encoder), policy=policy)

    reasons = {skip.location.rsplit("/", 1)[-1]: skip.reason for skip in summary.skipped}
    assert reasons == {"empty.jpg": "empty file", "truncated.jpg": "not a readable image",
                       "text.png": "not a readable image", "bomb.png": "too many pixels",
                       "private.jpg": "URL refused", "gone.jpg": "URL unreachable", "missing.jpg": "unreadable file"}
    assert summary.indexed == 2 and len(points(store)) == 2


def test_a_run_where_every_image_is_bad_writes_nothing_and_ends_normally(tmp_path, store, loader):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"not an image")
    summary = run_index(tmp_path / "photos", store, loader)
    assert (summary.indexed, [skip.reason for skip in summary.skipped]) == (0, ["not a readable image"])
    assert store.count() == 0


def test_a_collection_of_another_model_is_refused_with_what_to_do(tmp_path, store, loader):
    write_photos(tmp_path / "photos", 1)
    run_index(tmp_path / "photos", store, loader)
    options = IndexOptions(model="another-clip")
    with pytest.raises(StoreError, match="holds vectors of tiny-clip, not of another-clip.*--recreate"):
        index(list_source(tmp_path / "photos"), store, options, LocalEngine(loader, UrlPolicy(), 2), SilentProgress())


def test_a_collection_of_another_dimension_is_refused(store):
    store.ensure_collection(512)
    with pytest.raises(StoreError, match="holds 512-d vectors; this model makes 32-d ones"):
        store.ensure_collection(32)


def test_a_store_in_use_by_another_process_is_one_clear_line(tmp_path, store):
    with pytest.raises(StoreError, match="in use by another process .*QDRANT_URL"):
        type(store)(store.config)  # a second process would open it the same way
