"""Benchmark clip-vectorize against a naive Flask + transformers service: `python bench/run_bench.py`.

One run, servers one at a time (a small machine has no cores to spare): the naive service through every
scenario, then ours at each precision, then ours started again to time a restart, then the encoder's towers
without HTTP at each precision, then ours with only CLIP and with each multilingual text tower at each precision
(English beside Chinese queries, memory, start-up), then ours at twice its capacity (stock gthread beside ours).
Prints a table and writes the same figures to bench/results/bench-<UTC time>.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: make the `bench` package importable

from bench import multilingual, overload, report, servers  # noqa: E402
from bench.model import CACHE_DIR, REPO_ROOT, ModelUnavailable, model_dir, vector_dimension  # noqa: E402
from bench.photo import PHOTOS, ensure_photo, photo_path  # noqa: E402
from bench.workload import MAIN_SCENARIOS, SCENARIOS  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MULTILINGUAL = multilingual.SECTION
OVERLOAD = overload.SECTION
SECTIONS = (MULTILINGUAL, OVERLOAD)
PRECISIONS = ("fp32", "int8", "bf16")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per scenario (default 15)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each scenario")
    parser.add_argument("--only", help=f"comma-separated scenarios out of {','.join(SCENARIOS)}, and/or "
                        f"{MULTILINGUAL} (our service with each multilingual text tower) and/or {OVERLOAD} (twice "
                        "the capacity, stock gthread beside ours)")
    parser.add_argument("--precisions", default=",".join(PRECISIONS),
                        help=f"our service's CLIP_PRECISION values to run (default {','.join(PRECISIONS)})")
    parser.add_argument("--overload-seconds", type=float, default=45.0, help="overload phase length (default 45)")
    parser.add_argument("--skip-naive", action="store_true", help="only our service (no comparison)")
    parser.add_argument("--skip-multilingual", action="store_true", help="without the multilingual section")
    args = parser.parse_args(argv)
    chosen = args.only.split(",") if args.only else [*MAIN_SCENARIOS, *SECTIONS]
    unknown = set(chosen) - set(SCENARIOS) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(sorted(unknown))}; "
                     f"choose from {', '.join([*SCENARIOS, *SECTIONS])}")
    args.precisions = args.precisions.split(",")
    if set(args.precisions) - set(PRECISIONS):
        parser.error(f"--precisions: choose from {','.join(PRECISIONS)}")
    args.scenarios = [name for name in chosen if name not in SECTIONS]
    args.multilingual = MULTILINGUAL in chosen and not args.skip_multilingual
    args.overload = OVERLOAD in chosen
    return args


def progress(message: str) -> None:
    """Progress goes to stderr, so stdout holds only the report."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_module(module: str, *args: str, timeout: float) -> dict:
    """`python -m bench.<module> ...` in its own process; its last stdout line is a JSON object."""
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-8:])
        return {"error": f"{module} exited with {done.returncode}:\n{tail}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_scenario(server: servers.Server, name: str, args: argparse.Namespace, dimension: int,
                 expected_encoder: str | None = None) -> dict:
    """One load run; with `expected_encoder`, every reply must name that encoder (else RoutingError)."""
    progress(f"{server.name}: {name} ({args.warmup:g} s warm-up + {args.seconds:g} s)")
    photo = SCENARIOS[name].photo
    figures = run_module("bench.load", "--port", str(server.port), "--scenario", name, "--seconds", str(args.seconds),
                         "--warmup", str(args.warmup), "--dimension", str(dimension),
                         *(["--jpeg", str(photo_path(CACHE_DIR, photo))] if photo else []),
                         timeout=args.warmup + args.seconds + 600)
    if "items_per_s" in figures:
        progress(f"  {figures['items_per_s']:.1f} {figures['unit']}/s, p50 {figures['p50_ms'] or 0:.0f} ms")
    if expected_encoder:
        multilingual.check_routing(server.name, name, figures, expected_encoder)
    return figures


def server_label(name: str, variant: multilingual.Variant | None = None, precision: str = "fp32") -> str:
    """ours, ours-int8, ours-taiyi, ours-taiyi-int8, naive: the server's name in progress lines and log files."""
    return "-".join([name, *([variant.tag] if variant else []), *([precision] if precision != "fp32" else [])])


def bench_server(name: str, model: Path, args: argparse.Namespace, dimension: int, stamp: str,
                 variant: multilingual.Variant | None = None, precision: str = "fp32") -> dict:
    """Start one server (ours as `variant` and `precision` set it up), wait for /health, run every scenario against
    it (the variant's own, their replies' encoders checked), note its worker RSS, stop it."""
    label = server_label(name, variant, precision)
    progress(f"{label}: starting")
    env = {**(variant.env if variant else {}), "CLIP_PRECISION": precision}
    server = servers.start(name, model, RESULTS_DIR / f"{stamp}-{label}.log", env, label)
    result: dict = {"log": str(server.log_path)}
    try:
        result["start_to_ready_s"] = servers.wait_ready(server)
        result["ready_rss"] = servers.rss_mib(server, "VmRSS")
        if name == "ours":
            result["precision"] = servers.health_body(server.port).get("precision")
        if variant:
            result["encoders"] = multilingual.check_health(label, servers.health_body(server.port), variant)
        routes = variant.routes if variant else dict.fromkeys(args.scenarios)
        result["scenarios"] = {scenario: run_scenario(server, scenario, args, dimension, expected)
                               for scenario, expected in routes.items()}
        result["peak_rss"] = servers.peak_rss_mib(server)
        result["steady_rss"] = servers.rss_mib(server, "VmRSS")
    except servers.ServerFailed as exc:
        result["error"] = str(exc)
        progress(f"{label} failed: {exc}")
    finally:
        servers.stop(server)
    return result


def restart_to_ready(model: Path, stamp: str, variant: multilingual.Variant | None = None) -> dict:
    """Our service started a second time: seconds until /health is 200, with whatever the first start cached."""
    label = f"ours-{variant.tag}" if variant else "ours"
    progress(f"{label}: restart to ready")
    server = servers.start("ours", model, RESULTS_DIR / f"{stamp}-{label}-restart.log", variant and variant.env,
                           label)
    try:
        return {"restart_to_ready_s": servers.wait_ready(server)}
    except servers.ServerFailed as exc:
        return {"error": str(exc)}
    finally:
        servers.stop(server)


def bench_comparison(model: Path, args: argparse.Namespace, dimension: int, stamp: str) -> dict:
    """The naive service (unless skipped) and ours at each precision through the chosen scenarios, our restart,
    the towers alone at each precision (`ours` and `tower` are fp32; `ours-int8`, `tower-int8`... the others)."""
    results = {} if args.skip_naive else {"naive": bench_server("naive", model, args, dimension, stamp)}
    for precision in args.precisions:
        results[server_label("ours", precision=precision)] = bench_server("ours", model, args, dimension, stamp,
                                                                          precision=precision)
    results["restart"] = restart_to_ready(model, stamp)
    for precision in args.precisions:
        progress(f"towers without HTTP at {precision} (no server running)")
        jpeg = ["--jpeg", str(photo_path(CACHE_DIR, "12mp"))] if precision == "fp32" else []
        backend = "torch" if precision == "bf16" else "onnx"
        results[server_label("tower", precision=precision)] = run_module(
            "bench.tower", "--model", str(model), "--precision", precision, "--backend", backend, *jpeg, timeout=900)
    return results


def bench_multilingual(model: Path, args: argparse.Namespace, dimension: int, stamp: str) -> dict:
    """Ours with CLIP only, then with each multilingual tower, at each precision: scenarios, worker RSS, first
    start and restart (fp32 only)."""
    try:
        chosen = multilingual.variants()
    except ModelUnavailable as exc:
        return {"error": str(exc)}
    section = {}
    for precision in args.precisions:
        for variant in chosen:
            key = variant.tag if precision == "fp32" else f"{variant.tag}-{precision}"
            section[key] = {**bench_server("ours", model, args, dimension, stamp, variant, precision),
                            "env": variant.env, "precision": precision}
            if precision == "fp32":
                section[key]["restart"] = restart_to_ready(model, stamp, variant)
    return section


def main() -> None:
    args = parse_args()
    try:
        model = model_dir()
    except ModelUnavailable as exc:
        sys.exit(f"bench: {exc}")
    if args.scenarios:
        for photo in PHOTOS:
            ensure_photo(CACHE_DIR, photo)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    # A fresh ONNX cache unless one is named: the first start then includes the export, the restart reuses it.
    os.environ.setdefault("CLIP_CACHE_DIR", tempfile.mkdtemp(prefix="clip-bench-cache-"))
    dimension = vector_dimension(model)
    results: dict = {
        "timestamp_utc": stamp, "model": str(model), "seconds": args.seconds, "warmup": args.warmup,
        "scenarios": args.scenarios, "precisions": args.precisions,
        "jpeg_bytes": {name: photo_path(CACHE_DIR, name).stat().st_size for name in PHOTOS
                       if photo_path(CACHE_DIR, name).is_file()},
        "clip_env": {k: v for k, v in os.environ.items() if k.startswith("CLIP_")}, "machine": report.machine_info(),
    }
    if args.scenarios:
        results.update(bench_comparison(model, args, dimension, stamp))
    failure = None
    if args.multilingual:
        try:
            results[MULTILINGUAL] = bench_multilingual(model, args, dimension, stamp)
        except multilingual.RoutingError as exc:  # the figures would not be what they claim: report and fail
            failure = exc
            results[MULTILINGUAL] = {"error": f"routing: {exc}"}
    if args.overload:
        progress(f"overload: {args.overload_seconds:g} s at twice the capacity, stock gthread, ours, behind nginx")
        results[OVERLOAD] = overload.measure(model, args.overload_seconds, RESULTS_DIR, stamp)
    out = RESULTS_DIR / f"bench-{stamp}.json"
    report.write_json(results, out)
    print(report.render(results))
    print(f"\nfull results: {out.relative_to(REPO_ROOT)}")
    if failure:
        sys.exit(f"bench: FAILED: {failure}")


if __name__ == "__main__":
    main()
