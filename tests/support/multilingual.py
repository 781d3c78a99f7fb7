"""Tiny multilingual text towers in the three published formats that map text into CLIP ViT-B/32 image space.

Random weights and vocabularies written here, so tests need no download. Each folder mirrors its published
checkpoint's own layout:
- sentence-transformers (sentence-transformers/clip-ViT-B-32-multilingual-v1): DistilBERT, mean pooling, Dense;
- M-CLIP (M-CLIP/XLM-Roberta-Large-Vit-B-32): XLM-R, masked mean, Linear; its own config, not loadable by Auto classes;
- Taiyi-CLIP (IDEA-CCNL/Taiyi-CLIP-Roberta-102M-Chinese): BertForSequenceClassification, the logits are the feature.
Each has a reference, the format's own way of producing the text feature, for parity tests.
"""

from __future__ import annotations

import json
import tempfile
import unicodedata
from collections.abc import Callable
from pathlib import Path
from string import ascii_letters, digits
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
from tokenizers.models import Unigram
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertTokenizer,
    DistilBertConfig,
    DistilBertModel,
    DistilBertTokenizerFast,
    PreTrainedModel,
    XLMRobertaConfig,
    XLMRobertaModel,
    XLMRobertaTokenizerFast,
)

MULTILINGUAL_WORDS: list[str] = [
    *"红色的宝马白轿车汽一辆",  # every character of 红色的宝马SUV, 白色轿车, 汽车, 一辆
    "SUV", "BMW",
    "red", "bmw", "suv", "a", "car", "photo", "of", "white", "sedan",
    "красный", "автомобиль",
]
SENTENCE_TRANSFORMER_MAX_SEQ_LENGTH = 32  # sentence_bert_config.json's cap, below the 64 positions (128 of 512 real)
MAX_POSITIONS = 64  # usable positions of every tiny tower (XLM-R stores 66: padding_idx + 1 offset)
WORDPIECE_SPECIALS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                      "mask_token": "[MASK]"}
XLMR_SPECIALS = {"bos_token": "<s>", "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>",
                 "sep_token": "</s>", "cls_token": "<s>", "mask_token": "<mask>"}


def _normalized(word: str) -> str:
    """The word as an uncased BERT tokenizer sees it: lowercased, accents (combining marks) stripped."""
    return "".join(char for char in unicodedata.normalize("NFD", word.lower()) if unicodedata.category(char) != "Mn")


def _known_words() -> list[str]:
    """MULTILINGUAL_WORDS plus their uncased forms, once each, in a fixed order."""
    return list(dict.fromkeys([*MULTILINGUAL_WORDS, *map(_normalized, MULTILINGUAL_WORDS)]))


def _known_characters() -> list[str]:
    """Every character of the known words plus ASCII letters and digits, so any such word tokenizes without UNK."""
    return list(dict.fromkeys([*"".join(_known_words()), *ascii_letters, *digits]))


def _wordpiece_vocabulary() -> list[str]:
    """BERT-style vocab.txt lines: specials ([PAD] first, id 0), whole words, characters and ##continuations."""
    characters = _known_characters()
    pieces = [*WORDPIECE_SPECIALS.values(), *_known_words(), *characters, *(f"##{char}" for char in characters)]
    return list(dict.fromkeys(pieces))


def _unigram_vocabulary() -> list[tuple[str, float]]:
    """XLM-R-style pieces with scores: <s> <pad> </s> <unk>, then ▁word, word, ▁ and characters, <mask> last."""
    words, characters = MULTILINGUAL_WORDS, _known_characters()
    scored = [(f"▁{word}", -1.0) for word in words] + [(word, -2.0) for word in words]
    scored += [("▁", -3.0)] + [(char, -4.0) for char in characters]
    pieces: dict[str, float] = {}
    for piece, score in scored:  # a word that is also a character keeps its word score
        pieces.setdefault(piece, score)
    specials = [(XLMR_SPECIALS[name], 0.0) for name in ("bos_token", "pad_token", "eos_token", "unk_token")]
    return [*specials, *pieces.items(), (XLMR_SPECIALS["mask_token"], 0.0)]


TINY_XLMR_CONFIG: dict[str, Any] = {
    "vocab_size": len(_unigram_vocabulary()), "hidden_size": 64, "num_attention_heads": 1, "num_hidden_layers": 2,
    "intermediate_size": 128, "max_position_embeddings": MAX_POSITIONS + 2, "type_vocab_size": 1,
    "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2, "layer_norm_eps": 1e-5,
}


def _write_json(path: Path, content: Any) -> None:
    """Write `content` as indented UTF-8 JSON, creating the parent folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _update_json(path: Path, **changes: Any) -> None:
    """Rewrite the JSON object in `path` with `changes` applied."""
    _write_json(path, {**json.loads(path.read_text(encoding="utf-8")), **changes})


def _write_wordpiece_tokenizer(directory: Path, tokenizer_class: type, lowercase: bool) -> None:
    """Write vocab.txt, special_tokens_map.json and what the tokenizer saves (tokenizer.json, tokenizer_config.json)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(_wordpiece_vocabulary()) + "\n", encoding="utf-8")
    _write_json(directory / "special_tokens_map.json", WORDPIECE_SPECIALS)
    tokenizer = tokenizer_class(vocab=str(directory / "vocab.txt"), do_lower_case=lowercase,
                                model_max_length=MAX_POSITIONS, **WORDPIECE_SPECIALS)
    tokenizer.save_pretrained(directory)


def _write_xlmr_tokenizer(directory: Path) -> None:
    """Write an XLM-R-style Unigram tokenizer: tokenizer.json, tokenizer_config.json, special_tokens_map.json."""
    backend = Tokenizer(Unigram(_unigram_vocabulary(), unk_id=3, byte_fallback=False))
    # The pipeline XLMRobertaTokenizer rebuilds on load (transformers 5 keeps only the vocabulary and the
    # post-processor from tokenizer.json), so tokenizers.Tokenizer.from_file and AutoTokenizer agree.
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")])
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    backend.post_processor = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
                                                           special_tokens=[("<s>", 0), ("</s>", 2)])
    tokenizer = XLMRobertaTokenizerFast(tokenizer_object=backend, model_max_length=MAX_POSITIONS, **XLMR_SPECIALS)
    tokenizer.save_pretrained(directory)
    _write_json(directory / "special_tokens_map.json", XLMR_SPECIALS)


def _legacy_state_dict(model: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """The state dict as transformers 4.x (< 4.31) saved it: with the position_ids buffers, under `prefix`."""
    state = {**model.state_dict(), **{name: buffer for name, buffer in model.named_buffers()
                                      if name.endswith("position_ids")}}
    return {prefix + name: tensor.contiguous() for name, tensor in state.items()}


def _save_pytorch_bin(model: PreTrainedModel, directory: Path) -> None:
    """Save config.json and pytorch_model.bin the way the 2022 checkpoints were published (no safetensors)."""
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(directory)
    torch.save(_legacy_state_dict(model), directory / "pytorch_model.bin")


def _write_published_sentence_transformer_configs(directory: Path, width: int, dimension: int) -> None:
    """Rewrite the module configs in the layout of the published checkpoint (sentence-transformers 2.x keys)."""
    types = ["Transformer", "Pooling", "Dense"]
    _write_json(directory / "modules.json", [
        {"idx": index, "name": str(index), "path": path, "type": f"sentence_transformers.models.{kind}"}
        for index, (path, kind) in enumerate(zip(["", "1_Pooling", "2_Dense"], types))])
    _write_json(directory / "sentence_bert_config.json",
                {"max_seq_length": SENTENCE_TRANSFORMER_MAX_SEQ_LENGTH, "do_lower_case": False})
    _write_json(directory / "1_Pooling" / "config.json", {
        "word_embedding_dimension": width, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False})
    _write_json(directory / "2_Dense" / "config.json", {
        "in_features": width, "out_features": dimension, "bias": False,
        "activation_function": "torch.nn.modules.linear.Identity"})
    # sentence-transformers 6 stores max_seq_length as the tokenizer's limit; the published one keeps 512 there.
    _update_json(directory / "tokenizer_config.json", model_max_length=MAX_POSITIONS)


def build_tiny_sentence_transformer(directory: Path, dimension: int = 24, seed: int = 0,
                                    published_layout: bool = True) -> Path:
    """Write a clip-ViT-B-32-multilingual-v1-shaped folder: DistilBERT + mean Pooling + Dense (no bias, Identity).
    With `published_layout=False` the folder stays as today's `SentenceTransformer.save` writes it."""
    from sentence_transformers import SentenceTransformer  # imported here: the package takes seconds to import
    from sentence_transformers.sentence_transformer.modules import Dense, Pooling, Transformer

    config = DistilBertConfig(vocab_size=len(_wordpiece_vocabulary()), dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                              max_position_embeddings=MAX_POSITIONS)
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as base:
        _write_wordpiece_tokenizer(Path(base), DistilBertTokenizerFast, lowercase=False)
        DistilBertModel(config).save_pretrained(base)
        transformer = Transformer(base, max_seq_length=SENTENCE_TRANSFORMER_MAX_SEQ_LENGTH)
        modules = [transformer, Pooling(config.dim, pooling_mode="mean"),
                   Dense(config.dim, dimension, bias=False, activation_function=torch.nn.Identity())]
        SentenceTransformer(modules=modules, device="cpu").save(str(directory), safe_serialization=False)
        for name in ("vocab.txt", "special_tokens_map.json"):  # transformers 5 no longer saves these two
            (directory / name).write_bytes((Path(base) / name).read_bytes())
    if published_layout:
        _write_published_sentence_transformer_configs(directory, config.dim, dimension)
    return directory


def build_tiny_mclip(directory: Path, dimension: int = 24, seed: int = 0) -> Path:
    """Write an M-CLIP-shaped folder: its own config.json, pytorch_model.bin (transformer.*, LinearTransformation.*)."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    transformer = XLMRobertaModel(XLMRobertaConfig(**TINY_XLMR_CONFIG))
    projection = torch.nn.Linear(TINY_XLMR_CONFIG["hidden_size"], dimension)
    weights = {**_legacy_state_dict(transformer, "transformer."),
               **_legacy_state_dict(projection, "LinearTransformation.")}
    torch.save(weights, directory / "pytorch_model.bin")
    _write_json(directory / "config.json", {
        "architectures": ["MultilingualCLIP"], "model_type": "M-CLIP", "modelBase": "xlm-roberta-large",
        "transformerDimensions": TINY_XLMR_CONFIG["hidden_size"], "numDims": dimension, "torch_dtype": "float32"})
    _write_xlmr_tokenizer(directory)
    return directory


def build_tiny_taiyi(directory: Path, dimension: int = 24, seed: int = 0) -> Path:
    """Write a Taiyi-CLIP-shaped folder: BertForSequenceClassification (num_labels = dimension) and BERT vocab.txt."""
    config = BertConfig(vocab_size=len(_wordpiece_vocabulary()), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=MAX_POSITIONS,
                        num_labels=dimension)
    torch.manual_seed(seed)
    _save_pytorch_bin(BertForSequenceClassification(config), directory)
    _write_wordpiece_tokenizer(directory, BertTokenizer, lowercase=True)
    (directory / "tokenizer.json").unlink()  # the published folder has only vocab.txt and the two small configs
    return directory


def _unit_rows(features: torch.Tensor | np.ndarray) -> np.ndarray:
    """float32 rows scaled to unit L2 norm."""
    rows = np.asarray(features.detach().numpy() if isinstance(features, torch.Tensor) else features, np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _unprefixed(weights: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors whose names start with `prefix`, under their names without it."""
    return {name.removeprefix(prefix): tensor for name, tensor in weights.items() if name.startswith(prefix)}


def sentence_transformer_reference(directory: Path) -> Callable[[list[str]], np.ndarray]:
    """sentence-transformers' own encode (normalized), over the folder loaded once."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(directory), device="cpu")
    return lambda texts: _unit_rows(model.encode(texts, normalize_embeddings=True, convert_to_numpy=True))


def mclip_reference(directory: Path) -> Callable[[list[str]], np.ndarray]:
    """M-CLIP's published forward (multilingual_clip/pt_multilingual_clip.py): masked mean, Linear; then normalized.

    Like the original it does not truncate: texts must fit the MAX_POSITIONS positions."""
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    weights = torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    transformer = XLMRobertaModel(XLMRobertaConfig(**TINY_XLMR_CONFIG)).eval()
    state = _unprefixed(weights, "transformer.")
    state.pop("embeddings.position_ids")  # a buffer the 2022 checkpoint still saved, no longer in the state dict
    transformer.load_state_dict(state)
    projection = torch.nn.Linear(config["transformerDimensions"], config["numDims"])
    projection.load_state_dict(_unprefixed(weights, "LinearTransformation."))

    @torch.inference_mode()
    def encode(texts: list[str]) -> np.ndarray:
        tokens = tokenizer(texts, padding=True, return_tensors="pt")
        embeddings = transformer(**tokens)[0]
        mask = tokens["attention_mask"]
        embeddings = (embeddings * mask.unsqueeze(2)).sum(dim=1) / mask.sum(dim=1)[:, None]
        return _unit_rows(projection(embeddings))

    return encode


def taiyi_reference(directory: Path) -> Callable[[list[str]], np.ndarray]:
    """The Taiyi-CLIP model card's way: BertTokenizer, BertForSequenceClassification logits; then normalized.

    Like the card it does not truncate: texts must fit the MAX_POSITIONS positions."""
    tokenizer = BertTokenizer.from_pretrained(directory)
    model = BertForSequenceClassification.from_pretrained(directory).eval()

    @torch.inference_mode()
    def encode(texts: list[str]) -> np.ndarray:
        tokens = tokenizer(texts, return_tensors="pt", padding=True)
        # The card passes only input_ids, so with padding its shorter rows attend to [PAD]; the mask makes every
        # row what it would be alone, which is what a batching service must reproduce.
        return _unit_rows(model(tokens["input_ids"], attention_mask=tokens["attention_mask"]).logits)

    return encode
