"""The HTTP contract the Node.js backend relies on, with a deterministic fake encoder behind it."""

import base64
import io

import numpy as np
import pytest

from clip_vectorize.errors import InvalidImageError
from clip_vectorize.web.request_parsing import decode_base64_image
from support.app import make_client
from support.assertions import assert_error
from support.fake_encoder import DIMENSION, FakeEncoder, vector_for
from support.images import encode_image_bytes, photo_like

JPEG = encode_image_bytes(photo_like(seed=1))
PNG = encode_image_bytes(photo_like(seed=2), "PNG")


@pytest.fixture
def client():
    return make_client()


# ---------------------------------------------------------------- success shapes


def test_health_reports_loaded_model_device_and_dimension(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.get_json() == {
        "status": "ok", "service": "clip-vectorize", "clip_loaded": True,
        "model": "fake/clip", "device": "cpu", "backend": "fake", "precision": "fp32", "dimension": DIMENSION,
        "text_routing": "clip",
        "encoders": [{"name": "clip", "model": "fake/clip", "backend": "fake", "max_tokens": 77, "format": "clip",
                      "languages": "en"}],
    }


def test_health_says_loading_with_503_and_retry_after_until_the_model_is_ready():
    encoder = FakeEncoder(ready=False)
    client = make_client(encoder)
    response = client.get("/health")
    assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0
    assert response.get_json()["status"] == "loading" and response.get_json()["clip_loaded"] is False
    encoder.ready = True
    assert client.get("/health").get_json()["status"] == "ok"


def test_base64_that_is_not_base64_is_a_typed_invalid_image_error():
    with pytest.raises(InvalidImageError, match="base64"):
        decode_base64_image("this is not base64!")


def test_encode_text_returns_the_node_client_shape(client):
    response = client.post("/encode-text", json={"text": "红色的宝马SUV"})
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "success" and body["text"] == "红色的宝马SUV"
    assert body["dimension"] == DIMENSION == len(body["vector"])
    assert body["model"] == "fake/clip" and body["truncated"] is False
    np.testing.assert_allclose(body["vector"], vector_for("红色的宝马SUV".encode()), rtol=1e-6)


def test_encode_text_says_when_text_was_truncated(client):
    assert client.post("/encode-text", json={"text": "car " * 100}).get_json()["truncated"] is True


def test_encode_texts_returns_vectors_in_input_order(client):
    texts = ["red BMW SUV", "白色轿车", "🚙"]
    body = client.post("/encode-texts", json={"texts": texts}).get_json()
    assert body["status"] == "success" and body["texts"] == texts and body["count"] == 3
    assert body["dimension"] == DIMENSION and body["model"] == "fake/clip"
    assert body["truncated"] == [False, False, False]
    for text, vector in zip(texts, body["vectors"]):
        np.testing.assert_allclose(vector, vector_for(text.encode()), rtol=1e-6)


def test_encode_image_accepts_a_multipart_upload(client):
    response = client.post("/encode-image", data={"image": (io.BytesIO(JPEG), "car.jpg")})
    body = response.get_json()
    assert response.status_code == 200 and body["status"] == "success"
    assert body["dimension"] == DIMENSION and body["model"] == "fake/clip"
    np.testing.assert_allclose(body["vector"], vector_for(JPEG), rtol=1e-6)


@pytest.mark.parametrize("prefix", ["", "data:image/png;base64,"], ids=["plain-base64", "data-uri"])
def test_encode_image_accepts_json_base64(client, prefix):
    body = client.post("/encode-image", json={"image": prefix + base64.b64encode(PNG).decode()}).get_json()
    np.testing.assert_allclose(body["vector"], vector_for(PNG), rtol=1e-6)


def test_encode_images_keeps_order_and_reports_the_bad_one_without_failing_the_batch(client):
    images = [base64.b64encode(JPEG).decode(), "%%% not base64", base64.b64encode(b"not an image").decode(),
              base64.b64encode(PNG).decode()]
    response = client.post("/encode-images", json={"images": images})
    body = response.get_json()
    assert response.status_code == 200 and body["count"] == 4
    assert body["vectors"][1] is None and body["vectors"][2] is None
    np.testing.assert_allclose(body["vectors"][0], vector_for(JPEG), rtol=1e-6)
    np.testing.assert_allclose(body["vectors"][3], vector_for(PNG), rtol=1e-6)
    assert [error["index"] for error in body["errors"]] == [1, 2]
    assert "base64" in body["errors"][0]["error"] and "not an image" in body["errors"][1]["error"]


def test_encode_images_accepts_several_multipart_files(client):
    files = [(io.BytesIO(JPEG), "a.jpg"), (io.BytesIO(PNG), "b.png")]
    body = client.post("/encode-images", data={"images": files}).get_json()
    assert body["count"] == 2 and body["errors"] == []
    np.testing.assert_allclose(body["vectors"][1], vector_for(PNG), rtol=1e-6)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "payload, fragment",
    [
        ({}, "'text' is required"),
        ({"text": ""}, "must not be empty"),
        ({"text": "   \n"}, "must not be empty"),
        ({"text": 42}, "must be a string"),
        ({"text": ["a"]}, "must be a string"),
        ([1, 2], "JSON object"),
    ],
    ids=["missing", "empty", "whitespace", "number", "list", "not-an-object"],
)
def test_encode_text_refuses_bad_text_with_400(client, payload, fragment):
    assert_error(client.post("/encode-text", json=payload), 400, fragment)


def test_malformed_json_is_a_400(client):
    response = client.post("/encode-text", data="{not json", content_type="application/json")
    assert_error(response, 400, "JSON object")


@pytest.mark.parametrize(
    "payload, fragment",
    [
        ({}, "non-empty JSON list"),
        ({"texts": []}, "non-empty JSON list"),
        ({"texts": "a"}, "non-empty JSON list"),
        ({"texts": ["ok", 3]}, "'texts[1]' must be a string"),
        ({"texts": ["ok", " "]}, "'texts[1]' must not be empty"),
        ({"texts": ["t"] * 6}, "limit is 5 (CLIP_MAX_BATCH_ITEMS)"),
    ],
    ids=["missing", "empty", "not-a-list", "non-string-item", "blank-item", "too-many"],
)
def test_encode_texts_refuses_bad_batches_with_400(payload, fragment):
    assert_error(make_client(max_batch_items=5).post("/encode-texts", json=payload), 400, fragment)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"json": {"image": "%%%"}}, "not valid base64"),
        ({"json": {"image": base64.b64encode(JPEG[: len(JPEG) // 3]).decode()}}, "truncated or corrupt"),
        ({"json": {"image": base64.b64encode(b"plain text").decode()}}, "not an image"),
        ({"json": {"image": "data:image/png,rawbytes"}}, "base64"),
        ({"json": {}}, "'image' is required"),
        ({"json": {"image": 7}}, "base64"),
        ({"data": {"image": (io.BytesIO(b""), "empty.jpg")}}, "empty"),
        ({"data": {"picture": (io.BytesIO(JPEG), "a.jpg")}}, "multipart field 'image' is required"),
    ],
    ids=["bad-base64", "truncated-jpeg", "not-an-image", "data-uri-not-base64", "missing", "not-a-string",
         "empty-upload", "wrong-field"],
)
def test_encode_image_refuses_bad_images_with_400(client, kwargs, fragment):
    assert_error(client.post("/encode-image", **kwargs), 400, fragment)


@pytest.mark.parametrize("path", ["/encode-text", "/encode-texts", "/encode-image", "/encode-images"])
def test_wrong_content_type_is_a_415(client, path):
    assert_error(client.post(path, data="text=hi", content_type="text/plain"), 415, "application/json")


def test_unknown_path_is_a_json_404(client):
    assert_error(client.get("/nope"), 404, "no such endpoint: GET /nope")


def test_wrong_method_is_a_json_405_naming_the_allowed_one(client):
    response = client.get("/encode-text")
    assert_error(response, 405, "use POST")
    assert "POST" in response.headers["Allow"]


def test_a_body_over_the_limit_is_a_413(tmp_path):
    client = make_client(max_request_bytes=1000)
    response = client.post("/encode-image", data={"image": (io.BytesIO(b"x" * 5000), "big.jpg")})
    assert_error(response, 413, "CLIP_MAX_REQUEST_BYTES")


def test_encoding_while_the_model_is_not_ready_is_a_503_with_retry_after():
    response = make_client(FakeEncoder(ready=False)).post("/encode-text", json={"text": "car"})
    assert_error(response, 503, "still loading")
    assert int(response.headers["Retry-After"]) > 0


def test_an_unexpected_failure_is_a_500_without_internals(caplog):
    client = make_client(FakeEncoder(fail_with=RuntimeError("secret internal detail")))
    response = client.post("/encode-text", json={"text": "car"})
    body = assert_error(response, 500, "internal server error")
    assert "secret" not in response.get_data(as_text=True) and body["code"] == "internal_error"
    assert "secret internal detail" in caplog.text  # ops still see it in the log


def test_the_app_keeps_serving_after_errors(client):
    for _ in range(3):
        client.post("/encode-text", data="{", content_type="application/json")
        client.post("/encode-image", json={"image": "%%%"})
    assert client.post("/encode-text", json={"text": "still here"}).status_code == 200
