"""Loaded at start-up by a child process with this folder on PYTHONPATH: when UPSERT_PROBE names a file, each write to
the embedded store that has returned appends its point count there, so a test knows what was written before a kill."""

import os

if os.environ.get("UPSERT_PROBE"):
    from clip_vectorize.gallery.store import edge

    _write = edge.EdgeStore.upsert

    def _probed(self, points):
        _write(self, points)
        with open(os.environ["UPSERT_PROBE"], "a") as probe:
            probe.write(f"{len(points)}\n")

    edge.EdgeStore.upsert = _probed
