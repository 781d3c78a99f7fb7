"""One text model's path from strings to vectors: tokenize -> cache -> length-grouped padded passes -> batcher.

A text encoder is an instance of `TextPath` given its tokenizer, its backend's text function, its context
length and truncation rule; a second text model is a second instance, never a copy of this code.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from clip_vectorize.inference.batching import BatchLimits, MicroBatcher
from clip_vectorize.inference.text_cache import LruCache
from clip_vectorize.inference.vectors import TextVectors

# A forward pass costs about as much as 8 more tokens of padding per batch (ViT-B/32 text tower, ONNX Runtime,
# 2 cores: ~3.4 ms fixed per pass, ~0.43 ms per token row), so texts share a pass while padding costs less.
PASS_COST_TOKENS = 8

TextEncodeFunction = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (input_ids, attention_mask) -> unit vectors
TruncationRule = Callable[[list[int], int], list[int]]  # (token ids, context length) -> ids that fit
TextEntry = tuple[np.ndarray, bool, int]  # a text's vector, whether it was truncated, how many tokens it was


def keep_end_token(tokens: list[int], context_length: int) -> list[int]:
    """Cut to the context length but keep the last token: CLIP pools on its end token, BERT ends with [SEP]."""
    return tokens[: context_length - 1] + tokens[-1:]


@dataclass(frozen=True)
class TextModel:
    """What a text path needs to know of its model."""

    tokenizer: Callable  # a transformers tokenizer: called on a list of texts, gives {"input_ids": [[...], ...]}
    encode: TextEncodeFunction
    context_length: int
    pad_token_id: int
    dimension: int
    truncate: TruncationRule = keep_end_token


class TextPath:
    """Texts in, unit vectors out, through a cache and one micro-batcher that coalesces concurrent requests."""

    def __init__(self, model: TextModel, cache: LruCache[TextEntry], limits: BatchLimits, *, name: str,
                 timeout_s: float) -> None:
        self.name = name  # the encoder's name ("clip", "multilingual"): reported with every vector it makes
        self.model = model
        self.cache = cache
        self.timeout_s = timeout_s
        self.batcher: MicroBatcher[list[int], np.ndarray] = MicroBatcher(self._encode_token_batch, limits,
                                                                          name=f"{name}-text")

    def encode(self, texts: Sequence[str], deadline: float | None = None) -> TextVectors:
        """Vectors in input order; each distinct uncached text goes through the model once. `deadline`
        (time.monotonic()) bounds the wait for the model, else this path's own timeout does."""
        entries: list[TextEntry | None] = [self.cache.get(text) for text in texts]
        missing = list(dict.fromkeys(text for text, entry in zip(texts, entries) if entry is None))
        if missing:
            token_lists, lengths = self.tokenize(missing)
            timeout = self.timeout_s if deadline is None else max(0.0, deadline - time.monotonic())
            vectors = self.batcher.run(token_lists, timeout)
            fresh = {text: (vector, length > self.model.context_length, length)
                     for text, vector, length in zip(missing, vectors, lengths)}
            for text, entry in fresh.items():
                self.cache.put(text, entry)
            entries = [entry or fresh[text] for text, entry in zip(texts, entries)]
        found: list[TextEntry] = [entry for entry in entries if entry is not None]
        if not found:
            return TextVectors(np.zeros((0, self.model.dimension), np.float32), [], [], [])
        return TextVectors(np.stack([vector for vector, _, _ in found]), [cut for _, cut, _ in found],
                           [self.name] * len(found), [length for _, _, length in found])

    def tokenize(self, texts: Sequence[str]) -> tuple[list[list[int]], list[int]]:
        """Token ids per text, cut by the model's truncation rule past its context length, and each text's length
        in tokens before the cut (longer than the context: it was truncated)."""
        limit = self.model.context_length
        token_lists = self.model.tokenizer(list(texts), add_special_tokens=True)["input_ids"]
        cut = [self.model.truncate(tokens, limit) if len(tokens) > limit else tokens for tokens in token_lists]
        return cut, [len(tokens) for tokens in token_lists]

    def warm_up(self, text: str) -> None:
        """One pass outside the cache, so no user pays for the runtime's first inference."""
        self.batcher.run(self.tokenize([text])[0])

    def close(self) -> None:
        self.batcher.close()

    def _encode_token_batch(self, token_lists: list[list[int]]) -> np.ndarray:
        """One pass per group of similar-length texts: padding a 10-token query to 36 costs more than a pass."""
        vectors = np.empty((len(token_lists), self.model.dimension), np.float32)
        for indices in group_by_length([len(tokens) for tokens in token_lists]):
            vectors[indices] = self.model.encode(*self._padded([token_lists[index] for index in indices]))
        return vectors

    def _padded(self, token_lists: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Ids padded to the longest list, and the attention mask that keeps padding out of every vector."""
        width = max(len(tokens) for tokens in token_lists)
        input_ids = np.full((len(token_lists), width), self.model.pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((len(token_lists), width), dtype=np.int64)
        for row, tokens in enumerate(token_lists):
            input_ids[row, : len(tokens)] = tokens
            attention_mask[row, : len(tokens)] = 1
        return input_ids, attention_mask


def group_by_length(lengths: Sequence[int], pass_cost: int = PASS_COST_TOKENS) -> list[list[int]]:
    """Indices grouped so that each group's padding costs less than the extra forward pass it saves."""
    groups: list[list[int]] = []
    width = 0
    for index in sorted(range(len(lengths)), key=lengths.__getitem__):
        if groups and (lengths[index] - width) * len(groups[-1]) <= pass_cost:
            groups[-1].append(index)
        else:
            groups.append([index])
        width = lengths[index]
    return groups
