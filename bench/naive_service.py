"""The naive reference: CLIPProcessor + CLIPModel in torch fp32, one request = one forward pass.

What a first version of such a service looks like: no batching across requests, no caching, no exported
runtime. It answers the same endpoints with the same JSON shapes as clip-vectorize, so the load generator
drives both alike. It loads the model at import time from $NAIVE_MODEL (that is the point of "naive"; the
benchmark runs it under gunicorn: `gunicorn ... bench.naive_service:app`).
"""

from __future__ import annotations

import io
import os

import torch
from flask import Flask, jsonify, request
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

MODEL_DIR = os.environ["NAIVE_MODEL"]
processor = CLIPProcessor.from_pretrained(MODEL_DIR)
model = CLIPModel.from_pretrained(MODEL_DIR).eval()
app = Flask(__name__)


def _unit(features: torch.Tensor) -> list[list[float]]:
    return torch.nn.functional.normalize(features, dim=-1).tolist()


def _text_vectors(texts: list[str]) -> list[list[float]]:
    inputs = processor(text=texts, return_tensors="pt", padding=True, truncation=True)
    with torch.inference_mode():
        return _unit(model.get_text_features(**inputs).pooler_output)


@app.get("/health")
def health():
    return jsonify({"status": "ok", "clip_loaded": True})


@app.post("/encode-text")
def encode_text():
    return jsonify({"vector": _text_vectors([request.get_json()["text"]])[0]})


@app.post("/encode-texts")
def encode_texts():
    return jsonify({"vectors": _text_vectors(request.get_json()["texts"])})


@app.post("/encode-image")
def encode_image():
    image = Image.open(io.BytesIO(request.files["image"].read())).convert("RGB")
    inputs = processor(images=[image], return_tensors="pt")
    with torch.inference_mode():
        return jsonify({"vector": _unit(model.get_image_features(**inputs).pooler_output)[0]})
