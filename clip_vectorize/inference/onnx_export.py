"""Exporting a model's towers to ONNX once, and finding them again on the next start.

CLIP exports a text and an image tower; a multilingual text model (inference.multilingual) a text tower.

Exports are cached under `<cache_dir>/onnx/<model>-<key>/`, where the key hashes the model's config, its
weight files (name, size, mtime) and the versions of every library that shapes the exported graph, so a
restart reuses the export and an upgrade or a new checkpoint makes a fresh one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import onnx
import onnxruntime
import torch
import transformers
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers import optimizer
from transformers import CLIPModel

from clip_vectorize.inference.backends import INT8_SUFFIX, ImageTower, TextTower
from clip_vectorize.inference.multilingual import build_tower, detect_format, multilingual_source

logger = logging.getLogger(__name__)

EXPORT_FORMAT = 2  # bump when what gets exported changes
OPSET = 17
TOWER_FILES = {"clip": ("text.onnx", "image.onnx"), "multilingual": ("text.onnx",)}  # by kind of model
QUANTIZED_OPS = ["MatMul", "Gemm", "Attention"]  # the weights that hold nearly all the compute; Attention once fused
ONNX_MAX_BYTES = 2 * 1024**3  # protobuf's limit for one .onnx file: M-CLIP's XLM-R large (2.2 GB) is over it


def export_key(kind: str, model_dir: Path) -> str:
    """A hash of what shapes the export: its kind, the model's config and weight files, the library versions."""
    digest = hashlib.sha256(f"format={EXPORT_FORMAT};opset={OPSET};kind={kind}".encode())
    for library in (torch, transformers, onnx, onnxruntime):
        digest.update(f";{library.__name__}={library.__version__}".encode())
    for config in sorted(model_dir.rglob("*.json")):  # sentence-transformers keep module configs in subfolders
        digest.update(config.read_bytes())
    for weights in sorted([*model_dir.rglob("*.safetensors"), *model_dir.rglob("*.bin")]):
        stat = weights.stat()
        digest.update(f";{weights.relative_to(model_dir)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]


def cached_towers(kind: str, model_dir: Path, cache_dir: Path, precision: str = "fp32") -> Path:
    """The directory holding this model's exported towers (text.onnx, and image.onnx for CLIP), exporting them
    first if needed; with precision int8 also their int8 copies, quantized once."""
    target = _exported_towers(kind, model_dir, cache_dir)
    if precision == "int8" and not all((target / f"{Path(name).stem}{INT8_SUFFIX}").is_file()
                                       for name in TOWER_FILES[kind]):
        _in_child_process("quantize", str(target))  # ~2 GB of peak memory for ViT-B/32, gone with the child
    return target


def _exported_towers(kind: str, model_dir: Path, cache_dir: Path) -> Path:
    target = cache_dir / "onnx" / f"{model_dir.name}-{export_key(kind, model_dir)}"
    if all((target / name).is_file() for name in TOWER_FILES[kind]):
        return target
    _check_size(model_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".export-") as scratch:
        export_in_child_process(kind, model_dir, Path(scratch))
        try:
            os.rename(scratch, target)  # atomic: a concurrent worker sees all of it or none
        except OSError:
            if not target.is_dir():  # another worker finishing first is fine; anything else is not
                raise
            shutil.rmtree(scratch, ignore_errors=True)
    logger.info("exported ONNX towers of %s to %s in %.1f s", model_dir, target, time.perf_counter() - started)
    return target


def _quantize_once(towers_dir: Path) -> None:
    """Dynamic int8 quantization of each tower's weights (activations are quantized per batch at run time).
    Written under a temporary name and renamed, so a concurrent worker never reads half a file."""
    for fp32 in sorted(towers_dir.glob("*.onnx")):
        if fp32.name.endswith(INT8_SUFFIX) or (int8 := fp32.with_name(fp32.stem + INT8_SUFFIX)).is_file():
            continue
        started = time.perf_counter()
        partial = int8.with_name(f".{int8.name}.{os.getpid()}.partial")
        # The fused graphs hold ONNX Runtime's own ops, which shape inference cannot type: say their tensors are floats
        quantize_dynamic(fp32, partial, op_types_to_quantize=QUANTIZED_OPS, weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        os.replace(partial, int8)
        logger.info("quantized %s to int8 in %.1f s", fp32, time.perf_counter() - started)


def _check_size(model_dir: Path) -> None:
    """Refuse at once what cannot be one .onnx file, rather than after minutes of exporting."""
    weights = list(model_dir.rglob("*.safetensors")) or list(model_dir.rglob("*.bin"))  # one copy, not both
    size = sum(path.stat().st_size for path in weights)
    if size > ONNX_MAX_BYTES:
        raise RuntimeError(f"{model_dir.name}'s weights are {size / 1024**3:.1f} GiB, over ONNX's 2 GiB limit for "
                           "one file; it runs in torch")


def export_in_child_process(kind: str, model_dir: Path, out_dir: Path) -> None:
    """Export in a short-lived process: the torch weights and export buffers (3+ GB for ViT-B/32) leave with it,
    instead of staying in the worker's peak memory for its whole life."""
    _in_child_process(kind, str(model_dir), str(out_dir))


def _in_child_process(*args: str) -> None:
    """`python -m` this module with `args` (an export, or "quantize DIR"); its last stderr line on failure."""
    done = subprocess.run([sys.executable, "-m", __name__, *args], cwd=Path(__file__).resolve().parents[2],
                          capture_output=True, text=True)
    if done.returncode != 0:
        last_line = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise RuntimeError(f"ONNX {'quantization' if args[0] == 'quantize' else 'export'} failed: {last_line}")


def export_towers(kind: str, model_dir: Path, out_dir: Path) -> None:
    # The tracer's warnings (constant-folded shape checks, legacy exporter) are expected: these graphs have no
    # data-dependent control flow on the paths we use, and the parity tests prove the export.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        {"clip": _export_clip, "multilingual": _export_multilingual}[kind](model_dir, out_dir)


def _export_clip(model_dir: Path, out_dir: Path) -> None:
    # Eager attention exports as plain MatMul/Softmax, which ONNX Runtime's optimizer knows how to fuse.
    model = CLIPModel.from_pretrained(model_dir, local_files_only=True, attn_implementation="eager").eval()
    config: Any = model.config  # a CLIPConfig
    size = config.vision_config.image_size
    _export_text(TextTower(model), out_dir / "text.onnx")
    _export(ImageTower(model), (torch.zeros((2, 3, size, size)),), ["pixel_values"],
            {"pixel_values": {0: "batch"}}, out_dir / "image.onnx")
    for name, tower_config in (("text.onnx", config.text_config), ("image.onnx", config.vision_config)):
        _fuse(out_dir / name, "clip", tower_config.num_attention_heads, tower_config.hidden_size)


def _export_multilingual(model_dir: Path, out_dir: Path) -> None:
    fmt = detect_format(model_dir, multilingual_source(str(model_dir)))
    _export_text(build_tower(model_dir, fmt, attention="eager"), out_dir / "text.onnx")
    _fuse(out_dir / "text.onnx", "bert", 0, 0)  # 0, 0: the optimizer reads heads and width from the graph


def _export_text(tower: torch.nn.Module, path: Path) -> None:
    token_ids = torch.ones((2, 8), dtype=torch.int64)
    _export(tower, (token_ids, torch.ones_like(token_ids)), ["input_ids", "attention_mask"],
            {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}}, path)


def _export(module: torch.nn.Module, inputs: tuple, input_names: list[str], axes: dict, path: Path) -> None:
    torch.onnx.export(
        module, inputs, str(path), input_names=input_names, output_names=["embeddings"],
        dynamic_axes={**axes, "embeddings": {0: "batch"}}, opset_version=OPSET, dynamo=False,
    )


def _fuse(path: Path, model_type: str, num_heads: int, hidden_size: int) -> None:
    """ONNX Runtime's transformer fusions (attention, skip-LayerNorm, GELU): ~12% off CLIP's text tower."""
    fused = optimizer.optimize_model(str(path), model_type=model_type, num_heads=num_heads, hidden_size=hidden_size,
                                     opt_level=0)
    fused.save_model_to_file(str(path), use_external_data_format=False)


# python -m clip_vectorize.inference.onnx_export KIND MODEL_DIR OUT_DIR: what export_in_child_process runs
if __name__ == "__main__":
    if sys.argv[1] == "quantize":
        logging.basicConfig(level=logging.INFO)
        _quantize_once(Path(sys.argv[2]))
    else:
        export_towers(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
