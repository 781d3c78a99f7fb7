"""`python -m clip_vectorize.gallery index SOURCE`: index a folder or a manifest into the gallery's Qdrant collection;
`copy-to-server URL`: copy the embedded store to a Qdrant server.

The entry point: it reads the settings (the service's CLIP_* and QDRANT_* variables), opens the store, and hands
the indexer a loader that builds the service's own encoder only when something needs encoding.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clip_vectorize.errors import ModelLoadError
from clip_vectorize.gallery.console import BarProgress, LogProgress, render_summary, write_skipped
from clip_vectorize.gallery.engines.local import LocalEngine
from clip_vectorize.gallery.errors import GalleryError
from clip_vectorize.gallery.indexing import Engine, IndexOptions, index
from clip_vectorize.gallery.payload import model_id
from clip_vectorize.gallery.sources import list_source
from clip_vectorize.gallery.store import open_store
from clip_vectorize.gallery.store.base import StoreConfig
from clip_vectorize.gallery.store.copying import copy_points
from clip_vectorize.gallery.summary import Summary
from clip_vectorize.inference.model_source import resolve_model_source  # no torch: a rerun with nothing to do is quick
from clip_vectorize.url_fetch import UrlPolicy
from config import Settings

logger = logging.getLogger("clip_vectorize.gallery")

CANNOT_RUN, INTERRUPTED = 1, 130


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m clip_vectorize.gallery", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("index", help="index a folder (recursively) or a CSV / JSONL manifest")
    run.add_argument("source", help="a folder of images, or a manifest with image_id, path or url, extra columns")
    run.add_argument("--engine", choices=("local", "ray"), default="local",
                     help="local: in this process (default); ray: a Ray Data actor pool (RAY_ADDRESS or a local Ray)")
    run.add_argument("--prune", action="store_true", help="delete this source's points whose image is gone")
    run.add_argument("--recreate", action="store_true", help="drop the collection first and index everything again")
    run.add_argument("--quiet", action="store_true", help="log lines instead of a progress bar")
    run.add_argument("--batch", type=int, default=64, help="points per upsert (default 64)")
    run.add_argument("--skipped-file", type=Path, default=Path("skipped-images.tsv"),
                     help="where the list of skipped images goes (default ./skipped-images.tsv)")
    run.add_argument("--ray-actors", type=int, default=1, help="--engine ray: encoder actors (default 1)")
    run.add_argument("--ray-gpus", type=float, default=0, help="--engine ray: GPUs per actor (default 0)")
    copy = commands.add_parser("copy-to-server", help="copy the embedded store (QDRANT_PATH) to a Qdrant server: "
                                                      "same ids, vectors and payloads, nothing re-encoded")
    copy.add_argument("url", help="the server, e.g. http://qdrant:6333 (QDRANT_API_KEY is its key)")
    copy.add_argument("--collection", help="the server's collection (default: QDRANT_COLLECTION)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops like Ctrl-C: the points written so far stay
    try:
        settings = Settings.from_env()
        if args.command == "copy-to-server":
            return copy_to_server(args, settings)
        summary = run_index(args, settings)
    except (GalleryError, ModelLoadError, ValueError) as exc:
        # The points written so far are kept: the same command continues.
        logger.error("cannot %s: %s", "copy" if args.command == "copy-to-server" else "index", exc)
        return CANNOT_RUN
    except KeyboardInterrupt:
        logger.warning("interrupted: the points written so far are kept; run the same command to continue")
        return INTERRUPTED
    skipped_file = write_skipped(summary, args.skipped_file)
    print(render_summary(summary, skipped_file), file=sys.stderr)
    return 0


def run_index(args: argparse.Namespace, settings: Settings) -> Summary:
    listing = list_source(args.source)
    config = StoreConfig.from_settings(settings)
    options = IndexOptions(model=model_id(resolve_model_source(settings)), upsert_batch=args.batch, prune=args.prune)
    engine = _engine(args, settings, config)
    store = open_store(config)
    try:
        if args.recreate:
            store.recreate()
        progress = LogProgress() if args.quiet or not sys.stderr.isatty() else BarProgress()
        return index(listing, store, options, engine, progress)
    finally:
        store.close()


def copy_to_server(args: argparse.Namespace, settings: Settings) -> int:
    """The step up from one machine: the embedded store's points upserted into a server's collection."""
    source_config = StoreConfig.from_settings(settings)
    target_config = dataclasses.replace(source_config, url=args.url, collection=args.collection or
                                        source_config.collection)
    source = open_store(dataclasses.replace(source_config, url=None))
    try:
        source.require_collection()
        target = open_store(target_config)
        try:
            copied = copy_points(source, target)
        finally:
            target.close()
    finally:
        source.close()
    logger.info("copied %d points from %s to collection '%s' at %s; set QDRANT_URL=%s to use it", copied,
                source_config.where, target_config.collection, args.url, args.url)
    return 0


def _engine(args: argparse.Namespace, settings: Settings, config: StoreConfig) -> Engine:
    """The local engine, or Ray's (imported on this path only: Ray is optional)."""
    # Enough threads to decode the next batch while the model runs this one, never more than its queue holds.
    threads = max(1, min(2 * settings.batch_size, settings.queue_size))
    load_encoder = functools.partial(load_clip_encoder, settings)
    policy = UrlPolicy.from_settings(settings)
    if args.engine == "local":
        return LocalEngine(load_encoder, policy, threads)
    from clip_vectorize.gallery.engines import ray as ray_engine

    ray_engine.check_target(config)
    return ray_engine.RayEngine(load_encoder, functools.partial(load_image_preparer, settings), policy,
                                actors=args.ray_actors, gpus=args.ray_gpus)


def load_clip_encoder(settings: Settings) -> Any:
    """The service's encoder with the service's settings (a ClipEncoder: the local engine's ImageEncoder, Ray's
    PixelEncoder); imported here, so a run with nothing to do loads no torch. Ray pickles this into each actor."""
    from clip_encoder import ClipEncoder

    began = time.monotonic()
    logger.info("loading the model (%s)", resolve_model_source(settings))
    encoder = ClipEncoder.load(settings)
    logger.info("model loaded in %.1f s", time.monotonic() - began)
    return encoder


def load_image_preparer(settings: Settings) -> Callable[[bytes], Any]:
    """The encoder's decoding and preprocessing without its weights: Ray pickles this into each reading actor."""
    from clip_encoder import image_preparer

    return image_preparer(settings)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
