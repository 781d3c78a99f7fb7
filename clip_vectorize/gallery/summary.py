"""What an index run did, for the console, the service's status and tests."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from clip_vectorize.gallery.sources import Skipped


@dataclass
class Summary:
    source: str
    listed: int = 0
    indexed: int = 0  # encoded and written
    reused: int = 0  # written with the vector of an identical image already indexed (renamed, touched, duplicate)
    unchanged: int = 0
    deleted: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    skipped_before: int = 0  # of `skipped`: bad files unchanged since a run that skipped them, not read again
    elapsed_s: float = 0.0
    encode_s: float = 0.0  # from the first item read to the last point written
    model_load_s: float = 0.0  # inside encode_s: the model loads when the first image needs it

    @property
    def images_per_s(self) -> float:
        working = self.encode_s - self.model_load_s
        return self.indexed / working if working > 0 else 0.0

    def reasons(self) -> Counter[str]:
        return Counter(skip.reason for skip in self.skipped)
