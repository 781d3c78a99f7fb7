"""Loading a CLIP checkpoint once and turning texts and image bytes into unit-length vectors.

No HTTP here: problems are raised as the typed errors of `errors.py`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image
from transformers import AutoTokenizer, CLIPImageProcessorPil, CLIPModel

from backends import Backend, TorchBackend
from config import DEFAULT_MODEL, Settings
from errors import InvalidImageError, ModelLoadError, ModelNotReadyError
from image_io import load_rgb_image

logger = logging.getLogger(__name__)

REFERENCE_PROJECT_MODEL_DIR = "clip-vit-base-patch32"  # where the old deployment kept its model
_FIX_HINT = (
    "Fix: set CLIP_MODEL to a local directory in Hugging Face format (config.json, model.safetensors, "
    "tokenizer and preprocessor_config.json), or allow network access once so the hub id can be downloaded."
)

Item = TypeVar("Item")


@dataclass(frozen=True)
class TextVectors:
    vectors: np.ndarray  # (n, dimension) float32, unit length
    truncated: list[bool]  # True where the text was longer than the model's context and was cut


@dataclass(frozen=True)
class ImageVectors:
    vectors: list[np.ndarray | None]  # input order; None where the image could not be decoded
    errors: dict[int, str]  # input index -> why that image was refused


def resolve_model_source(settings: Settings) -> str:
    """CLIP_MODEL if set; else the old deployment's `$CLIP_REFERENCE_PROJECT/clip-vit-base-patch32/`; else the hub id."""
    if settings.model:
        return settings.model
    if settings.reference_project:
        legacy_dir = Path(settings.reference_project).expanduser() / REFERENCE_PROJECT_MODEL_DIR
        if legacy_dir.is_dir():
            return str(legacy_dir)
    return DEFAULT_MODEL


def pick_device(requested: str) -> str:
    """auto means CUDA when torch sees a GPU; asking for CUDA without one is an error, never a silent CPU run."""
    has_cuda = torch.cuda.is_available()
    if requested == "auto":
        return "cuda" if has_cuda else "cpu"
    if requested == "cuda" and not has_cuda:
        raise ModelLoadError(
            f"DEVICE=cuda but torch {torch.__version__} sees no CUDA device. "
            "Fix: set DEVICE=cpu (or auto), or install a CUDA build of torch and the NVIDIA driver."
        )
    return requested


def load_pretrained(source: str) -> tuple[CLIPModel, object, CLIPImageProcessorPil]:
    """Model, tokenizer and image preprocessor from a local directory (never touching the network) or a hub id."""
    local = Path(source).expanduser()
    if local.is_dir():
        where, kwargs = f"the local directory {local}", {"pretrained_model_name_or_path": str(local), "local_files_only": True}
    elif source.startswith(("/", ".", "~")):
        raise ModelLoadError(f"cannot load CLIP model: CLIP_MODEL={source!r} is not an existing directory. {_FIX_HINT}")
    else:
        where, kwargs = "the Hugging Face hub id (or its local cache)", {"pretrained_model_name_or_path": source}
    try:
        model = CLIPModel.from_pretrained(**kwargs)
        tokenizer = AutoTokenizer.from_pretrained(**kwargs)
        image_processor = CLIPImageProcessorPil.from_pretrained(**kwargs)
    except Exception as exc:  # transformers raises OSError, ValueError, safetensors and JSON errors alike
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
        raise ModelLoadError(f"cannot load CLIP model: CLIP_MODEL={source!r}, tried {where}: {reason}. {_FIX_HINT}") from exc
    return model.eval(), tokenizer, image_processor


class ClipEncoder:
    """One loaded CLIP model: texts and images in, L2-normalized float32 vectors out."""

    def __init__(
        self,
        *,
        model_name: str,
        backend: Backend,
        tokenizer,
        image_processor: CLIPImageProcessorPil,
        dimension: int,
        context_length: int,
        device: str,
        batch_size: int,
        max_image_pixels: int,
    ) -> None:
        self.model_name = model_name
        self.backend = backend
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.dimension = dimension
        self.context_length = context_length
        self.device = device
        self.batch_size = batch_size
        self.max_image_pixels = max_image_pixels
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.ready = False

    @classmethod
    def load(cls, settings: Settings) -> ClipEncoder:
        """Load, place on the device, warm up, and log one line saying what happened."""
        started = time.perf_counter()
        source = resolve_model_source(settings)
        device = pick_device(settings.device)
        model, tokenizer, image_processor = load_pretrained(source)
        encoder = cls(
            model_name=source,
            backend=TorchBackend(model, device),
            tokenizer=tokenizer,
            image_processor=image_processor,
            dimension=model.config.projection_dim,
            context_length=model.config.text_config.max_position_embeddings,
            device=device,
            batch_size=settings.batch_size,
            max_image_pixels=settings.max_image_pixels,
        )
        encoder.warm_up()
        logger.info(
            "CLIP model %s loaded on %s (backend %s, dimension %d) in %.1f s",
            source, device, encoder.backend.name, encoder.dimension, time.perf_counter() - started,
        )
        return encoder

    def warm_up(self) -> None:
        """One text and one image pass, so no user pays for the first inference; then report ready."""
        self._encode_text_batch(["a photo of a car"])
        self._encode_image_batch([Image.new("RGB", (256, 256), "gray")])
        self.ready = True

    def encode_texts(self, texts: Sequence[str]) -> TextVectors:
        self._require_ready()
        batches = _in_chunks(list(texts), self.batch_size, self._encode_text_batch)
        vectors = [batch_vectors for batch_vectors, _ in batches] or [np.zeros((0, self.dimension), np.float32)]
        truncated = [cut for _, batch_truncated in batches for cut in batch_truncated]
        return TextVectors(np.concatenate(vectors), truncated)

    def encode_images(self, blobs: Sequence[bytes]) -> ImageVectors:
        """Encode each image; one that can't be decoded gets None and an error, the others still get vectors."""
        self._require_ready()
        images: dict[int, Image.Image] = {}
        errors: dict[int, str] = {}
        for index, blob in enumerate(blobs):
            try:
                images[index] = load_rgb_image(blob, self.max_image_pixels)
            except InvalidImageError as exc:
                errors[index] = str(exc)
        vectors: list[np.ndarray | None] = [None] * len(blobs)
        batches = _in_chunks(list(images.items()), self.batch_size, self._encode_indexed_images)
        for batch in batches:
            for index, vector in batch:
                vectors[index] = vector
        return ImageVectors(vectors, errors)

    def _require_ready(self) -> None:
        if not self.ready:
            raise ModelNotReadyError("the CLIP model is not loaded yet")

    def _encode_indexed_images(self, items: Sequence[tuple[int, Image.Image]]) -> list[tuple[int, np.ndarray]]:
        vectors = self._encode_image_batch([image for _, image in items])
        return [(index, vector) for (index, _), vector in zip(items, vectors)]

    def _encode_image_batch(self, images: Sequence[Image.Image]) -> np.ndarray:
        pixel_values = self.image_processor(images=list(images), return_tensors="np")["pixel_values"]
        return self.backend.encode_image(np.ascontiguousarray(pixel_values, dtype=np.float32))

    def _encode_text_batch(self, texts: Sequence[str]) -> tuple[np.ndarray, list[bool]]:
        input_ids, attention_mask, truncated = self.tokenize(texts)
        return self.backend.encode_text(input_ids, attention_mask), truncated

    def tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[bool]]:
        """Token ids padded to the longest text; past the context length, cut but keep the end token CLIP pools on."""
        token_lists = self.tokenizer(list(texts), add_special_tokens=True)["input_ids"]
        width = min(self.context_length, max(len(tokens) for tokens in token_lists))
        input_ids = np.full((len(token_lists), width), self.pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((len(token_lists), width), dtype=np.int64)
        truncated = []
        for row, tokens in enumerate(token_lists):
            cut = len(tokens) > self.context_length
            if cut:
                tokens = tokens[: self.context_length - 1] + tokens[-1:]
            input_ids[row, : len(tokens)] = tokens
            attention_mask[row, : len(tokens)] = 1
            truncated.append(cut)
        return input_ids, attention_mask, truncated


def _in_chunks(items: Sequence[Item], size: int, run: Callable[[Sequence[Item]], object]) -> list:
    """Apply `run` to consecutive slices of at most `size` items (BATCH_SIZE bounds one forward pass)."""
    return [run(items[start : start + size]) for start in range(0, len(items), size)]
