"""What to index: a folder walked recursively, or a CSV / JSONL manifest; each image becomes an `Item`.

Point ids: a manifest's integer `image_id` is the point id (the Node.js backend uses the MySQL image id);
anything else gets a uuid5 (of a folder image's absolute path, of a manifest's string id), so a rerun
overwrites its own points and never duplicates them.
"""

from __future__ import annotations

import csv
import json
import os
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clip_vectorize.gallery.errors import SourceError
from clip_vectorize.gallery.payload import RESERVED_PAYLOAD

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".heic", ".heif", ".bmp", ".tif", ".tiff"})
MANIFEST_SUFFIXES = frozenset({".csv", ".jsonl", ".ndjson"})
POINT_NAMESPACE = uuid.UUID("5b1d0c6e-7a0e-4f4e-9d7c-63a1c1b0a9e1")  # fixed forever: it makes the uuid5 ids stable
MAX_POINT_ID = 2**64 - 1  # Qdrant's integer ids are unsigned 64-bit


@dataclass(frozen=True)
class Item:
    """One image to index: where it is, its id, and the manifest's extra columns for the payload."""

    image_id: int | str
    path: Path | None = None
    url: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    id_key: str | None = None  # what a uuid5 point id is made from, when not `image_id` itself

    @property
    def point_id(self) -> int | str:
        if isinstance(self.image_id, int):
            return self.image_id
        return str(uuid.uuid5(POINT_NAMESPACE, self.id_key or self.image_id))

    @property
    def location(self) -> str:
        """The path or URL, as stored in the payload and shown in reports."""
        return str(self.path) if self.path is not None else str(self.url)


@dataclass(frozen=True)
class Skipped:
    """An item left out, and why in a few words (the summary groups by reason)."""

    location: str
    reason: str
    detail: str = ""


@dataclass
class Listing:
    """Everything SOURCE names: the items, what could not become an item, and the key its points carry."""

    source: str  # the resolved folder or manifest path: `--prune` only deletes points carrying this key
    items: list[Item]
    skipped: list[Skipped]


def list_source(source: str | os.PathLike[str]) -> Listing:
    """The items of a folder (recursively) or of a CSV / JSONL manifest."""
    path = Path(source).expanduser().resolve()
    if path.is_dir():
        return Listing(str(path), list(_walk_folder(path)), [])
    if path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
        return _read_manifest(path)
    if not path.exists():
        raise SourceError(f"{source} does not exist: give a folder of images or a .csv / .jsonl manifest")
    raise SourceError(f"{source} is neither a folder nor a manifest (.csv, .jsonl)")


def _walk_folder(root: Path) -> Iterator[Item]:
    """Image files under `root`, sorted, hidden folders left out; image_id is the path relative to `root`."""
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = sorted(name for name in subdirectories if not name.startswith("."))
        for name in sorted(files):
            if Path(name).suffix.lower() in IMAGE_SUFFIXES and not name.startswith("."):
                path = Path(directory) / name  # id from the whole path: two folders' side/1.jpg are two images
                yield Item(path.relative_to(root).as_posix(), path=path, id_key=str(path))


def _read_manifest(path: Path) -> Listing:
    rows = _csv_rows(path) if path.suffix.lower() == ".csv" else _jsonl_rows(path)
    items, skipped, seen = [], [], set()
    for number, row in rows:
        try:
            item = _manifest_item(row, path.parent)
        except ValueError as exc:
            skipped.append(Skipped(f"{path.name} row {number}", "bad manifest row", str(exc)))
            continue
        if item.point_id in seen:
            skipped.append(Skipped(item.location, "duplicate image_id", f"{path.name} row {number}"))
            continue
        seen.add(item.point_id)
        items.append(item)
    return Listing(str(path), items, skipped)


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with _opened(path) as file:
        reader = csv.DictReader(file)
        if not reader.fieldnames or not {"path", "url"} & set(reader.fieldnames):
            raise SourceError(f"{path}: a CSV manifest needs a header row with a 'path' or 'url' column "
                              f"(and 'image_id'); found {reader.fieldnames}")
        try:
            for number, row in enumerate(reader, start=2):  # row 1 is the header
                yield number, {key: value for key, value in row.items()
                               if key is not None and value not in (None, "")}
        except csv.Error as exc:
            raise SourceError(f"{path} is not valid CSV at line {reader.line_num}: {exc}") from None


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with _opened(path) as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            yield number, row if isinstance(row, dict) else {"_invalid": line.strip()[:80]}


def _opened(path: Path):
    try:
        return path.open(newline="", encoding="utf-8-sig")  # utf-8-sig: spreadsheets write a BOM
    except OSError as exc:
        raise SourceError(f"cannot read the manifest {path}: {exc.strerror}") from None


def _manifest_item(row: dict[str, Any], base: Path) -> Item:
    """One row as an Item; ValueError says what is wrong with it."""
    if "_invalid" in row:
        raise ValueError(f"not a JSON object: {row['_invalid']!r}")
    path, url = row.pop("path", None), row.pop("url", None)
    if bool(path) == bool(url):
        raise ValueError("needs exactly one of 'path' and 'url'")
    raw_id = row.pop("image_id", None)
    if reserved := sorted(set(row) & RESERVED_PAYLOAD):
        raise ValueError(f"column(s) {', '.join(reserved)} are the indexer's own payload fields; rename them")
    location = Path(str(path)).expanduser() if path else None
    if location is not None and not location.is_absolute():
        location = base / location  # relative to the manifest, wherever the command runs from
    image_id = _image_id(raw_id) if raw_id not in (None, "") else str(location or url)
    return Item(image_id, path=location, url=str(url) if url else None, extra=row)


def _image_id(raw: Any) -> int | str:
    """Integers (and strings of digits, as CSV spells them) are point ids; anything else stays a string id."""
    if isinstance(raw, bool) or isinstance(raw, float):
        raise ValueError(f"image_id must be an integer or a string; got {raw!r}")
    text = str(raw).strip()
    if isinstance(raw, int) or (text.isascii() and text.isdigit()):  # not "²" or "٣": Unicode digits too
        value = int(text)
        if not 0 <= value <= MAX_POINT_ID:
            raise ValueError(f"integer image_id {value} is outside Qdrant's point id range 0..2^64-1")
        return value
    return text
