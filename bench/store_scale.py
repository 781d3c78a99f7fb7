"""The gallery's stores at scale: `python -m bench.store_scale` prints a markdown table and writes a JSON file.

Through the project's own store classes (what the indexer and the service use), for each size: Qdrant Edge (the
embedded store) and, up to --local-mode-up-to, qdrant-client's local mode (the embedded store before Edge):
- upsert rate (batches of 256, as the indexer writes them), and Edge's search-index build past EXACT_UP_TO points,
  in its child process, with the longest a search waited meanwhile (a thread searching every 20 ms);
- in a fresh process: the time to open the store, its RSS over an empty store, query p50 / p99 (top 20) without a
  filter and with a keyword filter matching 10% and 1% of the points, recall@20 against numpy's exact top 20;
- the longest one query held the GIL (a ticker thread's longest gap).
Then the indexer command (`python -m clip_vectorize.gallery index`, as users run it, int8, the full-size random
ViT-B/32) over a --manifest-rows manifest whose photos are few and repeated: every image after the first of its
content is a twin, its vector reused, not encoded; the index build (if any) is reported apart from the writing.
Vectors are CLIP-like: 512-d, low intrinsic dimension (a 64-d latent through a fixed random matrix, plus noise),
unit length; queries are 100 stored points plus noise and 100 fresh vectors of the same distribution.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench.model import CACHE_DIR

DIMENSION, LATENT, NOISE = 512, 64, 0.3
QUERIES, TOP = 200, 20
BATCH = 256
RESULTS = Path(__file__).resolve().parent / "results"


def clip_like(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(12345).normal(size=(LATENT, DIMENSION)).astype(np.float32)
    vectors = rng.normal(size=(count, LATENT)).astype(np.float32) @ basis
    vectors += rng.normal(scale=NOISE * np.sqrt(LATENT), size=vectors.shape).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def dataset(size: int, work: Path) -> dict:
    """Vectors, payload columns, queries and their exact top 20 (unfiltered), saved for the child processes."""
    vectors = clip_like(size, seed=size)
    rng = np.random.default_rng(1)
    near = vectors[rng.choice(size, QUERIES // 2, replace=False)] + rng.normal(scale=0.05, size=(QUERIES // 2,
                                                                                               DIMENSION))
    queries = np.vstack([near, clip_like(QUERIES // 2, seed=size + 1)]).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    truth = top_k(queries @ vectors.T)
    np.save(work / "vectors.npy", vectors)
    np.save(work / "queries.npy", queries)
    np.save(work / "truth.npy", truth)
    return {"size": size}


def top_k(scores: np.ndarray) -> np.ndarray:
    """Each row's TOP best column indices, best first (argpartition: a full sort of 1M columns is slow)."""
    best = np.argpartition(-scores, TOP, axis=1)[:, :TOP]
    order = np.argsort(-np.take_along_axis(scores, best, axis=1), axis=1)
    return np.take_along_axis(best, order, axis=1)


def store_config(kind: str, path: Path):
    from clip_vectorize.gallery.store.base import StoreConfig

    return StoreConfig("bench", path=str(path), payload_indexes=(("brand", "keyword"), ("tag", "keyword")))


def open_kind(kind: str, path: Path):
    from clip_vectorize.gallery.store import open_store
    from clip_vectorize.gallery.store.server import ServerStore

    config = store_config(kind, path)
    return open_store(config) if kind == "edge" else ServerStore(config)


def payload(i: int) -> dict:
    return {"image_id": i, "brand": f"brand-{i % 10}", "tag": f"tag-{i % 100}", "model": "bench", "source": "bench"}


def build(kind: str, work: Path, store_path: Path) -> dict:
    """Child 1: write every point, then (Edge) build the search index while a thread keeps searching."""
    from clip_vectorize.gallery.store.base import NewPoint, SearchQuery

    vectors = np.load(work / "vectors.npy", mmap_mode="r")
    store = open_kind(kind, store_path)
    store.ensure_collection(DIMENSION)
    began = time.perf_counter()
    for start in range(0, len(vectors), BATCH):
        rows = vectors[start:start + BATCH]
        store.upsert([NewPoint(start + i, row.tolist(), payload(start + i)) for i, row in enumerate(rows)])
    store.flush()
    upsert_s = time.perf_counter() - began
    waits: list[float] = []
    stop = threading.Event()

    def search_meanwhile() -> None:
        while not stop.is_set():
            asked = time.perf_counter()
            store.nearest(vectors[0], SearchQuery(limit=TOP))
            waits.append(time.perf_counter() - asked)
            time.sleep(0.02)

    searcher = threading.Thread(target=search_meanwhile, daemon=True)
    searcher.start()
    began = time.perf_counter()
    built = store.build_search_index()
    build_s = time.perf_counter() - began
    stop.set()
    searcher.join()
    store.close()
    return {"upsert_s": round(upsert_s, 2), "upsert_per_s": round(len(vectors) / upsert_s),
            "index_built": built, "build_s": round(build_s, 1) if built else None,
            "search_wait_max_ms_during_build": round(max(waits) * 1000, 1) if built and waits else None}


def query(kind: str, work: Path, store_path: Path) -> dict:
    """Child 2, a fresh process: open, RSS over an empty store, queries, recall, the longest GIL hold."""
    from clip_vectorize.gallery.store.base import SearchQuery
    from clip_vectorize.gallery.store.filters import parse_filter

    queries, truth = np.load(work / "queries.npy"), np.load(work / "truth.npy")
    if kind == "local-mode":  # a filtered local-mode query takes a second at 100k: fewer of them
        queries, truth = queries[::5], truth[::5]
    empty = open_kind(kind, work / "empty-store")
    empty.close()
    rss_empty = rss_mb()
    began = time.perf_counter()
    store = open_kind(kind, store_path)
    open_s = time.perf_counter() - began
    rss_open = rss_mb()
    result = {"open_s": round(open_s, 2), "rss_over_empty_mb": round(rss_open - rss_empty)}
    for name, condition in [("", None), ("_filter_10pct", {"must": [{"key": "brand", "match": {"value": "brand-3"}}]}),
                            ("_filter_1pct", {"must": [{"key": "tag", "match": {"value": "tag-42"}}]})]:
        parsed = parse_filter(condition) if condition else None
        times, found = timed_queries(store, queries, SearchQuery(limit=TOP, condition=parsed))
        result[f"query_p50_ms{name}"] = round(statistics.median(times), 2)
        result[f"query_p99_ms{name}"] = round(float(np.percentile(times, 99)), 2)
        if not name:
            result["recall_at_20"] = round(float(np.mean([len(set(f) & set(t.tolist())) / TOP
                                                          for f, t in zip(found, truth)])), 4)
    result["gil_hold_max_ms"] = longest_gil_hold(store, queries[:50], SearchQuery(limit=TOP))
    store.close()
    return result


def timed_queries(store, queries: np.ndarray, search) -> tuple[list[float], list[list[int]]]:
    times, found = [], []
    for vector in queries:
        began = time.perf_counter()
        hits = store.nearest(vector, search)
        times.append((time.perf_counter() - began) * 1000)
        found.append([hit.id for hit in hits])
    return times, found


def longest_gil_hold(store, queries: np.ndarray, search) -> float:
    """A thread ticking every 1 ms records its longest gap while the main thread queries: the GIL held by one call."""
    gaps: list[float] = []
    stop = threading.Event()

    def tick() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            time.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    for vector in queries:
        store.nearest(vector, search)
    stop.set()
    ticker.join()
    return round(max(gaps) * 1000, 1)


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(step: str, kind: str, work: str, store_path: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "bench.store_scale", "--child", step, kind, work, store_path],
                          capture_output=True, text=True, timeout=7200)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(size: int, kinds: list[str]) -> list[dict]:
    rows = []
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as scratch:
        work = Path(scratch)
        dataset(size, work)
        for kind in kinds:
            store_path = work / f"store-{kind}"
            print(f"{kind} at {size} points ...", file=sys.stderr, flush=True)
            row = {"store": kind, "points": size, **child("build", kind, scratch, str(store_path))}
            row.update(child("query", kind, scratch, str(store_path)))
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            shutil.rmtree(store_path, ignore_errors=True)
    return rows


def manifest_run(rows: int, photos: int = 50) -> dict:
    """The indexer over `rows` manifest rows naming `photos` distinct small photos, into a fresh embedded store."""
    from PIL import Image

    from bench.model import REPO_ROOT, model_dir

    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as scratch:
        work = Path(scratch)
        rng = np.random.default_rng(3)
        for i in range(photos):
            pixels = rng.integers(0, 255, size=(240, 320, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(work / f"car-{i}.jpg", quality=85)
        lines = ["image_id,path,brand"] + [f"{i},car-{i % photos}.jpg,brand-{i % 10}" for i in range(rows)]
        (work / "manifest.csv").write_text("\n".join(lines) + "\n")
        env = {**os.environ, "CLIP_MODEL": str(model_dir()), "DEVICE": "cpu", "CLIP_PRECISION": "int8",
               "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT), "CLIP_CACHE_DIR": str(CACHE_DIR / "cache")}
        began = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "clip_vectorize.gallery", "index", "manifest.csv", "--quiet"],
                              cwd=work, env=env, capture_output=True, text=True, timeout=3600)
        wall = time.monotonic() - began
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1]}
    summary = done.stderr[done.stderr.index("source "):]
    built = re.search(r"search index built in ([\d.]+) s", done.stderr)
    return {"rows": rows, "photos": photos, "command_wall_s": round(wall, 1),
            "index_build_s": float(built[1]) if built else None,
            "summary": " ".join(summary.split())}


def model_vectors_recall(count: int = 2000, held_out: int = 100) -> dict:
    """Recall@20 of the indexed search on the full-size random model's vectors of generated photos (int8 tower):
    `count` photos stored, `held_out` more as queries; the index forced on at this small size."""
    from PIL import Image, ImageDraw

    from bench.model import model_dir
    from clip_encoder import ClipEncoder
    from clip_vectorize.gallery.store import edge
    from clip_vectorize.gallery.store.base import NewPoint, SearchQuery
    from config import Settings

    settings = Settings.from_env({"CLIP_MODEL": str(model_dir()), "DEVICE": "cpu", "CLIP_PRECISION": "int8",
                                  "CLIP_CACHE_DIR": str(CACHE_DIR / "cache")})
    encoder = ClipEncoder.load(settings)
    rng = np.random.default_rng(7)
    photos = []
    for _ in range(count + held_out):
        image = Image.new("RGB", (224, 224), tuple(int(c) for c in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(image)
        for _ in range(8):
            x, y, w, h = (int(v) for v in rng.integers(0, 200, 4))
            draw.rectangle((x, y, x + w, y + h), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        photos.append(buffer.getvalue())
    vectors = np.vstack([np.vstack(encoder.encode_images(photos[i:i + 32])) for i in range(0, len(photos), 32)])
    stored, queries = vectors[:count], vectors[count:]
    truth = top_k(queries @ stored.T)
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as scratch:
        edge.EXACT_UP_TO, edge.UNINDEXED_UP_TO, edge.INDEXING_THRESHOLD_KB = 0, 0, 1
        store = open_kind("edge", Path(scratch))
        store.ensure_collection(vectors.shape[1])
        store.upsert([NewPoint(i, row.tolist(), {}) for i, row in enumerate(stored)])
        built = store.build_search_index()
        found = [[hit.id for hit in store.nearest(q, SearchQuery(limit=TOP))] for q in queries]
        store.close()
    recall = float(np.mean([len(set(f) & set(t.tolist())) / TOP for f, t in zip(found, truth)]))
    similarity = float(np.mean(stored[:200] @ stored[:200].T))
    return {"points": count, "queries": held_out, "index_built": built, "recall_at_20": round(recall, 4),
            "mean_cosine_between_photos": round(similarity, 3)}


def table(rows: list[dict]) -> str:
    head = ("| store | points | upsert points/s | index build | search wait during build | open | RSS over empty | "
            "query p50 / p99 | filtered 10% / 1% p50 | recall@20 | longest GIL hold |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['store']} | {r['points']:,} | {r['error']} |" + " |" * 9)
            continue
        build = f"{r['build_s']} s" if r.get("index_built") else "none (exact)"
        wait = f"{r['search_wait_max_ms_during_build']} ms" if r.get("index_built") else ""
        lines.append(f"| {r['store']} | {r['points']:,} | {r['upsert_per_s']:,} | {build} | {wait} | {r['open_s']} s | "
                     f"+{r['rss_over_empty_mb']} MB | {r['query_p50_ms']} / {r['query_p99_ms']} ms | "
                     f"{r['query_p50_ms_filter_10pct']} / {r['query_p50_ms_filter_1pct']} ms | {r['recall_at_20']} | "
                     f"{r['gil_hold_max_ms']} ms |")
    return "\n".join(lines)


def cpu_flags() -> str:
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), [])
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")
    return " ".join(flag for flag in flags if flag in wanted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=4, metavar=("STEP", "KIND", "WORK", "STORE"), help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--local-mode-up-to", type=int, default=100_000)
    parser.add_argument("--model-vectors", type=int, default=2000, help="0: skip the model-vectors recall check")
    parser.add_argument("--manifest-rows", type=int, default=100_000, help="0: skip the indexer command")
    args = parser.parse_args()
    if args.child:
        step, kind, work, store_path = args.child
        print(json.dumps((build if step == "build" else query)(kind, Path(work), Path(store_path))))
        return
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        kinds = ["edge"] + (["local-mode"] if size <= args.local_mode_up_to else [])
        rows += measure(size, kinds)
    manifest = manifest_run(args.manifest_rows) if args.manifest_rows else None
    model_recall = model_vectors_recall(args.model_vectors) if args.model_vectors else None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    RESULTS.mkdir(exist_ok=True)
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "flags": cpu_flags()}
    report = {"machine": machine, "rows": rows, "manifest": manifest, "model_vectors": model_recall}
    (RESULTS / f"store-scale-{stamp}.json").write_text(json.dumps(report, indent=1))
    print(f"cores {machine['cores']}, flags: {machine['flags']}\n")
    print(table(rows))
    if manifest:
        print(f"\nindexer over a manifest: {json.dumps(manifest)}")
    if model_recall:
        print(f"\nthe index on the model's own vectors: {json.dumps(model_recall)}")


if __name__ == "__main__":
    main()
