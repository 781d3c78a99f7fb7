"""The one way tests build the app: `create_app` with settings given as keywords and an encoder handed in."""

from __future__ import annotations

import tempfile
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient

from clip_vectorize.inference.vectors import Encoder
from clip_vectorize_service import create_app
from config import Settings
from support.fake_encoder import FakeEncoder

_SCRATCH = tempfile.TemporaryDirectory(prefix="clip-apps-")  # removed when the test process exits


def make_app(encoder: Encoder | None = None, **settings) -> Flask:
    """The app around `encoder` (a ready FakeEncoder when none is given), with these settings. Its gallery store
    and thumbnails live in a temporary folder of their own unless the settings say where."""
    scratch = Path(tempfile.mkdtemp(dir=_SCRATCH.name))
    settings = {"qdrant_path": str(scratch / "qdrant_data"), "thumbnail_dir": str(scratch / "thumbnails"), **settings}
    return create_app(Settings(**settings), encoder=encoder if encoder is not None else FakeEncoder())


def make_client(encoder: Encoder | None = None, **settings) -> FlaskClient:
    return make_app(encoder, **settings).test_client()
