"""Fuzzing the request boundary with hypothesis, with the real tiny CLIP encoder behind the app.

Whatever a caller sends, the service answers JSON with a `status`, never a 5xx other than 503, and every
vector it returns has the model's dimension and unit length. Images are fuzzed as raw bytes and as valid
PNG, JPEG, GIF, WebP, BMP and TIFF files with bytes flipped, inserted, deleted or cut off; after each, the
app must still encode a good image.
"""

import base64
import io
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.app import make_app
from support.images import encode_image_bytes, photo_like

ENCODE_ENDPOINTS = ["/encode-text", "/encode-texts", "/encode-image", "/encode-images"]
EXPECTED_STATUSES = {200, 400, 413, 415, 503}
IMAGE_FORMATS = ["PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF"]
VALID_IMAGES = {fmt: encode_image_bytes(photo_like(64, 48, seed=seed), fmt) for seed, fmt in enumerate(IMAGE_FORMATS)}

fuzz = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# Damaged TIFF headers make Pillow warn before it refuses them; the refusal is what these tests check.
pillow_may_warn = pytest.mark.filterwarnings("ignore::UserWarning:PIL")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ---------------------------------------------------------------- strategies

# JSON may carry what UTF-8 cannot: a lone surrogate arrives as the escape "\ud800". About half the texts hold
# some (st.text() itself never yields surrogates, so they are spliced in).
lone_surrogates = st.characters(categories=["Cs"])
texts = st.text(max_size=30) | st.lists(st.text(max_size=8) | lone_surrogates, min_size=1, max_size=6).map("".join)
scalars = st.none() | st.booleans() | st.integers() | st.floats() | texts
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4), max_leaves=16
)
image_strings = st.one_of(
    st.sampled_from(list(VALID_IMAGES.values())).map(_b64),
    st.sampled_from(list(VALID_IMAGES.values())).map(lambda data: "data:image/png;base64," + _b64(data)),
    st.binary(max_size=64).map(_b64),
    texts,
)
# The keys the endpoints read, holding plausible or arbitrary values, next to keys they do not know.
bodies_with_real_keys = st.builds(
    lambda known, unknown: {**unknown, **known},
    st.fixed_dictionaries(
        {},
        optional={
            "text": texts | json_values,
            "texts": st.lists(texts, max_size=6) | json_values,
            "image": image_strings | json_values,
            "images": st.lists(image_strings | json_values, max_size=6) | json_values,
            "url": texts | json_values,
            "urls": st.lists(texts, max_size=3) | json_values,
        },
    ),
    st.dictionaries(texts, json_values, max_size=2),
)


@st.composite
def mutated_images(draw) -> bytes:
    """A valid image file with a few bytes flipped, inserted or deleted, or cut off somewhere."""
    data = bytearray(VALID_IMAGES[draw(st.sampled_from(IMAGE_FORMATS))])
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        position = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[position] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[position : position + draw(st.integers(1, 16))]
        else:
            del data[position:]
        if not data:
            break
    return bytes(data)


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def client(tiny_encoder):
    return make_app(tiny_encoder).test_client()


def post_json_text(client, path: str, raw: str | bytes):
    """POST a body exactly as given (json.dumps escapes lone surrogates, as a JavaScript client would send them)."""
    return client.post(path, data=raw, content_type="application/json")


def upload(client, data: bytes, path: str = "/encode-image", field: str = "image"):
    return client.post(path, data={field: (io.BytesIO(data), "upload.bin")}, content_type="multipart/form-data")


def returned_vectors(body: dict) -> list:
    if "vector" in body:
        return [body["vector"]]
    assert len(body["vectors"]) == body["count"]
    return [vector for vector in body["vectors"] if vector is not None]


def assert_a_proper_answer(response, dimension: int) -> dict:
    """A documented status, a JSON body with `status`; on success, unit vectors of the model's dimension."""
    shown = f"{response.status_code} {response.get_data()[:500]!r}"
    assert response.status_code in EXPECTED_STATUSES, shown
    assert response.is_json, shown
    body = response.get_json()
    assert isinstance(body, dict) and "status" in body, shown
    if response.status_code == 200:
        assert body["status"] == "success" and body["dimension"] == dimension, shown
        for vector in returned_vectors(body):
            assert len(vector) == dimension, shown
            assert abs(np.linalg.norm(vector) - 1.0) < 1e-4, shown
    else:
        assert body["status"] == "error" and body["error"] and body["code"], shown
    return body


def assert_still_serving(client, dimension: int) -> None:
    response = upload(client, VALID_IMAGES["PNG"])
    assert response.status_code == 200, response.get_data()[:500]
    assert_a_proper_answer(response, dimension)


# ---------------------------------------------------------------- JSON bodies


@pytest.mark.parametrize("path", ENCODE_ENDPOINTS)
@fuzz
@given(body=json_values)
def test_any_json_body_gets_a_documented_status_and_a_json_answer(client, tiny_encoder, path, body):
    assert_a_proper_answer(post_json_text(client, path, json.dumps(body)), tiny_encoder.dimension)


@pytest.mark.parametrize("path", ENCODE_ENDPOINTS)
@fuzz
@given(body=bodies_with_real_keys)
def test_the_real_keys_holding_any_values_get_a_documented_status_and_unit_vectors(client, tiny_encoder, path, body):
    assert_a_proper_answer(post_json_text(client, path, json.dumps(body)), tiny_encoder.dimension)


@pytest.mark.parametrize("path", ENCODE_ENDPOINTS)
@fuzz
@given(raw=st.binary(max_size=200))
def test_any_bytes_sent_as_json_get_a_documented_status_and_a_json_answer(client, tiny_encoder, path, raw):
    assert_a_proper_answer(post_json_text(client, path, raw), tiny_encoder.dimension)


@pytest.mark.parametrize(
    "path, body",
    [("/encode-text", {"text": "red \ud800 SUV"}), ("/encode-texts", {"texts": ["white sedan", "\udfff"]})],
    ids=["encode-text", "encode-texts"],
)
def test_text_with_a_lone_surrogate_is_refused_with_400_not_500(client, tiny_encoder, path, body):
    response = post_json_text(client, path, json.dumps(body))
    assert response.status_code == 400, response.get_data()[:500]
    assert_a_proper_answer(response, tiny_encoder.dimension)


@pytest.mark.parametrize("path", ENCODE_ENDPOINTS)
@pytest.mark.parametrize("opener, closer", [("[", "]"), ('{"text": ', "}")], ids=["arrays", "objects"])
def test_json_nested_too_deep_to_parse_is_refused_with_400_not_500(client, tiny_encoder, path, opener, closer):
    depth = 10_000  # far past Python's recursion limit; about 90 KB
    response = post_json_text(client, path, opener * depth + "1" + closer * depth)
    assert response.status_code == 400, response.get_data()[:500]
    assert_a_proper_answer(response, tiny_encoder.dimension)


# ---------------------------------------------------------------- image bytes


@pillow_may_warn
@fuzz
@given(data=st.binary(max_size=2048))
def test_any_bytes_uploaded_as_an_image_are_encoded_or_refused_with_400(client, tiny_encoder, data):
    response = upload(client, data)
    assert response.status_code in (200, 400), response.get_data()[:500]
    assert_a_proper_answer(response, tiny_encoder.dimension)
    assert_still_serving(client, tiny_encoder.dimension)


@pillow_may_warn
@fuzz
@given(data=mutated_images())
def test_a_damaged_image_file_is_encoded_or_refused_with_400_and_the_app_keeps_serving(client, tiny_encoder, data):
    response = upload(client, data)
    assert response.status_code in (200, 400), response.get_data()[:500]
    assert_a_proper_answer(response, tiny_encoder.dimension)
    assert_still_serving(client, tiny_encoder.dimension)


@pytest.mark.parametrize("fmt", IMAGE_FORMATS)
def test_every_undamaged_sample_image_is_encoded(client, tiny_encoder, fmt):
    """The mutations start from files the service reads: otherwise the fuzzing above proves little."""
    response = upload(client, VALID_IMAGES[fmt])
    assert response.status_code == 200, response.get_data()[:500]
    assert_a_proper_answer(response, tiny_encoder.dimension)
