"""Where a model comes from, as the user named it, and the one-line errors when it cannot be found or loaded.

A `Source` is a setting's variable and value; every failure becomes one ModelLoadError line that names the
variable, says what was tried and how to fix it. Shared by the CLIP model and the multilingual text model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import snapshot_download

from clip_vectorize.errors import ModelLoadError
from config import DEFAULT_MODEL, Settings

REFERENCE_PROJECT_MODEL_DIR = "clip-vit-base-patch32"  # where the old deployment kept its model


@dataclass(frozen=True)
class Source:
    variable: str  # the setting that named the model, e.g. CLIP_MODEL
    value: str  # a Hugging Face id or a local directory
    what: str  # how messages name the model, e.g. "CLIP model"
    fix_hint: str  # one sentence starting with "Fix:"
    hub_files: tuple[str, ...]  # what to fetch of a hub repository: config, tokenizer and weights, nothing else
    hub_skipped: tuple[str, ...] = ()  # what to leave behind even where hub_files match (other runtimes' copies)

    def error(self, problem: str) -> ModelLoadError:
        """`problem` continues the sentence after the setting: " is not ...", or ", tried ...: reason"."""
        return ModelLoadError(f"cannot load {self.what}: {self.variable}={self.value!r}{problem}. {self.fix_hint}")


@contextmanager
def loading(source: Source, where: str) -> Iterator[None]:
    """Turn whatever a loader raises into one ModelLoadError line naming `source` and `where` it looked."""
    try:
        yield
    except ModelLoadError:
        raise
    except Exception as exc:  # transformers and the hub raise OSError, ValueError, JSON and safetensors errors alike
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
        raise source.error(f", tried {where}: {reason}") from exc


def locate_model(source: Source) -> tuple[Path, str]:
    """A local directory holding the checkpoint (a hub id is fetched into, or found in, the HF cache)."""
    local = Path(source.value).expanduser()
    if local.is_dir():
        return local, f"the local directory {local}"
    if source.value.startswith(("/", ".", "~")):
        raise source.error(" is not an existing directory")
    where = "the Hugging Face hub id (or its local cache)"
    with loading(source, where):
        return Path(snapshot_download(repo_id=source.value, allow_patterns=list(source.hub_files),
                                      ignore_patterns=list(source.hub_skipped) or None)), where


def resolve_model_source(settings: Settings) -> str:
    """CLIP_MODEL if set; else the old deployment's `$CLIP_REFERENCE_PROJECT/clip-vit-base-patch32/`; else the
    hub id."""
    if settings.model:
        return settings.model
    if settings.reference_project:
        legacy_dir = Path(settings.reference_project).expanduser() / REFERENCE_PROJECT_MODEL_DIR
        if legacy_dir.is_dir():
            return str(legacy_dir)
    return DEFAULT_MODEL
