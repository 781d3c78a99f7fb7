"""Finding a CLIP checkpoint, and building the runtime that runs any model's towers: device and backend.

Every failure becomes one ModelLoadError line that names the setting, says what was tried and how to fix it
(inference/model_source.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessorPil, CLIPModel

from clip_vectorize.errors import ModelLoadError
from clip_vectorize.inference.backends import Backend, ImageTower, OnnxBackend, TextTower, TorchBackend
from clip_vectorize.inference.model_source import Source, loading, locate_model, resolve_model_source
from clip_vectorize.inference.onnx_export import cached_towers
from config import Settings

logger = logging.getLogger(__name__)

HUB_FILES = ("*.json", "*.txt", "*.safetensors")  # config, tokenizer, preprocessor and weights; nothing else
_FIX_HINT = (
    "Fix: set CLIP_MODEL to a local directory in Hugging Face format (config.json, model.safetensors, "
    "tokenizer and preprocessor_config.json), or allow network access once so the hub id can be downloaded."
)


class Exportable(Protocol):
    """A model whose towers a backend can run: exported to ONNX by kind, or built in torch."""

    @property
    def source(self) -> Source: ...

    @property
    def directory(self) -> Path: ...

    @property
    def export_kind(self) -> str: ...

    def torch_towers(self) -> tuple[nn.Module, nn.Module | None]: ...


@dataclass(frozen=True)
class ModelParts:
    """Everything but the weights: enough to tokenize, preprocess and size the vectors."""

    source: Source
    directory: Path
    config: Any  # a CLIPConfig; transformers types its sub-configs too loosely to be useful here
    tokenizer: Any  # a transformers tokenizer
    image_processor: CLIPImageProcessorPil

    export_kind = "clip"

    @property
    def name(self) -> str:
        """What CLIP_MODEL (or its fallback) said: reported with every vector."""
        return self.source.value

    def torch_towers(self) -> tuple[nn.Module, nn.Module]:
        with loading(self.source, f"the weights in {self.directory}"):
            model = CLIPModel.from_pretrained(self.directory, local_files_only=True)
        return TextTower(model), ImageTower(model)


def clip_source(settings: Settings) -> Source:
    return Source("CLIP_MODEL", resolve_model_source(settings), "CLIP model", _FIX_HINT, HUB_FILES)


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


BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # either gives native bf16 matrix work; without, torch emulates it


def require_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> None:
    """bf16 is only faster than fp32 where the CPU computes it natively; elsewhere refuse it, naming the flags."""
    flags = cpu_flags(cpuinfo)
    if not flags & set(BF16_CPU_FLAGS):
        vector = sorted(flag for flag in flags if flag.startswith(("avx", "amx")))
        raise ModelLoadError(
            f"CLIP_PRECISION=bf16 needs a CPU with native bf16 ({' or '.join(BF16_CPU_FLAGS)}); this CPU has neither "
            f"(its vector flags: {', '.join(vector) or 'none'}). Fix: CLIP_PRECISION=int8 (faster here) or fp32.")


def cpu_flags(cpuinfo: Path) -> set[str]:
    for line in cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []:
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def pick_backend(requested: str, device: str, precision: str = "fp32") -> str:
    """auto: ONNX Runtime on CPU (2x faster text tower here), torch on CUDA (fp16 available) and for bf16."""
    if requested == "auto":
        return "onnx" if device == "cpu" and precision != "bf16" else "torch"
    if requested == "onnx" and device != "cpu":
        raise ModelLoadError(
            "CLIP_BACKEND=onnx runs on CPU only. Fix: use CLIP_BACKEND=torch (or auto) with DEVICE=cuda.")
    return requested


def load_model_parts(source: Source) -> ModelParts:
    directory, where = locate_model(source)
    with loading(source, where):
        return ModelParts(
            source=source,
            directory=directory,
            config=CLIPConfig.from_pretrained(directory, local_files_only=True),
            tokenizer=AutoTokenizer.from_pretrained(directory, local_files_only=True),
            image_processor=CLIPImageProcessorPil.from_pretrained(directory, local_files_only=True),
        )


def build_backend(settings: Settings, model: Exportable, device: str) -> Backend:
    """The runtime for this device; under CLIP_BACKEND=auto a failed ONNX export falls back to torch, logged."""
    choice = pick_backend(settings.backend, device, settings.precision)
    if settings.precision == "bf16" and device == "cpu":
        require_native_bf16()
    if settings.precision == "int8" and choice != "onnx":
        raise ModelLoadError(f"CLIP_PRECISION=int8 runs with ONNX Runtime on CPU, and this start picked {choice} on "
                             f"{device}. Fix: set DEVICE=cpu, or CLIP_PRECISION=fp32 (or fp16 on CUDA).")
    if choice == "onnx":
        try:
            cache_dir = Path(settings.cache_dir).expanduser()
            towers = cached_towers(model.export_kind, model.directory, cache_dir, settings.precision)
            return OnnxBackend(towers, settings.inference_threads, settings.precision)
        except Exception as exc:
            if settings.backend == "onnx" or settings.precision == "int8":  # torch would not be what was asked
                asked = "CLIP_BACKEND=onnx" if settings.backend == "onnx" else "CLIP_PRECISION=int8"
                raise ModelLoadError(
                    f"{asked}: exporting or loading the ONNX towers of {model.source.variable} failed: {exc}. "
                    "Fix: check CLIP_CACHE_DIR is writable, or set CLIP_BACKEND=torch (fp32).") from exc
            logger.warning("ONNX backend unavailable for %s (%s); falling back to torch", model.source.variable, exc)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(settings.precision, torch.float32)
    text, image = model.torch_towers()
    return TorchBackend(text, image, device, dtype, settings.inference_threads)
