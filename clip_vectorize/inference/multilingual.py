"""Text towers trained into CLIP ViT-B/32's image space, in the three formats they are published in.

- sentence-transformers (clip-ViT-B-32-multilingual-v1): `modules.json`; a transformer, mean pooling, Dense.
- M-CLIP (XLM-Roberta-Large-Vit-B-32): `config.json` with `model_type: "M-CLIP"`; an XLM-R encoder, masked
  mean pooling, a Linear with bias. Its own loader downloads `xlm-roberta-large` at construction: ours builds
  that architecture from the weights' shapes instead, so nothing is fetched.
- BERT sequence classification (Taiyi-CLIP): a `BertForSequenceClassification` whose logits are the feature.

The format is recognised from the files. Each becomes one torch module, `input_ids, attention_mask ->
unit vectors`, which is what gets exported to ONNX and run by the shared text path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    XLMRobertaConfig,
    XLMRobertaModel,
    XLMRobertaTokenizer,
)

from clip_vectorize.inference.model_source import Source, loading, locate_model

SENTENCE_TRANSFORMERS = "sentence-transformers"
M_CLIP = "m-clip"
SEQUENCE_CLASSIFICATION = "bert-sequence-classification"
FIX_HINT = ("Fix: point CLIP_MULTILINGUAL_MODEL at a local directory holding one of the three supported formats "
            "(README: Chinese and multilingual queries), or unset it.")
# What to fetch of a hub repository (the patterns match across folders); repositories also carry ONNX and OpenVINO
# copies the service does not read.
HUB_FILES = ("*.json", "*.txt", "*.safetensors", "*.bin", "*.model")
HUB_SKIPPED = ("onnx/*", "openvino/*", "*.onnx", "*.h5", "*.msgpack", "*.ot")
_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {  # sentence-transformers' Dense names its activation by class path
    "torch.nn.modules.linear.Identity": nn.Identity,
    "torch.nn.modules.activation.Tanh": nn.Tanh,
}


def multilingual_source(value: str) -> Source:
    return Source("CLIP_MULTILINGUAL_MODEL", value, "the multilingual text model", FIX_HINT, HUB_FILES, HUB_SKIPPED)


@dataclass(frozen=True)
class MultilingualParts:
    """Everything but the weights: the format, tokenizer, vector size and how many tokens the model reads."""

    source: Source
    directory: Path
    format: str
    tokenizer: Any  # a transformers tokenizer
    dimension: int
    context_length: int
    languages: str  # "multilingual", or "zh" for a Chinese-only tower

    @property
    def name(self) -> str:
        return self.source.value

    export_kind = "multilingual"

    def torch_towers(self) -> tuple[nn.Module, None]:
        return build_tower(self.directory, self.format), None


def load_multilingual_parts(source: Source) -> MultilingualParts:
    directory, where = locate_model(source)
    fmt = detect_format(directory, source)
    with loading(source, where):
        describe = {SENTENCE_TRANSFORMERS: _sentence_transformers_parts, M_CLIP: _mclip_parts,
                    SEQUENCE_CLASSIFICATION: _sequence_classification_parts}[fmt]
        tokenizer, dimension, context_length, languages = describe(directory)
    return MultilingualParts(source, directory, fmt, tokenizer, dimension, context_length, languages)


def detect_format(directory: Path, source: Source) -> str:
    """Which of the three layouts `directory` holds, from its files alone; anything else is a clear error."""
    config = _json(directory / "config.json") if (directory / "config.json").is_file() else {}
    if (directory / "modules.json").is_file():
        return SENTENCE_TRANSFORMERS
    if config.get("model_type") == "M-CLIP":
        return M_CLIP
    if any(name.endswith("ForSequenceClassification") for name in config.get("architectures", [])):
        return SEQUENCE_CLASSIFICATION
    found = ", ".join(sorted(path.name for path in directory.iterdir())[:12]) or "nothing"
    raise source.error(
        f" is none of the supported formats: found {found}; expected modules.json (sentence-transformers), "
        "config.json with model_type M-CLIP, or a *ForSequenceClassification config.json (Taiyi-CLIP)")


# ---------------------------------------------------------------- what each format says about itself


def _sentence_transformers_parts(directory: Path) -> tuple[Any, int, int, str]:
    modules = _st_modules(directory)
    transformer_dir = directory / modules["Transformer"][0]
    tokenizer = AutoTokenizer.from_pretrained(transformer_dir, local_files_only=True)
    dimension = _json(directory / modules["Dense"][-1] / "config.json")["out_features"]
    return tokenizer, dimension, _st_max_length(transformer_dir, tokenizer), "multilingual"


def _st_max_length(transformer_dir: Path, tokenizer: Any) -> int:
    """sentence_bert_config.json's max_seq_length (2.x saves it there); else the tokenizer's own limit, as newer
    sentence-transformers save it; never more positions than the transformer has."""
    config = transformer_dir / "sentence_bert_config.json"
    declared = _json(config).get("max_seq_length") if config.is_file() else None
    positions = _json(transformer_dir / "config.json").get("max_position_embeddings", 512)
    return min(declared or tokenizer.model_max_length, positions)


def _mclip_parts(directory: Path) -> tuple[Any, int, int, str]:
    positions = _tensor_shape(directory, "transformer.embeddings.position_embeddings.weight")[0]
    context_length = positions - 2  # XLM-R numbers positions from padding_idx + 1
    dimension = _json(directory / "config.json")["numDims"]
    # The tower is XLM-R by construction: name its tokenizer, since config.json's model_type ("M-CLIP") does not
    tokenizer = XLMRobertaTokenizer.from_pretrained(directory, local_files_only=True)
    return tokenizer, dimension, context_length, "multilingual"


def _sequence_classification_parts(directory: Path) -> tuple[Any, int, int, str]:
    config = _json(directory / "config.json")
    dimension = len(config.get("id2label") or {}) or config["num_labels"]
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    # The one published tower in this format, Taiyi-CLIP, reads Chinese only: route only Han text to it
    return tokenizer, dimension, config["max_position_embeddings"], "zh"


# ---------------------------------------------------------------- the towers as torch modules


class MeanPooledTower(nn.Module):
    """Transformer -> mean over the attended tokens -> projection -> L2 norm (sentence-transformers, M-CLIP)."""

    def __init__(self, encoder: nn.Module, projection: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.projection = projection

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(self.projection(pooled).float(), dim=-1)


class LogitsTower(nn.Module):
    """A sequence-classification model whose logits are the text feature (Taiyi-CLIP) -> L2 norm."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        return nn.functional.normalize(logits.float(), dim=-1)


def build_tower(directory: Path, fmt: str, attention: str = "sdpa") -> nn.Module:
    """The format's tower with its weights, in eval mode. `attention="eager"` for ONNX export (fusable)."""
    build = {SENTENCE_TRANSFORMERS: _sentence_transformers_tower, M_CLIP: _mclip_tower,
             SEQUENCE_CLASSIFICATION: _sequence_classification_tower}[fmt]
    return build(directory, attention).eval()


def _sentence_transformers_tower(directory: Path, attention: str) -> nn.Module:
    modules = _st_modules(directory)
    encoder = AutoModel.from_pretrained(directory / modules["Transformer"][0], local_files_only=True,
                                        attn_implementation=attention)
    projection = nn.Sequential(*(_dense(directory / path) for path in modules["Dense"]))
    return MeanPooledTower(encoder, projection)


def _mclip_tower(directory: Path, attention: str) -> nn.Module:
    weights = _state_dict(directory)
    encoder = XLMRobertaModel(_xlmr_config_from_weights(weights, attention), add_pooling_layer=False)
    prefix = "transformer."
    encoder.load_state_dict({key[len(prefix):]: value for key, value in weights.items()  # older transformers
                             if key.startswith(prefix) and not key.startswith(f"{prefix}pooler.")  # saved position_ids
                             and not key.endswith("position_ids")})
    out_features, in_features = weights["LinearTransformation.weight"].shape
    projection = nn.Linear(in_features, out_features)
    projection.load_state_dict({"weight": weights["LinearTransformation.weight"],
                                "bias": weights["LinearTransformation.bias"]})
    return MeanPooledTower(encoder, projection)


def _sequence_classification_tower(directory: Path, attention: str) -> nn.Module:
    model = AutoModelForSequenceClassification.from_pretrained(directory, local_files_only=True,
                                                               attn_implementation=attention)
    return LogitsTower(model)


def _xlmr_config_from_weights(weights: dict[str, torch.Tensor], attention: str) -> XLMRobertaConfig:
    """XLM-R's architecture read from its weights' shapes (M-CLIP's config names only `modelBase`).
    Heads are not in any shape: xlm-roberta-base and -large both use one head per 64 dimensions."""
    words = weights["transformer.embeddings.word_embeddings.weight"]
    layer_key = re.compile(r"transformer\.encoder\.layer\.(\d+)\.")
    layers = {int(match.group(1)) for key in weights if (match := layer_key.match(key))}
    hidden = words.shape[1]
    config = XLMRobertaConfig(
        vocab_size=words.shape[0], hidden_size=hidden, num_hidden_layers=len(layers),
        num_attention_heads=max(1, hidden // 64),
        intermediate_size=weights["transformer.encoder.layer.0.intermediate.dense.weight"].shape[0],
        max_position_embeddings=weights["transformer.embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=weights["transformer.embeddings.token_type_embeddings.weight"].shape[0],
        pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5)
    config._attn_implementation = attention
    return config


def _dense(path: Path) -> nn.Module:
    """One sentence-transformers Dense module: Linear (with or without bias) and its activation."""
    config = _json(path / "config.json")
    activation = config.get("activation_function", "torch.nn.modules.activation.Tanh")  # Dense's own default
    if activation not in _ACTIVATIONS:
        raise ValueError(f"{path.name}: activation {activation} is not supported (only {', '.join(_ACTIVATIONS)})")
    linear = nn.Linear(config["in_features"], config["out_features"], bias=config.get("bias", True))
    state = _state_dict(path)
    linear.load_state_dict({key.removeprefix("linear."): value for key, value in state.items()})
    return nn.Sequential(linear, _ACTIVATIONS[activation]())


def _st_modules(directory: Path) -> dict[str, list[str]]:
    """modules.json's modules by kind (Transformer, Pooling, Dense, Normalize), each a list of paths in order."""
    modules: dict[str, list[str]] = {}
    for module in sorted(_json(directory / "modules.json"), key=lambda entry: entry.get("idx", 0)):
        modules.setdefault(module["type"].rsplit(".", 1)[-1], []).append(module["path"])
    pooling = _json(directory / modules["Pooling"][0] / "config.json") if "Pooling" in modules else {}
    if not modules.get("Transformer") or not modules.get("Dense") or not _pools_by_mean(pooling):
        raise ValueError("modules.json must hold a Transformer, mean Pooling and a Dense projection to CLIP's size")
    return modules


def _pools_by_mean(pooling: dict) -> bool:
    return bool(pooling.get("pooling_mode_mean_tokens") or pooling.get("pooling_mode") == "mean")


def _state_dict(directory: Path, mmap: bool = False) -> dict[str, torch.Tensor]:
    """The weights in `directory`: model.safetensors, else pytorch_model.bin (loaded as plain tensors only)."""
    if (directory / "model.safetensors").is_file():
        return load_file(directory / "model.safetensors")
    return torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True, mmap=mmap)


def _tensor_shape(directory: Path, key: str) -> tuple[int, ...]:
    """One weight's shape without reading the weights (a worker that runs the ONNX export never needs them)."""
    if (directory / "model.safetensors").is_file():
        with safe_open(directory / "model.safetensors", "pt") as weights:
            return tuple(weights.get_slice(key).get_shape())
    return tuple(_state_dict(directory, mmap=True)[key].shape)


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))
