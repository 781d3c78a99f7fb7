"""Which runtime for which precision: the service's exported ONNX towers under ONNX Runtime and OpenVINO, and
the torch towers, timed on the same inputs. `python -m bench.runtimes --towers DIR` prints a table and one
JSON line.

DIR is the service's export of a model (CLIP_CACHE_DIR/onnx/<model>-<hash>/, holding text.onnx, image.onnx and,
once CLIP_PRECISION=int8 has run, their .int8.onnx copies). OpenVINO is not a dependency of the service:
install it beside the venv (`pip install --target /tmp/ov openvino` and PYTHONPATH=/tmp/ov) to include it.
bf16 rows run only on a CPU with native bf16 (avx512_bf16 or amx_bf16): elsewhere OpenVINO silently runs f32
and torch emulates bf16 slowly, so neither figure would say anything about bf16.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from clip_vectorize.inference.model_loading import cpu_flags

TEXT_TOKENS, IMAGE_BATCH = 12, 8
CPUINFO = Path("/proc/cpuinfo")
NATIVE_BF16 = {"avx512_bf16", "amx_bf16"}
Towers = dict[str, Callable[[dict[str, np.ndarray]], np.ndarray]]


def inputs() -> dict[str, dict[str, np.ndarray]]:
    ids = np.random.default_rng(0).integers(1000, 40000, (1, TEXT_TOKENS), dtype=np.int64)
    ids[:, 0], ids[:, -1] = 49406, 49407
    pixels = np.random.default_rng(1).normal(0, 1, (IMAGE_BATCH, 3, 224, 224)).astype(np.float32)
    return {"text": {"input_ids": ids, "attention_mask": np.ones_like(ids)}, "image": {"pixel_values": pixels}}


def onnxruntime_towers(towers: Path, suffix: str) -> Towers:
    sessions = {tower: ort.InferenceSession(str(towers / f"{tower}{suffix}"), providers=["CPUExecutionProvider"])
                for tower in ("text", "image")}
    return {tower: (lambda feed, s=session: s.run(None, feed)[0]) for tower, session in sessions.items()}


def openvino_towers(towers: Path, suffix: str, precision: str) -> Towers:
    import openvino as ov  # optional: see the module docstring

    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
    compiled = {tower: core.compile_model(str(towers / f"{tower}{suffix}"), "CPU", config)
                for tower in ("text", "image")}
    return {tower: (lambda feed, c=model: c(feed)[0]) for tower, model in compiled.items()}


def timed(run: Callable[[dict[str, np.ndarray]], np.ndarray], feed: dict[str, np.ndarray], repeats: int) -> float:
    for _ in range(2):
        run(feed)
    durations = []
    for _ in range(repeats):
        began = time.perf_counter()
        run(feed)
        durations.append(time.perf_counter() - began)
    return statistics.median(durations) * 1000


def min_cosine(ours: np.ndarray, reference: np.ndarray) -> float:
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    ours = ours / np.linalg.norm(ours, axis=1, keepdims=True)
    reference = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    return float(np.min(np.sum(ours * reference, axis=1)))


def candidates(towers: Path) -> dict[str, Callable[[], Towers]]:
    native_bf16 = bool(NATIVE_BF16 & cpu_flags(CPUINFO))
    found: dict[str, Callable[[], Towers]] = {"onnxruntime fp32": lambda: onnxruntime_towers(towers, ".onnx")}
    if (towers / "text.int8.onnx").is_file():
        found["onnxruntime int8"] = lambda: onnxruntime_towers(towers, ".int8.onnx")
    try:
        import openvino  # noqa: F401
    except ImportError:
        return found
    found["openvino fp32"] = lambda: openvino_towers(towers, ".onnx", "f32")
    if native_bf16:
        found["openvino bf16"] = lambda: openvino_towers(towers, ".onnx", "bf16")
    if (towers / "text.int8.onnx").is_file():
        found["openvino int8 (the int8 ONNX)"] = lambda: openvino_towers(towers, ".int8.onnx", "f32")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--towers", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    feeds = inputs()
    results: dict[str, dict] = {}
    reference: dict[str, np.ndarray] = {}
    for name, build in candidates(args.towers).items():
        try:
            runs = build()
        except Exception as exc:  # noqa: BLE001  (a runtime that cannot load a graph is a finding, not a crash)
            results[name] = {"error": str(exc).strip().splitlines()[-1]}
            continue
        row: dict = {}
        for tower, feed in feeds.items():
            output = runs[tower](feed)
            reference.setdefault(tower, output)
            row[f"{tower}_ms"] = round(timed(runs[tower], feed, args.repeats if tower == "text" else 5), 1)
            row[f"{tower}_cosine"] = round(min_cosine(output, reference[tower]), 5)
        results[name] = row
    results["cpu_native_bf16"] = {"flags": sorted(NATIVE_BF16 & cpu_flags(CPUINFO))}
    print(f"text 1 x {TEXT_TOKENS} tokens, image batch {IMAGE_BATCH}; cosine = lowest to onnxruntime fp32")
    for name, row in results.items():
        print(f"{name:32} {row}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
