"""CLIP checkpoints the tests write in Hugging Face format: random weights, a byte-level vocabulary, small towers.

They go through the same loading code as the real ViT-B/32, so tests need no download and no network.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

IMAGE_SIZE = 224  # the real input size, so preprocessing runs at true scale; patches of 32 keep it cheap
PROJECTION_DIM = 24
CONTEXT_LENGTH = 77
MERGES = [("h", "e"), ("l", "l"), ("c", "a"), ("ca", "r</w>"), ("r", "e"), ("re", "d</w>")]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable characters (every byte gets a base token)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [byte for byte in range(256) if byte not in printable]
    return dict(zip(printable + extra, map(chr, printable + [256 + n for n in range(len(extra))])))


def tiny_vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    chars = list(_bytes_to_unicode().values())
    tokens = chars + [char + "</w>" for char in chars] + ["".join(pair) for pair in MERGES]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}, MERGES


def build_tiny_clip(directory: Path, seed: int = 0) -> Path:
    """Write config, safetensors weights, tokenizer and preprocessor config into `directory`."""
    vocab, merges = tiny_vocabulary()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": CONTEXT_LENGTH,
            "bos_token_id": vocab["<|startoftext|>"], "eos_token_id": vocab["<|endoftext|>"],
            "pad_token_id": vocab["<|endoftext|>"],
        },
        vision_config={
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "image_size": IMAGE_SIZE, "patch_size": 32,
        },
        projection_dim=PROJECTION_DIM,
    )
    torch.manual_seed(seed)
    CLIPModel(config).eval().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                          crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(directory)
    return directory


def build_small_clip(directory: Path, seed: int = 1) -> Path:
    """Like build_tiny_clip (same tokenizer and preprocessor files), with towers a few times heavier:
    text 512 wide x 8 layers, vision 384 wide x 6 layers at 224 px / 32 px patches. With one inference thread
    it encodes some tens of texts or images per second on one core."""
    build_tiny_clip(directory)
    tiny = CLIPConfig.from_pretrained(directory)
    text, vision = tiny.text_config.to_dict(), tiny.vision_config.to_dict()
    text.update(hidden_size=512, intermediate_size=2048, num_hidden_layers=8, num_attention_heads=8)
    vision.update(hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=6)
    torch.manual_seed(seed)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=64)).eval().save_pretrained(directory)
    return directory
