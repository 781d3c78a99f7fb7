"""The search endpoints and the in-service gallery, measured: `python -m bench.search` prints lines and one JSON line.

The service as a user starts it (gunicorn, deploy/gunicorn.conf.py) with the full-size random ViT-B/32
(bench/.cache) and CLIP_GALLERY_DIR on a folder of generated 2 MP photos, so it indexes them in the background at
start-up. One user sends a text search and a text encode every PACE_S, alternately (distinct queries: the text
cache does not flatter them), while the index runs, then again once it is done. The naive reference, in the same
run: the same user's encodes while the indexer command (`python -m clip_vectorize.gallery index`, its own process
and model, as a user would run it beside a service) indexes the same photos into a store of its own.
Then, on the idle service: /search-similar, /search-by-image with a 2 MP photo, and a thumbnail made and then
served from its cache.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import servers
from bench.gallery import photo_folder
from bench.model import CACHE_DIR, REPO_ROOT, model_dir

PACE_S = 0.25  # one search every 250 ms from one user, while the index runs
IDLE_REQUESTS = 40


def call(port: int, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, bytes, float]:
    """One request on a fresh connection: status, body, seconds."""
    connection = http.client.HTTPConnection(servers.HOST, port, timeout=120)
    began = time.perf_counter()
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read(), time.perf_counter() - began
    finally:
        connection.close()


def post_json(port: int, path: str, payload: dict) -> tuple[int, bytes, float]:
    return call(port, "POST", path, json.dumps(payload).encode(), {"Content-Type": "application/json"})


def status(port: int) -> dict:
    return json.loads(call(port, "GET", "/gallery/status")[1])


def percentiles(seconds: list[float]) -> dict:
    ordered = sorted(seconds)
    return {"n": len(ordered), "p50_ms": round(statistics.median(ordered) * 1000, 1),
            "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 1)}


def paced_user(port: int, still_running: Callable[[], bool], phase: str) -> dict[str, list[float]]:
    """A text search and a text encode, alternately, every PACE_S until `still_running()` says no; the texts
    name the phase, so no phase finds another's texts in the cache."""
    timings: dict[str, list[float]] = {"/search": [], "/encode-text": []}
    number = 0
    while still_running():
        path = "/search" if number % 2 else "/encode-text"
        code, _, seconds = post_json(port, path, {"text": f"a red SUV, {phase}, number {number}"})
        if code == 200:
            timings[path].append(seconds)
        number += 1
        time.sleep(PACE_S)
    return timings


def while_the_service_indexes(port: int, photos: int) -> dict:
    began = time.monotonic()
    timings = paced_user(port, lambda: (status(port)["indexing"] or {"state": "running"})["state"] == "running",
                         "service indexing")
    run = status(port)["indexing"]
    return {"search": percentiles(timings["/search"]), "encode_text": percentiles(timings["/encode-text"]),
            "index_state": run["state"], "indexed": run["indexed"],
            "index_images_per_s": round(photos / (time.monotonic() - began), 1)}


def while_the_command_indexes(port: int, folder: Path, photos: int, precision: str) -> dict:
    """The naive reference: the indexer command beside the service, into a store of its own."""
    with tempfile.TemporaryDirectory() as work:
        env = {**os.environ, "CLIP_MODEL": str(model_dir()), "DEVICE": "cpu", "CLIP_PRECISION": precision,
               "HF_HUB_OFFLINE": "1", "QDRANT_PATH": f"{work}/qdrant_data", "PYTHONPATH": str(REPO_ROOT),
               "CLIP_CACHE_DIR": str(CACHE_DIR / "cache")}
        command = subprocess.Popen([sys.executable, "-m", "clip_vectorize.gallery", "index", str(folder), "--quiet"],
                                   cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        began = time.monotonic()
        timings = paced_user(port, lambda: command.poll() is None, "command indexing")
        elapsed = time.monotonic() - began
    return {"encode_text": percentiles(timings["/encode-text"]), "exit_code": command.returncode,
            "index_images_per_s": round(photos / elapsed, 1), "note": "includes the command's model load"}


def idle(port: int, request: Callable[[int], tuple[int, bytes, float]]) -> dict:
    timings = []
    for number in range(IDLE_REQUESTS):
        code, body, seconds = request(number)
        assert code == 200, body[:300]
        timings.append(seconds)
    return percentiles(timings)


def multipart_photo(blob: bytes) -> tuple[bytes, dict[str, str]]:
    boundary = "bench-search-7f3a"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="p.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n").encode() + blob + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def measure(port: int, folder: Path, photos: int, precision: str) -> dict:
    service_indexing = while_the_service_indexes(port, photos)
    idle_user = paced_user(port, _countdown(2 * IDLE_REQUESTS), "idle")
    command_indexing = while_the_command_indexes(port, folder, photos, precision)
    first = json.loads(post_json(port, "/search", {"text": "car", "limit": 100})[1])["results"]
    similar = idle(port, lambda n: post_json(port, "/search-similar", {"id": first[n % len(first)]["id"]}))
    body, headers = multipart_photo(next(folder.glob("*.jpg")).read_bytes())
    by_image = idle(port, lambda n: call(port, "POST", "/search-by-image", body, headers))
    thumbnail_made = [call(port, "GET", f"/gallery/thumbnails/{hit['id']}")[2] for hit in first[:20]]
    thumbnail_cached = [call(port, "GET", f"/gallery/thumbnails/{hit['id']}")[2] for hit in first[:20]]
    encode_during = service_indexing["encode_text"]["p50_ms"]
    idle_figures = {path.strip("/"): percentiles(seconds) for path, seconds in idle_user.items()}
    return {"while_the_service_indexes": service_indexing, "while_the_command_indexes": command_indexing,
            "idle": idle_figures,
            "encode_p50_vs_naive": round(encode_during / command_indexing["encode_text"]["p50_ms"], 2),
            "search_similar_idle": similar, "search_by_image_2mp_idle": by_image,
            "thumbnail_first_ms_p50": round(statistics.median(thumbnail_made) * 1000, 1),
            "thumbnail_cached_ms_p50": round(statistics.median(thumbnail_cached) * 1000, 1)}


def _countdown(count: int) -> Callable[[], bool]:
    remaining = iter(range(count))
    return lambda: next(remaining, None) is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args()
    folder = photo_folder(args.photos)
    with tempfile.TemporaryDirectory() as work:
        env = {"CLIP_GALLERY_DIR": str(folder), "QDRANT_PATH": f"{work}/qdrant_data", "CLIP_PRECISION": args.precision,
               "CLIP_THUMBNAIL_DIR": f"{work}/thumbnails", "CLIP_CACHE_DIR": str(CACHE_DIR / "cache")}
        server = servers.start("ours", model_dir(), Path(work) / "service.log", env)
        try:
            servers.wait_ready(server)
            result = {"photos": args.photos, "precision": args.precision,
                      **measure(server.port, folder, args.photos, args.precision)}
        finally:
            servers.stop(server)
    for name, figures in result.items():
        print(f"{name}: {figures}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
