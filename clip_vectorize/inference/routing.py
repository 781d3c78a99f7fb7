"""Which text encoder reads a text: CLIP's own tower for Latin-script text, the multilingual tower for the rest.

CLIP's text tower was trained on English: Chinese falls apart into byte-level pieces and lands far from the
images it describes. Under `auto`, a text with any Han character goes to the multilingual tower; a tower that
reads more than Chinese also gets any other non-Latin script (Cyrillic, Arabic, Kana, Hangul, Greek, ...).
Digits, punctuation, emoji and Latin letters with accents stay with CLIP.
"""

from __future__ import annotations

import unicodedata

CLIP = "clip"
MULTILINGUAL = "multilingual"
AUTO = "auto"
ENCODERS = (CLIP, MULTILINGUAL)  # what a request may name
ROUTINGS = (AUTO, *ENCODERS)  # what CLIP_TEXT_ROUTING may say (config.py repeats it: it imports nothing)


def is_han(char: str) -> bool:
    return unicodedata.name(char, "").startswith(("CJK UNIFIED IDEOGRAPH", "CJK COMPATIBILITY IDEOGRAPH"))


def is_non_latin_letter(char: str) -> bool:
    return unicodedata.category(char).startswith("L") and not unicodedata.name(char, "").startswith("LATIN")


def route(text: str, routing: str, chinese_only: bool) -> str:
    """The encoder for `text` under `routing` (auto, clip or multilingual), given a loaded multilingual tower."""
    if routing != AUTO:
        return routing
    wants_multilingual = is_han if chinese_only else is_non_latin_letter
    # NFKC first: fullwidth ＢＭＷ and other compatibility forms are Latin letters in disguise
    return MULTILINGUAL if any(wants_multilingual(char) for char in unicodedata.normalize("NFKC", text)) else CLIP
