"""Typed errors of the gallery: indexing, storing and searching. Like the encoder's, they know nothing of HTTP."""


class GalleryError(Exception):
    """The gallery cannot be indexed or searched as asked; the message says what to do."""


class SourceError(GalleryError):
    """The folder or manifest to index cannot be read: missing, or a manifest without the columns it needs."""


class StoreError(GalleryError):
    """The Qdrant store cannot be used: locked by another process, unreachable, or holding other vectors."""


class CollectionMissingError(GalleryError):
    """Nothing has been indexed into the configured collection yet: there is nothing to search."""


class PointNotFoundError(GalleryError):
    """No point with the id asked for (searching near it, or its thumbnail)."""


class InvalidFilterError(GalleryError):
    """A search filter that is not Qdrant's filter JSON."""


class NoGalleryFolderError(GalleryError):
    """Asked to index the service's gallery folder, but CLIP_GALLERY_DIR is not set."""


class IndexRunningError(GalleryError):
    """An index run of the gallery folder is already under way."""


class ThumbnailUnavailableError(GalleryError):
    """A point whose image is not a readable file under the gallery folder: no thumbnail to serve."""
