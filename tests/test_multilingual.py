"""Multilingual text towers in CLIP's image space: each published format loads offline through the real loading
code, matches its own reference implementation, and Chinese is routed to it while English stays with CLIP."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clip_encoder import ClipEncoder
from clip_vectorize.errors import ModelLoadError, UnknownEncoderError
from clip_vectorize.inference import onnx_export
from support.app import make_client
from support.assertions import rowwise_cosine
from support.models import PROJECTION_DIM
from support.multilingual import (
    SENTENCE_TRANSFORMER_MAX_SEQ_LENGTH,
    build_tiny_sentence_transformer,
    build_tiny_taiyi,
    mclip_reference,
    sentence_transformer_reference,
    taiyi_reference,
)

CHINESE = "红色的宝马SUV"
ENGLISH = "red BMW SUV"
RUSSIAN = "красный автомобиль"
QUERIES = [CHINESE, "一辆白色轿车", "汽车", "red car", RUSSIAN]
FORMATS = {  # format: (reference implementation, reads more than Chinese); conftest builds each format
    "sentence-transformers": (sentence_transformer_reference, True),
    "m-clip": (mclip_reference, True),
    "bert-sequence-classification": (taiyi_reference, False),
}


@pytest.fixture(scope="module", params=list(FORMATS))
def loaded(request, multilingual_dirs, tiny_settings):
    """(format, its directory, a ClipEncoder with it as the multilingual model on the default CPU backend)."""
    directory = multilingual_dirs[request.param]
    encoder = ClipEncoder.load(tiny_settings(multilingual_model=str(directory)))
    yield request.param, directory, encoder
    encoder.close()


def test_the_format_is_recognised_from_the_files(loaded):
    fmt, directory, encoder = loaded
    clip, multilingual = encoder.text_encoders()
    assert (clip.name, multilingual.name) == ("clip", "multilingual")
    assert multilingual.format == fmt and multilingual.model == str(directory) and multilingual.backend == "onnx"


@pytest.mark.parametrize("backend", ["onnx", "torch"])
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_vectors_match_the_formats_own_reference_implementation(multilingual_dirs, tiny_settings, fmt, backend):
    directory = multilingual_dirs[fmt]
    encoder = ClipEncoder.load(tiny_settings(multilingual_model=str(directory), backend=backend))
    ours = encoder.encode_texts(QUERIES, encoder="multilingual").vectors
    encoder.close()
    assert rowwise_cosine(ours, FORMATS[fmt][0](directory)(QUERIES)).min() >= 0.9999


def test_a_folder_saved_by_todays_sentence_transformers_loads_and_matches_too(tmp_path, tiny_settings):
    directory = build_tiny_sentence_transformer(tmp_path / "st-current", PROJECTION_DIM, published_layout=False)
    encoder = ClipEncoder.load(tiny_settings(multilingual_model=str(directory)))
    texts = [*QUERIES, "红色的宝马" * 20]  # the last one past max_seq_length: truncated the same way
    ours = encoder.encode_texts(texts, encoder="multilingual")
    encoder.close()
    assert ours.truncated[-1] and not any(ours.truncated[:-1])
    assert rowwise_cosine(ours.vectors, sentence_transformer_reference(directory)(texts)).min() >= 0.9999


def test_vectors_are_unit_length_and_of_clips_dimension(loaded):
    vectors = loaded[2].encode_texts(QUERIES, encoder="multilingual").vectors
    assert vectors.shape == (len(QUERIES), PROJECTION_DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_auto_routing_sends_chinese_to_the_multilingual_encoder_and_english_to_clip(loaded):
    _, _, encoder = loaded
    result = encoder.encode_texts([CHINESE, ENGLISH])
    assert result.encoders == ["multilingual", "clip"]
    np.testing.assert_allclose(result.vectors[0], encoder.encode_texts([CHINESE], "multilingual").vectors[0], atol=1e-6)
    np.testing.assert_allclose(result.vectors[1], encoder.encode_texts([ENGLISH], "clip").vectors[0], atol=1e-6)


def test_other_non_latin_scripts_go_to_a_multilingual_model_but_not_to_a_chinese_only_one(loaded):
    fmt, _, encoder = loaded
    reads_more_than_chinese = FORMATS[fmt][1]
    expected = "multilingual" if reads_more_than_chinese else "clip"
    assert encoder.encode_texts([RUSSIAN, "Café crème 🚗 2024"]).encoders == [expected, "clip"]


def test_a_mixed_batch_comes_back_in_input_order(loaded):
    _, _, encoder = loaded
    texts = [ENGLISH, CHINESE, "white sedan", "汽车", RUSSIAN]
    together = encoder.encode_texts(texts)
    one_by_one = [encoder.encode_texts([text]) for text in texts]
    assert together.encoders == [single.encoders[0] for single in one_by_one]
    assert rowwise_cosine(together.vectors, np.concatenate([single.vectors for single in one_by_one])).min() >= 0.99999


def test_the_caller_can_choose_the_encoder_for_every_text(loaded):
    result = loaded[2].encode_texts([ENGLISH, CHINESE], encoder="clip")
    assert result.encoders == ["clip", "clip"]


def test_the_cache_is_kept_per_encoder(loaded):
    _, _, encoder = loaded
    by_clip = encoder.encode_texts(["汽车 cache probe"], "clip").vectors[0]
    by_multilingual = encoder.encode_texts(["汽车 cache probe"], "multilingual").vectors[0]
    assert float(by_clip @ by_multilingual) < 0.999  # two different models: the second was not a cache hit
    hits = encoder.text_cache_counts()["multilingual"].hits
    encoder.encode_texts(["汽车 cache probe"], "multilingual")
    assert encoder.text_cache_counts()["multilingual"].hits == hits + 1


def test_text_past_the_models_maximum_length_is_truncated_and_reported(multilingual_dirs, tiny_settings):
    directory = multilingual_dirs["sentence-transformers"]
    encoder = ClipEncoder.load(tiny_settings(multilingual_model=str(directory)))
    long_text = "红色的宝马" * 20  # 100 characters: one token each, past the 32-token max_seq_length
    result = encoder.encode_texts([long_text, CHINESE], encoder="multilingual")
    assert result.truncated == [True, False] and result.token_counts[0] > SENTENCE_TRANSFORMER_MAX_SEQ_LENGTH
    reference = sentence_transformer_reference(directory)([long_text])  # it truncates at max_seq_length too
    assert float(result.vectors[0] @ reference[0]) >= 0.9999
    encoder.close()


def test_asking_for_an_encoder_that_is_not_loaded_is_a_typed_error(tiny_encoder):
    with pytest.raises(UnknownEncoderError, match="CLIP_MULTILINGUAL_MODEL"):
        tiny_encoder.encode_texts([CHINESE], encoder="multilingual")


def test_without_a_multilingual_model_everything_goes_to_clip(tiny_encoder):
    assert tiny_encoder.encode_texts([CHINESE, RUSSIAN]).encoders == ["clip", "clip"]


def test_a_directory_in_no_known_format_is_a_start_up_error_naming_what_was_found(tmp_path, tiny_settings):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (tmp_path / "merges.txt").write_text("")
    with pytest.raises(ModelLoadError) as caught:
        ClipEncoder.load(tiny_settings(multilingual_model=str(tmp_path)))
    message = str(caught.value)
    assert "CLIP_MULTILINGUAL_MODEL" in message and "config.json, merges.txt" in message and "modules.json" in message


def test_a_tower_of_another_dimension_is_refused_at_start_up(tmp_path, tiny_settings):
    directory = build_tiny_taiyi(tmp_path / "taiyi-16d", dimension=16)
    with pytest.raises(ModelLoadError, match="16-d vectors but the CLIP model's are 24-d"):
        ClipEncoder.load(tiny_settings(multilingual_model=str(directory)))


def test_a_model_too_big_for_one_onnx_file_runs_in_torch_without_trying_the_export(
        multilingual_dirs, tiny_settings, monkeypatch, caplog):
    monkeypatch.setattr(onnx_export, "ONNX_MAX_BYTES", 1000)  # every tiny tower is "too big" now
    monkeypatch.setattr(onnx_export, "export_in_child_process", lambda *args: pytest.fail("tried to export"))
    encoder = ClipEncoder.load(tiny_settings(multilingual_model=str(multilingual_dirs["m-clip"]),
                                             cache_dir=str(multilingual_dirs["m-clip"].parent / "fresh-cache")))
    backends = {info.name: info.backend for info in encoder.text_encoders()}
    encoder.close()
    assert backends == {"clip": "torch", "multilingual": "torch"} and "2 GiB limit" in caplog.text


def test_routing_to_multilingual_without_a_model_is_a_settings_error(tiny_settings):
    with pytest.raises(ValueError, match="CLIP_TEXT_ROUTING=multilingual needs a multilingual model"):
        tiny_settings(text_routing="multilingual")


def test_routing_defaults_to_auto_with_a_multilingual_model_and_to_clip_without(tiny_settings, multilingual_dirs):
    assert tiny_settings().text_routing == "clip"
    assert tiny_settings(multilingual_model=str(multilingual_dirs["m-clip"])).text_routing == "auto"


def test_every_endpoint_routes_and_reports_with_each_format(loaded):
    _, _, encoder = loaded
    client = make_client(encoder)
    assert client.post("/encode-text", json={"text": CHINESE}).get_json()["encoder"] == "multilingual"
    assert client.post("/encode-text", json={"text": ENGLISH}).get_json()["encoder"] == "clip"
    assert client.post("/encode-texts", json={"texts": [ENGLISH, CHINESE]}).get_json()["encoder"] == [
        "clip", "multilingual"]
    embeddings = client.post("/v1/embeddings", json={"model": "multilingual", "input": [CHINESE]}).get_json()
    assert embeddings["model"] == encoder.text_encoders()[1].model and len(embeddings["data"]) == 1
