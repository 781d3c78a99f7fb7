"""What every point records beside its vector, as one type: the image's id and location, the model that made the
vector, the source that listed it, what the image looked like when indexed, and a manifest's own columns.

The model id keeps a collection from silently mixing vector spaces; the content hash and the file's size and mtime
let a rerun tell what changed without reading it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The JSON keys the indexer writes; a manifest's extra columns cannot override them.
IMAGE_ID, PATH, URL = "image_id", "path", "url"
MODEL, SOURCE, CONTENT_HASH, FILE_SIZE, FILE_MTIME = "model", "source", "content_hash", "file_size", "file_mtime_ns"
RESERVED_PAYLOAD = frozenset({IMAGE_ID, PATH, URL, MODEL, SOURCE, CONTENT_HASH, FILE_SIZE, FILE_MTIME})


def model_id(model_name: str) -> str:
    """The id points record: the model's last path component, so openai/clip-vit-base-patch32 and a local copy in
    /opt/models/clip-vit-base-patch32 agree, while another model does not."""
    return model_name.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class FileStat:
    """A file's size and mtime, taken before reading it (so never newer than the bytes); None for URLs."""

    size: int | None = None
    mtime_ns: int | None = None

    @classmethod
    def of(cls, path: Path | None) -> FileStat:
        try:
            stat = path.stat() if path is not None else None
        except OSError:
            return cls()
        return cls(stat.st_size, stat.st_mtime_ns) if stat else cls()


@dataclass(frozen=True)
class PointPayload:
    """One point's payload. `to_json` is the stored form the search endpoints return; `from_json` reads it back."""

    image_id: int | str
    model: str
    source: str
    content_hash: str | None
    path: str | None = None  # a file's path, or
    url: str | None = None  # an image URL
    file_stat: FileStat = FileStat()
    extra: Mapping[str, Any] = field(default_factory=dict)  # a manifest's own columns

    def to_json(self) -> dict[str, Any]:
        payload: dict[str, Any] = {**self.extra, IMAGE_ID: self.image_id, MODEL: self.model, SOURCE: self.source,
                                   CONTENT_HASH: self.content_hash}
        if self.path is not None:
            payload.update({PATH: self.path, FILE_SIZE: self.file_stat.size, FILE_MTIME: self.file_stat.mtime_ns})
        else:
            payload[URL] = self.url
        return payload

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> PointPayload:
        return cls(raw.get(IMAGE_ID, ""), str(raw.get(MODEL) or ""), str(raw.get(SOURCE) or ""),
                   raw.get(CONTENT_HASH), raw.get(PATH), raw.get(URL),
                   FileStat(raw.get(FILE_SIZE), raw.get(FILE_MTIME)),
                   {key: value for key, value in raw.items() if key not in RESERVED_PAYLOAD})

    @property
    def location(self) -> str | None:
        return self.path or self.url
