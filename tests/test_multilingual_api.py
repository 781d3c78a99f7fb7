"""Text routing over HTTP, and the OpenAI-compatible API driven by the real `openai` client (in-process WSGI)."""

from __future__ import annotations

import base64

import httpx2
import numpy as np
import openai
import pytest

from support.app import make_app, make_client
from support.assertions import assert_error, cosine
from support.fake_encoder import FakeEncoder
from support.images import encode_image_bytes, photo_like

CHINESE, ENGLISH = "红色的宝马SUV", "red BMW SUV"
KEY = "test-key-42"


@pytest.fixture(scope="module")
def client(tiny_multilingual_encoder):
    return make_client(tiny_multilingual_encoder)


def openai_client(app, api_key: str = KEY) -> openai.OpenAI:
    """The official client, talking to the app in-process instead of over a socket; no retries, so errors show."""
    transport = httpx2.WSGITransport(app=app)
    return openai.OpenAI(api_key=api_key, base_url="http://clip.test/v1", max_retries=0,
                         http_client=httpx2.Client(transport=transport, base_url="http://clip.test/v1"))


@pytest.fixture(scope="module")
def api(tiny_multilingual_encoder):
    return openai_client(make_app(tiny_multilingual_encoder, api_key=KEY))


# ---------------------------------------------------------------- /encode-text(s)


def test_encode_text_routes_chinese_to_multilingual_and_english_to_clip(client):
    chinese = client.post("/encode-text", json={"text": CHINESE}).get_json()
    english = client.post("/encode-text", json={"text": ENGLISH}).get_json()
    assert (chinese["encoder"], english["encoder"]) == ("multilingual", "clip")
    assert chinese["dimension"] == len(chinese["vector"]) == len(english["vector"])
    assert chinese["model"] == english["model"]  # the vector space: CLIP's, which both encoders write into


def test_encode_texts_reports_each_texts_encoder_in_input_order(client):
    body = client.post("/encode-texts", json={"texts": [ENGLISH, CHINESE, "white sedan"]}).get_json()
    assert body["encoder"] == ["clip", "multilingual", "clip"] and body["count"] == 3


def test_a_request_may_choose_the_encoder(client):
    forced = client.post("/encode-text", json={"text": CHINESE, "encoder": "clip"}).get_json()
    routed = client.post("/encode-text", json={"text": CHINESE}).get_json()
    assert forced["encoder"] == "clip" and cosine(forced["vector"], routed["vector"]) < 0.999


@pytest.mark.parametrize("encoder", ["nope", 3, ""])
def test_a_bad_encoder_name_is_a_400(client, encoder):
    assert_error(client.post("/encode-text", json={"text": ENGLISH, "encoder": encoder}), 400, "'encoder' must be")


def test_asking_for_multilingual_when_none_is_loaded_is_a_400_that_says_how_to_load_one(tiny_encoder):
    response = make_client(tiny_encoder).post("/encode-texts", json={"texts": [CHINESE], "encoder": "multilingual"})
    assert assert_error(response, 400, "CLIP_MULTILINGUAL_MODEL")["code"] == "unknown_encoder"


def test_health_lists_the_loaded_encoders_with_their_model_ids(client, multilingual_dirs):
    body = client.get("/health").get_json()
    assert body["text_routing"] == "auto"
    assert [(info["name"], info["format"], info["languages"]) for info in body["encoders"]] == [
        ("clip", "clip", "en"), ("multilingual", "sentence-transformers", "multilingual")]
    assert body["encoders"][1]["model"] == str(multilingual_dirs["sentence-transformers"])


def test_metrics_carry_the_encoder_label(client):
    client.post("/encode-text", json={"text": "汽车 metrics probe"})
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'clip_batch_size_count{encoder="multilingual",tower="text"}' in metrics
    assert 'clip_queue_depth{encoder="multilingual",tower="text"}' in metrics
    assert 'clip_text_cache_lookups_total{encoder="multilingual",result="miss"}' in metrics


# ---------------------------------------------------------------- /v1/embeddings with the openai client


def test_the_openai_client_embeds_a_chinese_query_with_the_multilingual_model(api, client):
    result = api.embeddings.create(model="multilingual", input=CHINESE)
    ours = client.post("/encode-text", json={"text": CHINESE, "encoder": "multilingual"}).get_json()
    assert len(result.data) == 1 and result.data[0].index == 0
    assert cosine(result.data[0].embedding, ours["vector"]) >= 0.99999
    assert result.model.endswith("sentence-transformers") and result.usage.prompt_tokens > 0


def test_auto_routes_each_input_and_keeps_their_order(api, client):
    result = api.embeddings.create(model="auto", input=[ENGLISH, CHINESE])
    routed = client.post("/encode-texts", json={"texts": [ENGLISH, CHINESE]}).get_json()["vectors"]
    assert [item.index for item in result.data] == [0, 1]
    assert min(cosine(item.embedding, vector) for item, vector in zip(result.data, routed)) >= 0.99999
    assert result.model == "auto"  # two encoders made these: the response names what was asked for


def test_base64_encoding_is_little_endian_float32(api):
    floats = api.embeddings.create(model="clip", input=ENGLISH, encoding_format="float").data[0].embedding
    raw = api.embeddings.with_raw_response.create(model="clip", input=ENGLISH, encoding_format="base64")
    encoded = raw.http_response.json()["data"][0]["embedding"]
    np.testing.assert_allclose(np.frombuffer(base64.b64decode(encoded), "<f4"), floats, rtol=1e-6)


def test_the_configured_model_id_selects_its_encoder(api, tiny_model_dir):
    assert api.embeddings.create(model=str(tiny_model_dir), input=CHINESE).model == str(tiny_model_dir)


def test_images_are_embedded_with_modality_image(api, client):
    jpeg = encode_image_bytes(photo_like(seed=8))
    uri = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
    result = api.embeddings.create(model="clip", input=[uri], extra_body={"modality": "image"})
    ours = client.post("/encode-image", json={"image": uri}).get_json()["vector"]
    assert cosine(result.data[0].embedding, ours) >= 0.99999 and result.usage.total_tokens == 0


def test_an_unknown_model_is_an_openai_style_404(api):
    with pytest.raises(openai.NotFoundError) as caught:
        api.embeddings.create(model="text-embedding-3-small", input=ENGLISH)
    assert caught.value.code == "model_not_found" and "clip" in caught.value.message


@pytest.mark.parametrize(
    "extra, param",
    [({"input": []}, "input"), ({"input": [1, 2, 3]}, "input"), ({"input": [[1, 2]]}, "input"),
     ({"input": True}, "input"), ({"input": ["ok", 7]}, "input[1]"), ({"model": 3}, "model"),
     ({"encoding_format": "int8"}, "encoding_format"), ({"dimensions": 3}, "dimensions"),
     ({"dimensions": 24.0}, "dimensions"), ({"dimensions": True}, "dimensions"), ({"modality": "audio"}, "modality")],
    ids=["empty-list", "token-ids", "token-id-arrays", "bool", "non-string-item", "model-not-a-string", "bad-format",
         "wrong-dimensions", "float-dimensions", "bool-dimensions", "bad-modality"],
)
def test_bad_requests_are_openai_style_400s_naming_the_parameter(client, extra, param):
    response = client.post("/v1/embeddings", json={"model": "clip", "input": ENGLISH, **extra})
    error = response.get_json()["error"]
    assert response.status_code == 400 and error["type"] == "invalid_request_error" and error["param"] == param


def test_null_options_mean_their_defaults(client):
    body = client.post("/v1/embeddings", json={"model": "clip", "input": ENGLISH, "encoding_format": None,
                                               "modality": None, "dimensions": None}).get_json()
    assert isinstance(body["data"][0]["embedding"], list)


@pytest.mark.parametrize(
    "method, path, kwargs, status",
    [("get", "/v1/nothing-here", {}, 404), ("get", "/v1/embeddings", {}, 405),
     ("post", "/v1/embeddings", {"data": "x", "content_type": "text/plain"}, 415)],
    ids=["unknown-path", "wrong-method", "not-json"],
)
def test_every_error_under_v1_has_openais_shape(client, method, path, kwargs, status):
    response = getattr(client, method)(path, **kwargs)
    error = response.get_json()["error"]
    assert response.status_code == status and set(error) == {"message", "type", "param", "code"}


def test_a_bad_image_fails_the_request_naming_the_input(api):
    with pytest.raises(openai.BadRequestError) as caught:
        api.embeddings.create(model="clip", input=["data:image/png;base64,AAAA"], extra_body={"modality": "image"})
    assert caught.value.body["param"] == "input[0]"


def test_the_api_key_is_required_and_refused_in_openai_style(tiny_multilingual_encoder):
    with pytest.raises(openai.AuthenticationError) as caught:
        openai_client(make_app(tiny_multilingual_encoder, api_key=KEY), api_key="wrong").models.list()
    assert caught.value.code == "invalid_api_key"


def test_models_lists_each_loaded_encoder_with_its_model_id(api, tiny_model_dir, multilingual_dirs):
    listed = {model.id: model.model_extra["root"] for model in api.models.list()}
    assert listed == {"clip": str(tiny_model_dir), "multilingual": str(multilingual_dirs["sentence-transformers"])}


def test_while_loading_the_openai_api_answers_503_in_openai_style():
    app = make_app(FakeEncoder(ready=False))
    with pytest.raises(openai.InternalServerError) as caught:
        openai_client(app).embeddings.create(model="clip", input=ENGLISH)
    assert caught.value.status_code == 503 and caught.value.response.headers["Retry-After"]
