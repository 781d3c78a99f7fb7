"""Image preprocessing: the fast path matches transformers' CLIPImageProcessor, and JPEG draft decoding is close."""

import numpy as np
import pytest
from transformers import CLIPImageProcessorPil

from clip_encoder import ClipEncoder
from clip_vectorize.inference.image_io import load_rgb_image
from clip_vectorize.inference.image_preprocess import ClipImageTransform
from support.assertions import cosine
from support.images import encode_image_bytes, photo_like


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    return CLIPImageProcessorPil.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize("size", [(640, 480), (300, 700), (224, 224), (1000, 230)])
def test_our_transform_equals_transformers_on_the_same_decoded_image(processor, size):
    image = photo_like(*size, seed=sum(size))
    expected = processor(images=[image], return_tensors="np")["pixel_values"][0]
    np.testing.assert_allclose(ClipImageTransform.from_processor(processor)(image), expected, atol=2e-5)


def test_jpeg_draft_decoding_keeps_the_shortest_side_at_least_twice_the_input_size():
    blob = encode_image_bytes(photo_like(4000, 3000, seed=7), quality=90)
    image = load_rgb_image(blob, 64_000_000, draft_size=448)
    assert min(image.size) >= 448 and image.size[0] < 4000


@pytest.mark.parametrize("size", [(4000, 3000), (1920, 1080), (1200, 1600), (640, 480)])
def test_fast_path_is_within_0999_cosine_of_the_exact_path_on_photos(tiny_model_dir, processor, size):
    blob = encode_image_bytes(photo_like(*size, seed=size[0]), quality=90)
    fast = ClipImageTransform.from_processor(processor)
    fast_pixels = fast(load_rgb_image(blob, 64_000_000, fast.draft_size))
    exact_pixels = processor(images=[load_rgb_image(blob, 64_000_000)], return_tensors="np")["pixel_values"][0]
    assert cosine(fast_pixels, exact_pixels) >= 0.999


def test_fast_and_exact_settings_give_nearly_the_same_vectors(tiny_settings):
    blob = encode_image_bytes(photo_like(3000, 2000, seed=11), quality=90)
    vectors = []
    for mode in ("fast", "exact"):
        encoder = ClipEncoder.load(tiny_settings(image_preprocess=mode))
        vectors.append(encoder.encode_images([blob])[0])
        encoder.close()
    assert float(vectors[0] @ vectors[1]) >= 0.999
