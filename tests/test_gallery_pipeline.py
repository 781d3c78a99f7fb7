"""The gallery pipeline's own rules, without a model: the twin rule both engines share, and a writer that gives a
twin its holder's vector whatever order the outcomes come in."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clip_vectorize.gallery.outcome import ImageOutcome
from clip_vectorize.gallery.plan import TwinClaims
from clip_vectorize.gallery.sources import Item
from clip_vectorize.gallery.store.base import IndexedPoint, NewPoint
from clip_vectorize.gallery.summary import Summary
from clip_vectorize.gallery.writing import PointWriter
from support.gallery import open_test_store


def stored(point_id, content):
    return IndexedPoint(point_id, {"content_hash": content, "model": "m"})


def test_the_first_image_with_a_content_claims_it_and_later_copies_are_its_twins():
    claims = TwinClaims({})
    assert claims.claim("aaa", 1) is None  # encode it
    assert claims.claim("aaa", 2) == 1
    assert claims.claim("aaa", 3) == 1


def test_a_stored_point_holds_its_content_from_the_start_and_is_its_own_twin_when_read_unchanged():
    claims = TwinClaims.of_points({7: stored(7, "aaa")}, "m")
    assert claims.claim("aaa", 8) == 7
    assert claims.claim("aaa", 7) == 7  # unchanged: the writer compares payloads, nothing is encoded


def test_a_point_read_with_new_content_gives_up_its_old_one():
    claims = TwinClaims.of_points({7: stored(7, "aaa")}, "m")
    assert claims.claim("bbb", 7) is None  # rewritten: encode it
    assert claims.claim("aaa", 8) is None  # nobody holds the old content any more


def test_points_of_another_model_hold_nothing():
    assert TwinClaims.of_points({7: IndexedPoint(7, {"content_hash": "aaa", "model": "other"})}, "m").claim(
        "aaa", 8) is None


def outcome(point_id: int, content: str, **kind) -> ImageOutcome:
    return ImageOutcome(Item(point_id, path=Path(f"/photos/{point_id}.jpg")), content, **kind)


def test_a_twin_that_arrives_before_its_holder_waits_for_it_and_gets_its_vector(tmp_path):
    store = open_test_store(tmp_path)
    try:
        summary = Summary("/photos")
        writer = PointWriter(store, "/photos", "m", batch=8, existing={}, summary=summary)
        writer.add(outcome(2, "aaa", twin=1))  # out of order, as Ray may deliver them
        writer.add(outcome(1, "aaa", vector=np.array([0.6, 0.8], np.float32)))
        writer.finish()
        vectors = store.vectors([1, 2])
        assert (summary.indexed, summary.reused, summary.skipped) == (1, 1, [])
        assert np.allclose(vectors[1], [0.6, 0.8]) and np.allclose(vectors[2], [0.6, 0.8])
    finally:
        store.close()


def test_a_twin_whose_holder_never_comes_is_skipped_for_the_next_run(tmp_path):
    store = open_test_store(tmp_path)
    try:
        summary = Summary("/photos")
        writer = PointWriter(store, "/photos", "m", batch=8, existing={}, summary=summary)
        store.ensure_collection(2)
        store.upsert([NewPoint(9, [1.0, 0.0], {})])
        writer.add(outcome(2, "aaa", twin=1))
        writer.finish()
        assert [skip.reason for skip in summary.skipped] == ["changed while indexing"]
        assert store.vectors([2]) == {}
    finally:
        store.close()
