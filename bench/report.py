"""The results as a table on stdout and as JSON under bench/results/, plus a description of the machine."""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path

from bench import overload
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
    if overload.SECTION in results:
        lines += _overload_lines(results[overload.SECTION])
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
    others = [p for p in results.get("precisions", ["fp32"]) if p != "fp32"]
    if others:
        lines += ["", "by precision (ours; ratios against the naive service in the same run):",
                  _precision_table(results)]
    servers = ["naive", "ours", *(f"ours-{p}" for p in others), "restart", "tower", *(f"tower-{p}" for p in others)]
    lines += _problems({name: results.get(name, {}) for name in servers})
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
    lines += _tower_lines(results.get("tower", {}))
    for precision in others:
        lines += [f"{precision}: {line}" for line in _tower_lines(results.get(f"tower-{precision}", {}))]
    return [*lines, ""]


def _precision_table(results: dict) -> str:
    """Per scenario and precision: items/s and p50 against naive's; then worker peak RSS per precision."""
    precisions = results.get("precisions", ["fp32"])
    rows = [("scenario", *(f"{p} /s (x naive), p50 ms (x naive)" for p in precisions))]
    for name in results["scenarios"]:
        cells = ["{} ({}), {} ({})".format(*_against_naive(results, name, precision)) for precision in precisions]
        rows.append((name, *cells))
    rows.append(("worker peak RSS MiB", *(_num(results.get(_ours(p), {}).get("peak_rss", {}).get("workers_sum_mib"), 0)
                                          for p in precisions)))
    return _table(rows, left=1)


def _against_naive(results: dict, scenario: str, precision: str) -> tuple[str, str, str, str]:
    """Ours at `precision` in `scenario`: items/s, its ratio to naive's, p50 ms, its ratio to naive's p50."""
    own = results.get(_ours(precision), {}).get("scenarios", {}).get(scenario, {})
    base = results.get("naive", {}).get("scenarios", {}).get(scenario, {})
    rate, p50 = own.get("items_per_s"), own.get("p50_ms")
    return (_num(rate, 1), _ratio(rate, base.get("items_per_s")), _num(p50, 0), _ratio(p50, base.get("p50_ms")))


def _ours(precision: str) -> str:
    return "ours" if precision == "fp32" else f"ours-{precision}"


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
    rows = [("service", "first start s", "restart s", "worker RSS MiB ready / after load / peak",
             "added MiB ready / after load / peak")]
    for tag, part in section.items():
        precision = part.get("precision", "fp32")
        base = section.get(CLIP_ONLY if precision == "fp32" else f"{CLIP_ONLY}-{precision}", {})
        sizes = [part.get(name, {}).get("workers_sum_mib") for name in fields]
        added = [_difference(size, base.get(name, {}).get("workers_sum_mib")) for size, name in zip(sizes, fields)]
        rows.append((tag, _num(part.get("start_to_ready_s"), 1),
                     _num(part.get("restart", {}).get("restart_to_ready_s"), 1),
                     " / ".join(_num(size, 0) for size in sizes),
                     "-" if tag.startswith(CLIP_ONLY) else " / ".join(_num(mib, 0, signed=True) for mib in added)))
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


def _overload_lines(section: dict) -> list[str]:
    """Stock gthread, ours, and ours behind nginx at twice the capacity: what was answered, how fast the 503s came."""
    rows = [("worker", "offered req/s", "200 req/s", "200 p50/p99 ms", "503s", "503 p50/p99 ms",
             "503 p99 from send ms", "client lag max ms", "hung/reset", "load test")]
    for worker, figures in section.items():
        if figures.get("error"):
            rows.append((worker, "!! " + figures["error"], *[""] * 8))
            continue
        ok, refused = figures["latency_ms_200"], figures["latency_ms_503"]
        rows.append((worker, _num(figures["offered_rps"], 1), _num(figures["ok_200_rps"], 1),
                     f"{_num(ok['p50'], 0)} / {_num(ok['p99'], 0)}", str(figures["refused_503"]),
                     f"{_num(refused['p50'], 0)} / {_num(refused['p99'], 0)}",
                     _num(figures.get("latency_ms_503_from_send", {}).get("p99"), 0),
                     _num(figures["schedule_lag_ms_max"], 0), f"{figures['client_timeouts']} / {figures['resets']}",
                     "passed" if figures.get("test_passed") else "FAILED"))
    return ["overload: twice the measured capacity, texts with 1 image upload in 10, open loop "
            "(tests/e2e/test_load.py on this model, service defaults, text cache off); latency from each request's "
            "scheduled start, and from its actual send (less the client's own lag on the shared cores)",
            _table(rows, left=1), ""]


def _problems(parts: dict[str, dict]) -> list[str]:
    """Errors, non-200 replies, malformed vectors and repeated texts: anything that makes a figure suspect."""
    notes = []
    for server, part in parts.items():
        if part.get("error"):
            notes.append(f"!! {server}: {_short(part['error'])}")
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


def _short(error: str) -> str:
    """An error's first line and the line that says why (a start-up refusal), not a whole log tail."""
    lines = error.strip().splitlines()
    why = [line for line in lines[1:] if "cannot start" in line or "Error:" in line]
    return " / ".join([lines[0], *(why[-1:] or lines[-1:])]) if len(lines) > 1 else error.strip()


def _client_cpu(naive: dict, ours: dict) -> str:
    """The load generator runs on the same cores as the server; this shows how much of them it took."""
    shares = [f"{server} {name} {figures['client_cpu_pct']:.0f}%"
              for server, part in (("naive", naive), ("ours", ours))
              for name, figures in part.get("scenarios", {}).items() if "client_cpu_pct" in figures]
    return "load generator CPU (% of one core): " + (", ".join(shares) or "-")


def _tower_lines(tower: dict) -> list[str]:
    if "image_images_per_s" not in tower:
        return [f"!! towers: {tower['error'].splitlines()[-1]}"] if tower.get("error") else []
    parity = " ".join(f"{name.split('_')[0]} cosine to fp32 >= {tower[name]:.5f};" for name in
                      ("image_min_cosine_to_fp32", "text_min_cosine_to_fp32") if name in tower)
    lines = [f"towers, no HTTP ({tower['backend']} backend, loaded in {tower['load_s']:.1f} s): {parity} "
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


# ---------------------------------------------------------------- the README's tables, from a results file

SCENARIO_NAMES = {"text-1": "text, 1 client", "text-16": "text, 16 clients",
                  "texts-batch": "`/encode-texts`, 32 per call, 2 clients",
                  "jpeg-12mp-4": "12 MP JPEG upload, 4 clients", "jpeg-2mp-4": "2 MP JPEG upload, 4 clients"}


def markdown(results: dict) -> str:
    """The README's performance tables: `python -m bench.report bench/results/bench-<time>.json`."""
    parts = [_markdown_comparison(results)] if results.get("scenarios") else []
    if SECTION in results and not results[SECTION].get("error"):
        parts.append(_markdown_multilingual(results[SECTION]))
    if overload.SECTION in results:
        parts.append(_markdown_overload(results[overload.SECTION]))
    return "\n\n".join(parts)


def _markdown_comparison(results: dict) -> str:
    """Naive beside ours at each precision that started: throughput (x naive) and p50 (x naive's p50)."""
    naive = results.get("naive", {}).get("scenarios", {})
    ran = [p for p in results.get("precisions", ["fp32"]) if results.get(_ours(p), {}).get("scenarios")]
    rows = [["scenario", "naive", *(f"ours `{p}`" for p in ran)], ["---"] * (2 + len(ran))]
    for name in results["scenarios"]:
        base = naive.get(name, {})
        cells = [f"{_num(base.get('items_per_s'), 1)}/s, p50 {_num(base.get('p50_ms'), 0)} ms"]
        cells += ["{}/s (**{}**), p50 {} ms ({})".format(*_against_naive(results, name, precision))
                  for precision in ran]
        rows.append([SCENARIO_NAMES.get(name, name), *cells])
    rows.append(["worker peak RSS", *(f"{_num(results.get(s, {}).get('peak_rss', {}).get('workers_sum_mib'), 0)} MiB"
                                      for s in ["naive", *map(_ours, ran)])])
    rows.append(["start to ready", f"{_num(results.get('naive', {}).get('start_to_ready_s'), 1)} s",
                 *(f"{_num(results[_ours(p)].get('start_to_ready_s'), 1)} s" for p in ran)])
    lines = _markdown_table(rows)
    for precision in results.get("precisions", ["fp32"]):
        tower = results.get(f"tower-{precision}" if precision != "fp32" else "tower", {})
        if "image_images_per_s" in tower:
            parity = ", ".join(f"{name.split('_')[0]} cosine to fp32 ≥ {tower[name]:.5f}"
                               for name in ("image_min_cosine_to_fp32", "text_min_cosine_to_fp32") if name in tower)
            lines += (f"\n\nTowers alone at `{precision}`: image batch 32 {tower['image_images_per_s']:.1f} "
                      f"images/s, text 1 × {tower['text_tokens']} tokens {tower['text_batch1_p50_ms']:.1f} ms"
                      + (f" ({parity})" if parity else "") + ".")
        elif tower.get("error"):
            lines += f"\n\n`{precision}`: {tower['error'].strip().splitlines()[-1].split(': ', 1)[-1]}"
    return lines


def _markdown_multilingual(section: dict) -> str:
    rows = [["service", "precision", "English p50 1 / 16 clients", "Chinese p50 1 / 16 clients",
             "Chinese texts/s at 16", "worker peak RSS"], ["---"] * 6]
    for tag, part in section.items():
        scenarios = part.get("scenarios", {})
        if not scenarios:
            continue
        rows.append([tag.removesuffix(f"-{part.get('precision')}"), part.get("precision", "fp32"),
                     _p50_pair(scenarios, "en"), _p50_pair(scenarios, "zh"),
                     _num(scenarios.get("zh-16", {}).get("items_per_s"), 1),
                     f"{_num(part.get('peak_rss', {}).get('workers_sum_mib'), 0)} MiB"])
    return _markdown_table(rows)


def _p50_pair(scenarios: dict, language: str) -> str:
    one, many = scenarios.get(f"{language}-1", {}), scenarios.get(f"{language}-16", {})
    return f"{_num(one.get('p50_ms'), 0)} / {_num(many.get('p50_ms'), 0)} ms" if one or many else "-"


def _markdown_overload(section: dict) -> str:
    rows = [["gunicorn worker", "offered", "200s", "200 p50 / p99", "503s", "503 p50 / p99",
             "503 p99 from send", "hung, reset"], ["---"] * 8]
    for worker, figures in section.items():
        if figures.get("error"):
            continue
        ok, refused = figures["latency_ms_200"], figures["latency_ms_503"]
        rows.append([worker, f"{figures['offered_rps']} req/s", f"{figures['ok_200_rps']} req/s",
                     f"{_num(ok['p50'], 0)} / {_num(ok['p99'], 0)} ms", str(figures["refused_503"]),
                     f"{_num(refused['p50'], 0)} / {_num(refused['p99'], 0)} ms",
                     f"{_num(figures.get('latency_ms_503_from_send', {}).get('p99'), 0)} ms",
                     f"{figures['client_timeouts']}, {figures['resets']}"])
    return _markdown_table(rows)


def _markdown_table(rows: list[list[str]]) -> str:
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


if __name__ == "__main__":
    import sys

    print(markdown(json.loads(Path(sys.argv[1]).read_text())))
