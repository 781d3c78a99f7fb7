"""OpenAI-compatible embeddings, so the ecosystem's clients (openai, LangChain, LlamaIndex) work unchanged:
POST /v1/embeddings and GET /v1/models. Same limits, API key and error handling as the rest, with errors in
OpenAI's shape (web/http_errors.py)."""

from __future__ import annotations

import base64
from collections.abc import Callable

import numpy as np
from flask import Blueprint, Response, jsonify

from clip_vectorize.errors import InvalidImageError
from clip_vectorize.inference.routing import AUTO, MULTILINGUAL
from clip_vectorize.inference.vectors import Encoder
from clip_vectorize.web.http_errors import ApiError
from clip_vectorize.web.request_parsing import (
    decoded_image,
    json_object,
    optional_choice,
    require_list,
    require_string,
    require_text,
)
from clip_vectorize.web.state import service_state

blueprint = Blueprint("openai", __name__, url_prefix="/v1")

ENCODING_FORMATS = ("float", "base64")
MODALITIES = ("text", "image")


@blueprint.post("/embeddings")
def embeddings() -> Response:
    body = json_object()
    requested = require_string(body.get("model"), "model")
    encoding_format = optional_choice(body, "encoding_format", ENCODING_FORMATS, "float")
    modality = optional_choice(body, "modality", MODALITIES, "text")
    inputs = _inputs(body.get("input"), require_text if modality == "text" else require_string)
    dimensions = _dimensions(body.get("dimensions"))
    encoder = service_state().ready_encoder()
    name = _encoder_name(encoder, requested)
    if dimensions is not None and dimensions != encoder.dimension:
        raise ApiError(400, f"'dimensions' must be {encoder.dimension} (this model's vectors) or left out",
                       param="dimensions")
    if modality == "image":
        vectors, model, tokens = _image_vectors(encoder, name, inputs), encoder.model_name, 0
    else:
        vectors, model, tokens = _text_vectors(encoder, name, inputs, requested)
    data = [{"object": "embedding", "index": index, "embedding": _encoded(vector, encoding_format)}
            for index, vector in enumerate(vectors)]
    return jsonify({"object": "list", "data": data, "model": model,
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


@blueprint.get("/models")
def models() -> Response:
    encoders = service_state().ready_encoder().text_encoders()
    data = [{"id": info.name, "object": "model", "created": 0, "owned_by": "clip-vectorize", "root": info.model}
            for info in encoders]
    return jsonify({"object": "list", "data": data})


def _encoder_name(encoder: Encoder, requested: str) -> str | None:
    """"clip" or "multilingual" for a name or a loaded model's id; None for "auto"; 404 for anything else."""
    if requested == AUTO:
        return None
    for info in encoder.text_encoders():
        if requested in (info.name, info.model):
            return info.name
    known = ", ".join([AUTO, *(info.name for info in encoder.text_encoders())])
    raise ApiError(404, f"The model {requested!r} does not exist on this service; use one of: {known}",
                   "model_not_found", param="model")


def _text_vectors(encoder: Encoder, name: str | None, texts: list[str], requested: str
                  ) -> tuple[list[np.ndarray], str, int]:
    """The texts' vectors, the model id that made them (the request's name when two encoders shared the work)."""
    result = encoder.encode_texts(texts, name)
    used = {info.name: info.model for info in encoder.text_encoders() if info.name in result.encoders}
    model = next(iter(used.values())) if len(used) == 1 else requested
    return list(result.vectors), model, sum(result.token_counts)


def _image_vectors(encoder: Encoder, name: str | None, items: list[str]) -> list[np.ndarray]:
    if name == MULTILINGUAL:
        raise ApiError(400, "'multilingual' reads text only; images are encoded by 'clip'", param="model")
    results = encoder.encode_images([decoded_image(item, f"input[{index}]") for index, item in enumerate(items)])
    for index, result in enumerate(results):
        if isinstance(result, InvalidImageError):
            raise ApiError(400, f"input[{index}]: {result}", "invalid_image", param=f"input[{index}]")
    return results  # type: ignore[return-value]  # every refusal raised above


def _inputs(value: object, check: Callable[[object, str], str]) -> list[str]:
    """`input`: a string or a list of strings. Texts are checked as /encode-text checks them; images only for
    being strings, decoded later. Token-id arrays (OpenAI's third form) are refused: the models here tokenize
    themselves (LangChain: pass check_embedding_ctx_length=False)."""
    if isinstance(value, str):
        return [check(value, "input")]
    if isinstance(value, list) and value and all(isinstance(item, list | int) for item in value):
        raise ApiError(400, "'input' must be strings; token-id arrays are not accepted (this service tokenizes "
                            "itself; LangChain's OpenAIEmbeddings: check_embedding_ctx_length=False)", param="input")
    items = require_list(value, "input")
    return [check(item, f"input[{index}]") for index, item in enumerate(items)]


def _dimensions(value: object) -> int | None:
    if value is not None and (type(value) is not int or value < 1):
        raise ApiError(400, "'dimensions' must be a positive integer", param="dimensions")
    return value


def _encoded(vector: np.ndarray, encoding_format: str | None) -> list[float] | str:
    """floats, or base64 of the little-endian float32 bytes (what the openai client decodes)."""
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, "<f4").tobytes()).decode()
    return vector.tolist()
