"""The multilingual section: our service with CLIP only, then with each multilingual text tower (see bench/README.md).

Each tower variant answers English queries (routed to CLIP) beside Chinese ones (routed to the tower) in the same
service run; the CLIP-only run is the baseline for the memory and start-up each tower adds. Every reply's
"encoder" field is checked: a query that reached another encoder than its language's stops the bench.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.model import MULTILINGUAL_SOURCES, multilingual_dir
from bench.workload import LANGUAGE_SCENARIOS, SCENARIOS

SECTION = "multilingual"  # the section's key in the results, and its name for `run_bench.py --only`
CLIP_ONLY = "clip-only"
HEALTH_FORMATS = {"sentence-transformers": "sentence-transformers", "taiyi": "bert-sequence-classification"}


@dataclass(frozen=True)
class Variant:
    """Our service with CLIP alone (tower None) or with one multilingual tower."""

    tag: str  # CLIP_ONLY or a key of MULTILINGUAL_SOURCES
    tower: Path | None

    @property
    def env(self) -> dict[str, str]:
        """The tower and `auto` routing for our service; empty values (unset) for CLIP only, whatever was exported."""
        return {"CLIP_MULTILINGUAL_MODEL": str(self.tower or ""), "CLIP_TEXT_ROUTING": "auto" if self.tower else ""}

    @property
    def routes(self) -> dict[str, str]:
        """The scenarios this variant runs, each with the encoder every reply must name."""
        if self.tower is None:
            return {name: "clip" for name in LANGUAGE_SCENARIOS if SCENARIOS[name].language == "en"}
        return {name: "multilingual" if SCENARIOS[name].language == "zh" else "clip" for name in LANGUAGE_SCENARIOS}


class RoutingError(RuntimeError):
    """A reply named another encoder than its query's language must go to, or /health lists the wrong towers."""


def variants() -> list[Variant]:
    """CLIP only, then each tower (built into bench/.cache/ on first use; ModelUnavailable without ../shared)."""
    return [Variant(CLIP_ONLY, None)] + [Variant(fmt, multilingual_dir(fmt)) for fmt in MULTILINGUAL_SOURCES]


def check_health(label: str, health: dict, variant: Variant) -> list[dict]:
    """/health's `encoders`, which must list the variant's tower (in its format) or, for CLIP only, no tower."""
    encoders = health.get("encoders") or []
    towers = [encoder.get("format") for encoder in encoders if encoder.get("name") == "multilingual"]
    expected = [HEALTH_FORMATS[variant.tag]] if variant.tower else []
    if towers != expected:
        raise RoutingError(f"{label}: /health lists multilingual encoders {towers}, expected {expected}")
    return encoders


def check_routing(label: str, scenario: str, figures: dict, expected: str) -> None:
    """Every measured reply of `scenario` named `expected` as its encoder (a failed load run is reported, not here)."""
    encoders = figures.get("encoders")
    if encoders is not None and set(encoders) != {expected}:
        raise RoutingError(f"{label} {scenario}: replies named encoders {encoders} (non-200: {figures['non_200']}), "
                           f"expected every one to be {expected!r}")
