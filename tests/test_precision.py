"""CLIP_PRECISION on CPU: int8 (ONNX Runtime dynamic quantization, cached beside the fp32 export) and bf16
(torch, only on a CPU that computes bf16 natively). Parity floors are for the tiny test models, whose narrow
layers quantize worse than the full-size towers (full-size figures: README, Precision)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clip_encoder import ClipEncoder
from clip_vectorize.errors import ModelLoadError
from clip_vectorize.inference import model_loading, onnx_export
from config import Settings
from support.app import make_client
from support.assertions import rowwise_cosine
from support.images import encode_image_bytes, photo_like

TEXTS = ["红色的宝马SUV", "red BMW SUV", "a photo of a blue sports car at night", "一辆白色轿车", "x"]
IMAGES = [encode_image_bytes(photo_like(320, 240, seed=seed)) for seed in range(4)]
FLOORS = {"int8": {"clip": 0.99, "multilingual": 0.95, "image": 0.999},  # cosine to fp32, tiny models
          "bf16": {"clip": 0.999, "multilingual": 0.999, "image": 0.999}}


def vectors(encoder: ClipEncoder) -> dict[str, np.ndarray]:
    return {"clip": encoder.encode_texts(TEXTS, "clip").vectors,
            "multilingual": encoder.encode_texts(TEXTS, "multilingual").vectors,
            "image": np.stack(encoder.encode_images(IMAGES))}


@pytest.fixture(scope="module")
def fp32_vectors(tiny_multilingual_encoder):
    return vectors(tiny_multilingual_encoder)


@pytest.fixture(scope="module")
def int8_encoder(tiny_settings, multilingual_dirs):
    encoder = ClipEncoder.load(tiny_settings(precision="int8",
                                             multilingual_model=str(multilingual_dirs["sentence-transformers"])))
    yield encoder
    encoder.close()


def test_int8_reports_itself_in_health(int8_encoder):
    body = make_client(int8_encoder).get("/health").get_json()
    assert (body["precision"], body["backend"]) == ("int8", "onnx")


@pytest.mark.parametrize("tower", ["clip", "multilingual", "image"])
def test_int8_vectors_stay_close_to_fp32(int8_encoder, fp32_vectors, tower):
    cosine = rowwise_cosine(vectors(int8_encoder)[tower], fp32_vectors[tower]).min()
    assert FLOORS["int8"][tower] <= cosine < 1.0  # close, and really quantized (not the fp32 graph again)


def test_int8_copies_sit_beside_the_fp32_export_and_are_made_once(int8_encoder, tiny_settings, monkeypatch):
    settings = tiny_settings(precision="int8")
    exports = {path.parent for path in (Path(settings.cache_dir) / "onnx").rglob("*.int8.onnx")}
    assert exports and all((directory / "text.onnx").is_file() for directory in exports)
    monkeypatch.setattr(onnx_export, "_in_child_process", lambda *args: pytest.fail("exported or quantized again"))
    ClipEncoder.load(settings).close()


@pytest.mark.parametrize("settings, message", [
    ({"precision": "int8", "backend": "torch"}, "CLIP_PRECISION=int8 runs with ONNX Runtime on CPU"),
    ({"precision": "int8", "device": "cuda"}, "CLIP_PRECISION=int8 runs with ONNX Runtime on CPU"),
    ({"precision": "bf16", "backend": "onnx"}, "CLIP_PRECISION=bf16 runs with torch"),
])
def test_a_precision_the_runtime_cannot_give_is_a_settings_error(settings, message):
    with pytest.raises(ValueError, match=message):
        Settings(**settings)


def test_bf16_on_a_cpu_without_native_bf16_is_refused_naming_the_missing_flags(tmp_path, tiny_settings, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n")
    monkeypatch.setattr(model_loading, "require_native_bf16",
                        lambda real=model_loading.require_native_bf16: real(cpuinfo))
    with pytest.raises(ModelLoadError) as caught:
        ClipEncoder.load(tiny_settings(precision="bf16"))
    message = str(caught.value)
    assert "avx512_bf16 or amx_bf16" in message and "avx, avx2" in message and "CLIP_PRECISION=int8" in message


def test_bf16_where_the_cpu_has_it_runs_in_torch_close_to_fp32(tiny_settings, multilingual_dirs, fp32_vectors,
                                                               monkeypatch):
    monkeypatch.setattr(model_loading, "require_native_bf16", lambda: None)  # this test machine may lack it
    encoder = ClipEncoder.load(tiny_settings(precision="bf16",
                                             multilingual_model=str(multilingual_dirs["sentence-transformers"])))
    ours = vectors(encoder)
    assert encoder.precision == "bf16" and {info.backend for info in encoder.text_encoders()} == {"torch"}
    encoder.close()
    for tower, floor in FLOORS["bf16"].items():
        assert rowwise_cosine(ours[tower], fp32_vectors[tower]).min() >= floor, tower
