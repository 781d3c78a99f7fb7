"""The embedded store's search index: exact search while it is quick, an HNSW index with int8 quantization and
rescoring beyond that, built in a child process so the service never freezes.

Why a child: the Edge binding holds the GIL for the whole of `optimize()` (minutes at 1M points), which would stop
every thread of the service. The child builds the index on a copy of the shard; the store then swaps the copy in,
holding its lock only for the swap. Searches meanwhile are exact on the old shard.

`python -m clip_vectorize.gallery.store.edge_index SHARD_DIR DIMENSION THRESHOLD_KB PARENT_PID` is the child.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import qdrant_edge as qe

logger = logging.getLogger(__name__)

# Chosen by measurement (README, "The embedded store"): one exact query holds the GIL ~10 ms per 100k points on 2
# cores, so past 20k points an index pays; m=32, ef_construct=100 with int8 quantization builds 100k points in ~30 s
# and, searched with rescoring (oversampling 2), keeps recall@20 >= 0.99 on CLIP-like vectors with ef=512 up to
# ~200k indexed points and ef=1024 beyond (ef=512 fell to 0.989 at 300k). Rescoring is what lifts recall past 0.98.
EXACT_UP_TO = 20_000
HNSW_M, HNSW_EF_CONSTRUCT = 32, 100
SEARCH_EF, LARGE_SEARCH_EF, LARGE_INDEX = 512, 1024, 200_000
OVERSAMPLING = 2.0
PR_SET_PDEATHSIG = 1  # prctl(2)
INDEXING_THRESHOLD_KB = 1_000  # segments above this get an index when the child optimizes


@dataclass(frozen=True)
class SearchPlan:
    """Search parameters: HNSW and quantization where a segment has an index (rescored with the original vectors),
    exact elsewhere (Qdrant scans a segment without an index)."""

    hnsw_ef: int = SEARCH_EF
    large_hnsw_ef: int = LARGE_SEARCH_EF
    oversampling: float = OVERSAMPLING

    def params(self, indexed_points: int) -> qe.SearchParams:
        """For an index of `indexed_points` (a larger graph needs a wider search for the same recall)."""
        ef = self.large_hnsw_ef if indexed_points > LARGE_INDEX else self.hnsw_ef
        return qe.SearchParams(hnsw_ef=ef, quantization=qe.QuantizationSearchParams(
            rescore=True, oversampling=self.oversampling))


def indexed_config(dimension: int, threshold_kb: int) -> qe.EdgeConfig:
    """The shard's configuration while the child builds its index."""
    return qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(size=dimension, distance=qe.Distance.Cosine),
        hnsw_config=qe.HnswIndexConfig(m=HNSW_M, ef_construct=HNSW_EF_CONSTRUCT, full_scan_threshold=10_000),
        quantization_config=qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=0.99, always_ram=True),
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=threshold_kb))


def build_copy(shard_dir: Path, dimension: int, threshold_kb: int) -> Path:
    """A copy of the (flushed, idle) shard with its index built, by a child process; the copy's path."""
    building = shard_dir.with_name(shard_dir.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    shutil.copytree(shard_dir, building)
    began = time.monotonic()
    child = [sys.executable, "-m", __name__, str(building), str(dimension), str(threshold_kb), str(os.getpid())]
    done = subprocess.run(child, capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(building, ignore_errors=True)
        raise RuntimeError(f"building the search index failed: {done.stderr.strip()[-500:]}")
    logger.info("search index built in %.1f s (in a child process)", time.monotonic() - began)
    return building


def _die_with(parent: int) -> None:
    """The child is killed when the process that started it ends (a service stopping mid-build leaves no orphan
    writing into a folder the next build reuses); set here, in the child, as preexec_fn is unsafe in a threaded
    parent."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it ended before the line above
        sys.exit(1)


def main(shard_dir: str, dimension: str, threshold_kb: str, parent: str) -> None:
    _die_with(int(parent))
    shard = qe.EdgeShard.load(shard_dir, indexed_config(int(dimension), int(threshold_kb)))
    shard.optimize()
    shard.flush()
    shard.close()


if __name__ == "__main__":
    main(*sys.argv[1:5])
