"""The results as a table on stdout and as JSON under bench/results/, plus a description of the machine."""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path

from bench.multilingual import CLIP_ONLY, SECTION
from bench.workload import SCENARIOS


def machine_info() -> dict:
    """What the figures depend on: CPU, cores, RAM and the runtime versions."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "?")
    meminfo = Path("/proc/meminfo").read_text().split()
    ram_gib = int(meminfo[meminfo.index("MemTotal:") + 1]) / 1024**2
    versions = {name: _version(name)
                for name in ("torch", "onnxruntime", "transformers", "gunicorn", "flask", "pillow")}
    return {"cpu": model, "cores": len(os.sched_getaffinity(0)), "ram_gib": round(ram_gib, 1),
            "python": platform.python_version(), **versions}


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def write_json(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")


def render(results: dict) -> str:
    """The whole report as text: scenario table, memory, start-up, towers, multilingual section, machine."""
    lines = _comparison_lines(results) if results["scenarios"] else []
    if SECTION in results:
        lines += _multilingual_lines(results[SECTION])
    machine = results["machine"]
    lines.append(f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['ram_gib']} GiB RAM; "
                 + ", ".join(f"{k} {v}" for k, v in machine.items() if k not in ("cpu", "cores", "ram_gib")))
    if results.get("clip_env"):
        lines.append("CLIP_* settings passed to our service: "
                     + " ".join(f"{k}={v}" for k, v in results["clip_env"].items()))
    return "\n".join(lines)


def _comparison_lines(results: dict) -> list[str]:
    """Naive vs ours: scenario table, problems, load generator CPU, peak RSS, start-up, towers without HTTP."""
    naive, ours = results.get("naive", {}), results.get("ours", {})
    lines = [_scenario_table(results["scenarios"], naive.get("scenarios", {}), ours.get("scenarios", {}))]
    lines += _problems({name: results.get(name, {}) for name in ("naive", "ours", "restart", "tower")})
    lines.append(_client_cpu(naive, ours))
    lines.append("")
    for name, server in (("naive", naive), ("ours", ours)):
        rss = server.get("peak_rss")
        if rss:
            workers = " + ".join(f"{mib:.0f}" for mib in rss["workers_mib"])
            lines.append(f"peak RSS {name:5}: workers {rss['workers_sum_mib']:.0f} MiB ({workers}), "
                         f"gunicorn master {_num(rss['master_mib'], 0)} MiB  [VmHWM]")
    lines.append(f"start to /health 200: naive {_num(naive.get('start_to_ready_s'), 1)} s, "
                 f"ours first start {_num(ours.get('start_to_ready_s'), 1)} s, "
                 f"ours restart {_num(results.get('restart', {}).get('restart_to_ready_s'), 1)} s")
    return lines + _tower_lines(results.get("tower", {})) + [""]


def _multilingual_lines(section: dict) -> list[str]:
    """Ours with CLIP only and with each tower: English and Chinese latency, then worker RSS and start-up."""
    lines = ["multilingual text towers, ours only (each reply's \"encoder\" checked: English -> clip, "
             "Chinese -> multilingual)"]
    if section.get("error"):
        return [*lines, f"!! multilingual: {section['error']}", ""]
    lines.append(_latency_table(section))
    lines += _problems({f"ours-{tag}": part for tag, part in section.items()}
                       | {f"ours-{tag} restart": part.get("restart", {}) for tag, part in section.items()})
    return [*lines, "", _memory_table(section),
            "worker RSS: ready = VmRSS at /health 200, after load = VmRSS after the scenarios, peak = VmHWM; "
            "added = minus clip-only's.",
            "first start: a tower's includes its ONNX export (CLIP's is cached by then); restart reuses both.", ""]


def _latency_table(section: dict) -> str:
    """One row per service and query language: the encoder the replies named, p50/p95 at 1 and 16 clients."""
    rows = [("service", "queries", "encoder", "1 client p50/p95 ms", "16 clients p50/p95 ms", "16 clients texts/s")]
    for tag, part in section.items():
        scenarios = part.get("scenarios", {})
        for language, queries in (("en", "English"), ("zh", "Chinese")):
            one, sixteen = scenarios.get(f"{language}-1"), scenarios.get(f"{language}-16")
            if one or sixteen:
                encoders = "+".join(sorted({*(one or {}).get("encoders", {}), *(sixteen or {}).get("encoders", {})}))
                rows.append((tag, queries, encoders or "-", _p50_p95(one or {}), _p50_p95(sixteen or {}),
                             _num((sixteen or {}).get("items_per_s"), 1)))
    return _table(rows, left=3)


def _memory_table(section: dict) -> str:
    """One row per service: start-up, worker RSS (ready / after load / peak) and what it adds to CLIP only."""
    fields = ("ready_rss", "steady_rss", "peak_rss")
    base = section.get(CLIP_ONLY, {})
    rows = [("service", "first start s", "restart s", "worker RSS MiB ready / after load / peak",
             "added MiB ready / after load / peak")]
    for tag, part in section.items():
        sizes = [part.get(name, {}).get("workers_sum_mib") for name in fields]
        added = [_difference(size, base.get(name, {}).get("workers_sum_mib")) for size, name in zip(sizes, fields)]
        rows.append((tag, _num(part.get("start_to_ready_s"), 1),
                     _num(part.get("restart", {}).get("restart_to_ready_s"), 1),
                     " / ".join(_num(size, 0) for size in sizes),
                     "-" if tag == CLIP_ONLY else " / ".join(_num(mib, 0, signed=True) for mib in added)))
    return _table(rows, left=1)


def _scenario_table(names: list[str], naive: dict, ours: dict) -> str:
    header = ("scenario", "unit", "naive/s", "ours/s", "ours/naive", "naive p50/p95 ms", "ours p50/p95 ms",
              "p50 ours/naive")
    rows = [header]
    for name in names:
        n, o = naive.get(name, {}), ours.get(name, {})
        rows.append((name, SCENARIOS[name].unit, _num(n.get("items_per_s"), 1), _num(o.get("items_per_s"), 1),
                     _ratio(o.get("items_per_s"), n.get("items_per_s")), _p50_p95(n), _p50_p95(o),
                     _ratio(o.get("p50_ms"), n.get("p50_ms"))))
    return _table(rows, left=2)


def _table(rows: list[tuple[str, ...]], left: int) -> str:
    """Rows of cells in aligned columns: the first `left` columns flush left, the rest flush right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) if i < left else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths)))
                     for row in rows)


def _problems(parts: dict[str, dict]) -> list[str]:
    """Errors, non-200 replies, malformed vectors and repeated texts: anything that makes a figure suspect."""
    notes = []
    for server, part in parts.items():
        if part.get("error"):
            notes.append(f"!! {server}: {part['error']}")
        for name, figures in part.get("scenarios", {}).items():
            if figures.get("error"):
                notes.append(f"!! {server} {name}: {figures['error']}")
                continue
            if figures["non_200"] or figures["invalid_200"]:
                notes.append(f"!! {server} {name}: non-200 {figures['non_200']}, bad vectors {figures['invalid_200']}")
            if figures["bodies_sent"] > figures["distinct_bodies"] and SCENARIOS[name].kind != "image":
                notes.append(f"note: {server} {name} sent {figures['bodies_sent']} requests but has only "
                             f"{figures['distinct_bodies']} distinct bodies (texts repeated: a cache may flatter it)")
    return notes


def _client_cpu(naive: dict, ours: dict) -> str:
    """The load generator runs on the same cores as the server; this shows how much of them it took."""
    shares = [f"{server} {name} {figures['client_cpu_pct']:.0f}%"
              for server, part in (("naive", naive), ("ours", ours))
              for name, figures in part.get("scenarios", {}).items() if "client_cpu_pct" in figures]
    return "load generator CPU (% of one core): " + (", ".join(shares) or "-")


def _tower_lines(tower: dict) -> list[str]:
    if "image_images_per_s" not in tower:
        return []
    lines = [f"towers, no HTTP ({tower['backend']} backend, loaded in {tower['load_s']:.1f} s): "
             f"image batch {tower['image_batch']} {tower['image_images_per_s']:.1f} images/s "
             f"({tower['image_batch_ms']} ms per batch); text batch 1 x {tower['text_tokens']} tokens "
             f"p50 {tower['text_batch1_p50_ms']:.1f} ms (min {tower['text_batch1_min_ms']:.1f})"]
    if "preprocessing" in tower:
        prep = tower["preprocessing"]
        lines.append(f"12 MP JPEG preprocessing: exact (full decode + CLIPImageProcessor) {prep['exact_ms']:.1f} ms, "
                     f"fast (draft decode + resize) {prep['fast_ms']:.1f} ms; "
                     f"cosine fast vs exact vector {prep['fast_vs_exact_cosine']:.5f}")
    return lines


def _p50_p95(figures: dict) -> str:
    return f"{_num(figures.get('p50_ms'), 0)} / {_num(figures.get('p95_ms'), 0)}"


def _ratio(top: float | None, bottom: float | None) -> str:
    return f"{top / bottom:.2f}x" if top and bottom else "-"


def _difference(value: float | None, base: float | None) -> float | None:
    return None if value is None or base is None else value - base


def _num(value: float | None, digits: int, signed: bool = False) -> str:
    return "-" if value is None else f"{value:{'+' if signed else ''}.{digits}f}"
