"""The text-vector cache: repeated queries skip the model; size 0 turns it off."""

import numpy as np

from clip_encoder import ClipEncoder
from clip_vectorize.inference.text_cache import LruCache


def test_a_repeated_text_is_served_from_the_cache_without_a_forward_pass(tiny_encoder, monkeypatch):
    passes: list[int] = []
    monkeypatch.setattr(tiny_encoder.text.batcher, "on_batch", passes.append)
    first = tiny_encoder.encode_texts(["silver Audi wagon"]).vectors[0]
    hits = tiny_encoder.text_cache_counts()["clip"].hits
    again = tiny_encoder.encode_texts(["silver Audi wagon"]).vectors[0]
    assert np.array_equal(first, again)
    assert len(passes) == 1 and tiny_encoder.text_cache_counts()["clip"].hits == hits + 1


def test_a_batch_mixing_cached_and_new_texts_keeps_input_order(tiny_encoder):
    cached = tiny_encoder.encode_texts(["blue Mini"]).vectors[0]
    result = tiny_encoder.encode_texts(["green Jeep", "blue Mini", "green Jeep"])
    assert np.array_equal(result.vectors[1], cached)
    assert np.array_equal(result.vectors[0], result.vectors[2])


def test_cache_size_zero_keeps_nothing(tiny_settings):
    encoder = ClipEncoder.load(tiny_settings(text_cache_size=0))
    encoder.encode_texts(["red car", "red car"])
    encoder.encode_texts(["red car"])
    assert encoder.text_cache_counts()["clip"].hits == 0 and encoder.text.cache.get("red car") is None
    encoder.close()


def test_the_least_recently_used_entry_is_evicted_first():
    cache = LruCache(capacity=2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "b" is now the oldest
    cache.put("c", 3)
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3
