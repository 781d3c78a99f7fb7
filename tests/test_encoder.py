"""The encoder against a real (tiny) CLIP checkpoint loaded through the real loading code."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

from clip_encoder import ClipEncoder
from clip_vectorize.errors import InvalidImageError, ModelLoadError
from clip_vectorize.inference.model_loading import pick_device
from clip_vectorize.inference.model_source import resolve_model_source
from config import DEFAULT_MODEL, Settings
from support.assertions import rowwise_cosine
from support.images import encode_image_bytes, photo_like
from support.models import CONTEXT_LENGTH, PROJECTION_DIM

TEXTS = ["红色的宝马SUV", "a red car", "hello", "a photo of a blue sports car at night", "🚗 SUV rouge", "x"]
LONG_TEXT = "a very long description of a car " * 40


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    """What transformers itself gives: CLIPModel features with CLIPProcessor preprocessing, L2-normalized."""
    model = CLIPModel.from_pretrained(tiny_model_dir).eval()
    processor = CLIPProcessor.from_pretrained(tiny_model_dir)

    def texts(items):
        inputs = processor(text=items, return_tensors="pt", padding=True, truncation=True, max_length=CONTEXT_LENGTH)
        with torch.no_grad():
            features = model.get_text_features(**inputs).pooler_output
        return torch.nn.functional.normalize(features, dim=-1).numpy()

    def images(items):
        inputs = processor(images=items, return_tensors="pt")
        with torch.no_grad():
            features = model.get_image_features(**inputs).pooler_output
        return torch.nn.functional.normalize(features, dim=-1).numpy()

    return texts, images


def test_text_vectors_match_transformers_reference(tiny_encoder, reference):
    ours = tiny_encoder.encode_texts(TEXTS + [LONG_TEXT]).vectors
    assert rowwise_cosine(ours, reference[0](TEXTS + [LONG_TEXT])).min() >= 0.9999


def test_image_vectors_match_transformers_reference(tiny_encoder, reference):
    images = [photo_like(320, 240, seed=1), photo_like(200, 500, seed=2), photo_like(33, 33, seed=3)]
    ours = tiny_encoder.encode_images([encode_image_bytes(image, "PNG") for image in images])
    assert rowwise_cosine(np.stack(ours), reference[1](images)).min() >= 0.9999


def test_vectors_are_unit_length_float32_of_the_configured_dimension(tiny_encoder):
    vectors = tiny_encoder.encode_texts(TEXTS).vectors
    assert vectors.dtype == np.float32
    assert vectors.shape == (len(TEXTS), PROJECTION_DIM) == (len(TEXTS), tiny_encoder.dimension)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_a_text_encodes_the_same_alone_and_in_a_padded_batch(tiny_encoder):
    alone = tiny_encoder.encode_texts(["hello"]).vectors[0]
    in_batch = tiny_encoder.encode_texts([LONG_TEXT, "hello", "x"]).vectors[1]
    assert float(alone @ in_batch) >= 0.99999


def test_batches_larger_than_batch_size_are_split_and_keep_input_order(tiny_encoder):
    texts = [f"car number {n}" for n in range(11)]  # batch_size is 4: three forward passes
    together = tiny_encoder.encode_texts(texts).vectors
    one_by_one = np.concatenate([tiny_encoder.encode_texts([text]).vectors for text in texts])
    assert rowwise_cosine(together, one_by_one).min() >= 0.99999


def test_text_longer_than_77_tokens_is_truncated_and_flagged(tiny_encoder):
    result = tiny_encoder.encode_texts([LONG_TEXT, "short"])
    assert result.truncated == [True, False]
    (tokens,), _ = tiny_encoder.text.tokenize([LONG_TEXT])
    assert len(tokens) == CONTEXT_LENGTH and tokens[-1] == tiny_encoder.text.model.tokenizer.eos_token_id


def test_one_undecodable_image_does_not_fail_the_others(tiny_encoder):
    good = encode_image_bytes(photo_like(seed=4))
    first, refused, second = tiny_encoder.encode_images([good, b"not an image", good])
    assert isinstance(refused, InvalidImageError) and "not an image" in str(refused)
    assert float(first @ second) >= 0.99999


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"\x00" * 100, "not an image"),
        (encode_image_bytes(photo_like(seed=5))[:300], "truncated or corrupt"),
    ],
    ids=["zero-bytes", "random-bytes", "truncated-jpeg"],
)
def test_bad_image_bytes_are_reported_with_a_reason(tiny_encoder, data, message):
    (refusal,) = tiny_encoder.encode_images([data])
    assert isinstance(refusal, InvalidImageError) and message in str(refusal)


def test_an_image_over_the_pixel_limit_is_refused_before_decoding(tiny_settings):
    encoder = ClipEncoder.load(tiny_settings(max_image_pixels=10_000))
    (refusal,) = encoder.encode_images([encode_image_bytes(photo_like(200, 100), "PNG")])
    assert isinstance(refusal, InvalidImageError) and "CLIP_MAX_IMAGE_PIXELS" in str(refusal)
    encoder.close()


def test_exif_orientation_is_applied_before_encoding(tiny_encoder):
    upright = photo_like(300, 200, seed=6)
    # stored turned left; orientation 6 says "turn right to view"
    stored_sideways = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    tagged = encode_image_bytes(stored_sideways, "PNG", exif=exif)
    vectors = tiny_encoder.encode_images([encode_image_bytes(upright, "PNG"), tagged])
    assert float(vectors[0] @ vectors[1]) >= 0.9999


def test_loading_logs_one_line_naming_model_device_and_dimension(tiny_model_dir, tiny_settings, caplog):
    with caplog.at_level(logging.INFO, logger="clip_encoder"):
        encoder = ClipEncoder.load(tiny_settings())
    assert encoder.ready
    encoder.close()
    lines = [record.getMessage() for record in caplog.records if record.name == "clip_encoder"]
    assert len(lines) == 1
    assert str(tiny_model_dir) in lines[0] and "cpu" in lines[0] and f"dimension {PROJECTION_DIM}" in lines[0]


@pytest.mark.parametrize(
    "model, expected",
    [
        ("/nonexistent/clip-model", "is not an existing directory"),
        ("no-such-org/no-such-clip-model", "Hugging Face hub id"),
    ],
)
def test_a_model_that_cannot_be_loaded_fails_with_one_line_naming_clip_model(model, expected):
    with pytest.raises(ModelLoadError) as caught:
        ClipEncoder.load(Settings(model=model, device="cpu"))
    message = str(caught.value)
    assert f"CLIP_MODEL={model!r}" in message and expected in message and "Fix:" in message
    assert "\n" not in message


def test_a_directory_without_weights_fails_with_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="tried the local directory"):
        ClipEncoder.load(Settings(model=str(tmp_path), device="cpu"))


def test_asking_for_cuda_without_a_gpu_is_an_error_not_a_cpu_fallback(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModelLoadError, match="DEVICE=cuda"):
        pick_device("cuda")
    assert pick_device("auto") == "cpu"


def test_reference_project_model_dir_is_used_when_clip_model_is_unset(tmp_path):
    (tmp_path / "clip-vit-base-patch32").mkdir()
    settings = Settings(reference_project=str(tmp_path))
    assert resolve_model_source(settings) == str(tmp_path / "clip-vit-base-patch32")
    assert resolve_model_source(Settings(reference_project=str(tmp_path / "missing"))) == DEFAULT_MODEL
    assert resolve_model_source(Settings(model="my/model", reference_project=str(tmp_path))) == "my/model"

