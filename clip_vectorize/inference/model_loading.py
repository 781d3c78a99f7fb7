"""Finding a CLIP checkpoint and building the runtime that runs it: model source, device, backend.

Every failure becomes one ModelLoadError line that names CLIP_MODEL, says what was tried and how to fix it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import snapshot_download
from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessorPil, CLIPModel

from clip_vectorize.errors import ModelLoadError
from clip_vectorize.inference.backends import Backend, OnnxBackend, TorchBackend
from clip_vectorize.inference.onnx_export import cached_towers
from config import DEFAULT_MODEL, Settings

logger = logging.getLogger(__name__)

REFERENCE_PROJECT_MODEL_DIR = "clip-vit-base-patch32"  # where the old deployment kept its model
HUB_FILES = ["*.json", "*.txt", "*.safetensors"]  # config, tokenizer, preprocessor and weights; nothing else
_FIX_HINT = (
    "Fix: set CLIP_MODEL to a local directory in Hugging Face format (config.json, model.safetensors, "
    "tokenizer and preprocessor_config.json), or allow network access once so the hub id can be downloaded."
)


@dataclass(frozen=True)
class ModelParts:
    """Everything but the weights: enough to tokenize, preprocess and size the vectors."""

    name: str  # what CLIP_MODEL (or its fallback) said: reported with every vector
    directory: Path
    config: Any  # a CLIPConfig; transformers types its sub-configs too loosely to be useful here
    tokenizer: Any  # a transformers tokenizer
    image_processor: CLIPImageProcessorPil


def resolve_model_source(settings: Settings) -> str:
    """CLIP_MODEL if set; else the old deployment's `$CLIP_REFERENCE_PROJECT/clip-vit-base-patch32/`; else the
    hub id."""
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


def pick_backend(requested: str, device: str) -> str:
    """auto: ONNX Runtime on CPU (2x faster text tower here), torch on CUDA (fp16 available)."""
    if requested == "auto":
        return "onnx" if device == "cpu" else "torch"
    if requested == "onnx" and device != "cpu":
        raise ModelLoadError(
            "CLIP_BACKEND=onnx runs on CPU only. Fix: use CLIP_BACKEND=torch (or auto) with DEVICE=cuda.")
    return requested


@contextmanager
def _loading(source: str, where: str) -> Iterator[None]:
    try:
        yield
    except ModelLoadError:
        raise
    except Exception as exc:  # transformers and the hub raise OSError, ValueError, JSON and safetensors errors alike
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
        raise ModelLoadError(
            f"cannot load CLIP model: CLIP_MODEL={source!r}, tried {where}: {reason}. {_FIX_HINT}") from exc


def locate_model(source: str) -> tuple[Path, str]:
    """A local directory holding the checkpoint (a hub id is fetched into, or found in, the HF cache)."""
    local = Path(source).expanduser()
    if local.is_dir():
        return local, f"the local directory {local}"
    if source.startswith(("/", ".", "~")):
        raise ModelLoadError(f"cannot load CLIP model: CLIP_MODEL={source!r} is not an existing directory. {_FIX_HINT}")
    where = "the Hugging Face hub id (or its local cache)"
    with _loading(source, where):
        return Path(snapshot_download(repo_id=source, allow_patterns=HUB_FILES)), where


def load_model_parts(source: str) -> ModelParts:
    directory, where = locate_model(source)
    with _loading(source, where):
        return ModelParts(
            name=source,
            directory=directory,
            config=CLIPConfig.from_pretrained(directory, local_files_only=True),
            tokenizer=AutoTokenizer.from_pretrained(directory, local_files_only=True),
            image_processor=CLIPImageProcessorPil.from_pretrained(directory, local_files_only=True),
        )


def build_backend(settings: Settings, parts: ModelParts, device: str) -> Backend:
    """The runtime for this device; under CLIP_BACKEND=auto a failed ONNX export falls back to torch, logged."""
    choice = pick_backend(settings.backend, device)
    if choice == "onnx":
        try:
            towers = cached_towers(parts.directory, Path(settings.cache_dir).expanduser())
            return OnnxBackend(towers, settings.inference_threads)
        except Exception as exc:
            if settings.backend == "onnx":
                raise ModelLoadError(f"CLIP_BACKEND=onnx: exporting or loading the ONNX towers failed: {exc}. "
                                     "Fix: check CLIP_CACHE_DIR is writable, or set CLIP_BACKEND=torch.") from exc
            logger.warning("ONNX backend unavailable (%s); falling back to torch", exc)
    dtype = torch.float16 if settings.precision == "fp16" else torch.float32
    with _loading(parts.name, f"the weights in {parts.directory}"):
        model = CLIPModel.from_pretrained(parts.directory, local_files_only=True)
    return TorchBackend(model, device, dtype, settings.inference_threads)
