"""Small JPEGs of the gallery's images, made on first request and cached on disk, only from under the gallery folder.

A point's payload is data, not a permission: its path is served only when, resolved (symlinks followed), it is a
regular file under CLIP_GALLERY_DIR. A payload pointing elsewhere (`..`, an absolute path, a symlink out of the
folder) gets no thumbnail, whatever wrote it; nor does a file or folder swapped for a symlink after that check.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from pathlib import Path

from clip_vectorize.errors import InvalidImageError
from clip_vectorize.gallery.errors import ThumbnailUnavailableError
from clip_vectorize.gallery.payload import CONTENT_HASH
from clip_vectorize.gallery.store.base import IndexedPoint
from clip_vectorize.inference.image_io import load_rgb_image

THUMBNAIL_SIDE = 320  # the longer side, in pixels: sharp in a grid of ~200 px cells on a high-density screen
JPEG_QUALITY = 82


class Thumbnails:
    def __init__(self, gallery_dir: Path, cache_dir: Path, max_pixels: int, side: int = THUMBNAIL_SIDE) -> None:
        self.gallery_dir = gallery_dir.expanduser().resolve()
        self.cache_dir = cache_dir.expanduser()
        self.max_pixels, self.side = max_pixels, side

    def for_point(self, point: IndexedPoint) -> Path:
        """The cached thumbnail of `point`'s image, made now if it is not cached yet."""
        source = self.source_file(point)
        target = self.cache_dir / f"{self._cache_key(point, source)}-{self.side}.jpg"
        if not target.is_file():
            self._make(source, target)
        return target

    def source_file(self, point: IndexedPoint) -> Path:
        """The point's image file, if it lies under the gallery folder once resolved; else a refusal."""
        raw = point.payload.get("path")
        if not isinstance(raw, str) or not raw:
            raise ThumbnailUnavailableError(f"point {point.id} has no image file (a URL item: use its URL)")
        try:
            resolved = (self.gallery_dir / raw).resolve(strict=True)  # an absolute `raw` replaces the folder
        except (OSError, RuntimeError):  # missing, or a symlink loop
            raise ThumbnailUnavailableError(f"the image of point {point.id} is no longer there") from None
        if not resolved.is_relative_to(self.gallery_dir) or not resolved.is_file():
            raise ThumbnailUnavailableError(f"the image of point {point.id} is not a file under the gallery folder")
        return resolved

    def _cache_key(self, point: IndexedPoint, source: Path) -> str:
        """The content hash when indexed; a changed file gets a new thumbnail with its next index run."""
        content = point.payload.get(CONTENT_HASH)
        if isinstance(content, str) and content.isalnum():
            return content
        return hashlib.blake2b(str(source).encode(), digest_size=16).hexdigest()

    def _make(self, source: Path, target: Path) -> None:
        try:
            image = load_rgb_image(_read_within(self.gallery_dir, source), self.max_pixels, draft_size=self.side)
        except (OSError, InvalidImageError) as exc:
            raise ThumbnailUnavailableError(f"cannot make a thumbnail of {source.name}: {exc}") from None
        image.thumbnail((self.side, self.side))
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        # Written aside and renamed: two requests racing for one thumbnail never serve half a file.
        handle, temporary = tempfile.mkstemp(dir=self.cache_dir, suffix=".part")
        try:
            with os.fdopen(handle, "wb") as out:
                image.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
            os.replace(temporary, target)
        finally:
            Path(temporary).unlink(missing_ok=True)  # gone after the rename; left only by a failed save


def _read_within(folder: Path, checked: Path) -> bytes:
    """The bytes of `checked`, if the file opened is still a regular file under `folder`: a file or directory
    swapped for a symlink since the check leads out of it. Non-blocking, so a FIFO swapped in cannot hang us."""
    with os.fdopen(os.open(checked, os.O_RDONLY | os.O_NONBLOCK), "rb") as handle:
        opened = Path(os.readlink(f"/proc/self/fd/{handle.fileno()}"))  # where the file really is (Linux)
        if not opened.is_relative_to(folder) or not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise OSError(f"{checked.name} was replaced since it was checked")
        return handle.read()
