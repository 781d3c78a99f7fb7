"""What a person running the indexer sees: a progress bar on a terminal (log lines otherwise), then a summary."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from tqdm import tqdm

from clip_vectorize.gallery.summary import Summary

logger = logging.getLogger("clip_vectorize.gallery")

LOG_EVERY_S = 10.0


class BarProgress:
    """tqdm's bar: count, images/s and ETA."""

    def __init__(self) -> None:
        self._bar: tqdm | None = None

    def start(self, total: int) -> None:
        self._bar = tqdm(total=total, unit="img", desc="indexing", dynamic_ncols=True)

    def advance(self, count: int) -> None:
        if self._bar is not None:
            self._bar.update(count)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class LogProgress:
    """One log line every LOG_EVERY_S seconds (and at the end): for journald, CI and `--quiet`."""

    def __init__(self) -> None:
        self.total = self.done = 0
        self.began = self.last = 0.0

    def start(self, total: int) -> None:
        self.total, self.began = total, time.monotonic()
        self.last = self.began
        logger.info("indexing %d images", total)

    def advance(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self.last >= LOG_EVERY_S:
            self.last = now
            self._log(now)

    def close(self) -> None:
        self._log(time.monotonic())

    def _log(self, now: float) -> None:
        rate = self.done / (now - self.began) if now > self.began else 0.0
        eta = (self.total - self.done) / rate if rate else 0.0
        logger.info("%d/%d images, %.1f images/s, about %.0f s left", self.done, self.total, rate, eta)


def render_summary(summary: Summary, skipped_file: Path | None) -> str:
    """The end-of-run summary, a few lines."""
    lines = [f"source {summary.source}: {summary.listed} listed",
             f"  indexed {summary.indexed} ({summary.images_per_s:.1f} images/s), reused {summary.reused} "
             f"(identical image already indexed), unchanged {summary.unchanged}, deleted {summary.deleted}, "
             f"skipped {len(summary.skipped)}",
             f"  elapsed {summary.elapsed_s:.1f} s" + (f", of which loading the model {summary.model_load_s:.1f} s"
                                                     if summary.model_load_s else "")]
    if summary.skipped:
        reasons = ", ".join(f"{reason}: {count}" for reason, count in summary.reasons().most_common())
        where = f"; the list is in {skipped_file}" if skipped_file else ""
        before = (f" ({summary.skipped_before} unchanged since an earlier run skipped them: not read again)"
                  if summary.skipped_before else "")
        lines.append(f"  skipped by reason: {reasons}{before}; a bad file is tried again once it changes{where}")
    return "\n".join(lines)


def write_skipped(summary: Summary, path: Path) -> Path | None:
    """The skipped images as tab-separated location, reason, detail; nothing is written when none was skipped."""
    if not summary.skipped:
        return None
    rows = ["location\treason\tdetail"] + [f"{s.location}\t{s.reason}\t{' '.join(s.detail.split())}"
                                           for s in summary.skipped]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path
