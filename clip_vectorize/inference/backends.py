"""Inference runtimes behind one small protocol: arrays in, L2-normalized float32 vectors out.

The text and image paths prepare `input_ids`/`attention_mask` and `pixel_values` as numpy arrays and do not
care which runtime turns them into vectors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime
import torch
from torch import nn
from transformers import CLIPModel

INT8_SUFFIX = ".int8.onnx"  # each tower's int8 copy sits beside its fp32 export (inference.onnx_export)


def tower_file(towers_dir: Path, tower: str, precision: str) -> Path:
    """The file the ONNX backend runs for `tower` ("text", "image") at `precision` ("fp32" or "int8")."""
    return towers_dir / (f"{tower}{INT8_SUFFIX}" if precision == "int8" else f"{tower}.onnx")


class TextBackend(Protocol):
    name: str

    def encode_text(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...


class Backend(TextBackend, Protocol):
    def encode_image(self, pixel_values: np.ndarray) -> np.ndarray: ...


class TextTower(nn.Module):
    """CLIP's text transformer + projection + L2 normalization, as one module (also what gets exported)."""

    def __init__(self, model: CLIPModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        features = self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return nn.functional.normalize(features.float(), dim=-1)


class ImageTower(nn.Module):
    """CLIP's vision transformer + projection + L2 normalization."""

    def __init__(self, model: CLIPModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        features = self.model.get_image_features(pixel_values=pixel_values).pooler_output
        return nn.functional.normalize(features.float(), dim=-1)


class TorchBackend:
    """Eager PyTorch on CPU or CUDA; fp32, or fp16 on CUDA. Vectors come back float32 either way.
    A text-only model (a multilingual text tower) has no image tower."""

    name = "torch"

    def __init__(self, text: nn.Module, image: nn.Module | None, device: str, dtype: torch.dtype = torch.float32,
                 threads: int = 0) -> None:
        self.device = torch.device(device)
        if threads:
            torch.set_num_threads(threads)
        self._text = text.to(self.device, dtype).eval()
        self._image = image.to(self.device, dtype).eval() if image is not None else None
        self._dtype = dtype

    def encode_text(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            ids = torch.from_numpy(input_ids).to(self.device)
            mask = torch.from_numpy(attention_mask).to(self.device)
            return self._text(ids, mask).cpu().numpy()

    def encode_image(self, pixel_values: np.ndarray) -> np.ndarray:
        if self._image is None:
            raise RuntimeError("this model has no image tower")
        with torch.inference_mode():
            pixels = torch.from_numpy(pixel_values).to(self.device, self._dtype)
            return self._image(pixels).cpu().numpy()


class OnnxBackend:
    """ONNX Runtime on CPU, running the towers inference.onnx_export made (projection and normalization inside).
    A text-only model's export has no image.onnx."""

    name = "onnx"

    def __init__(self, towers_dir: Path, threads: int = 0, precision: str = "fp32") -> None:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads  # 0: one per core
        options.inter_op_num_threads = 1
        files = {tower: tower_file(towers_dir, tower, precision) for tower in ("text", "image")}
        sessions = {tower: onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                    for tower, path in files.items() if path.is_file()}
        self._text = sessions["text"]
        self._image = sessions.get("image")

    def encode_text(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self._text.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})[0]

    def encode_image(self, pixel_values: np.ndarray) -> np.ndarray:
        if self._image is None:
            raise RuntimeError("this model has no image tower")
        return self._image.run(None, {"pixel_values": pixel_values})[0]
