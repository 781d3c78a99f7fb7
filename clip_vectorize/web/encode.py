"""The encode endpoints the Node.js backend calls: validate the request, call the encoder, shape the JSON."""

from __future__ import annotations

from typing import Any

import numpy as np
from flask import Blueprint, Response, jsonify

from clip_vectorize.errors import InvalidImageError
from clip_vectorize.web.request_parsing import (
    image_list_inputs,
    json_object,
    optional_encoder,
    require_list,
    require_text,
    single_image_input,
)
from clip_vectorize.web.state import service_state

blueprint = Blueprint("encode", __name__)


@blueprint.post("/encode-text")
def encode_text() -> Response:
    body = json_object()
    text, encoder = require_text(body.get("text"), "text"), optional_encoder(body)
    result = service_state().ready_encoder().encode_texts([text], encoder)
    return _success(text=text, vector=result.vectors[0].tolist(), truncated=result.truncated[0],
                    encoder=result.encoders[0])


@blueprint.post("/encode-texts")
def encode_texts() -> Response:
    body = json_object()
    items = require_list(body.get("texts"), "texts")
    texts, encoder = [require_text(item, f"texts[{index}]") for index, item in enumerate(items)], optional_encoder(body)
    result = service_state().ready_encoder().encode_texts(texts, encoder)
    return _success(texts=texts, vectors=result.vectors.tolist(), count=len(texts), truncated=result.truncated,
                    encoder=result.encoders)


@blueprint.post("/encode-image")
def encode_image() -> Response:
    image = single_image_input()
    (result,) = service_state().ready_encoder().encode_images([image])
    if isinstance(result, InvalidImageError):
        raise result
    return _success(vector=result.tolist())


@blueprint.post("/encode-images")
def encode_images() -> Response:
    images = image_list_inputs()
    results = service_state().ready_encoder().encode_images(images)
    vectors = [result.tolist() if isinstance(result, np.ndarray) else None for result in results]
    errors = [{"index": index, "error": str(result)} for index, result in enumerate(results)
              if isinstance(result, InvalidImageError)]
    return _success(vectors=vectors, count=len(vectors), errors=errors)


def _success(**fields: Any) -> Response:
    encoder = service_state().ready_encoder()
    return jsonify({"status": "success", **fields, "dimension": encoder.dimension, "model": encoder.model_name})
