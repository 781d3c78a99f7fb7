"""Which text encoder reads a text under CLIP_TEXT_ROUTING=auto, character class by character class."""

from dataclasses import fields

import pytest

from clip_vectorize.inference.routing import ROUTINGS, route
from config import Settings


@pytest.mark.parametrize(
    "text, multilingual_model, chinese_only_model",
    [
        ("红色的宝马SUV", "multilingual", "multilingual"),
        ("a BMW 𠀀 (CJK extension B)", "multilingual", "multilingual"),
        ("赤いスポーツカー", "multilingual", "multilingual"),  # Japanese with kanji
        ("スポーツカー", "multilingual", "clip"),  # kana only: not Chinese
        ("빨간 자동차", "multilingual", "clip"),
        ("красный автомобиль", "multilingual", "clip"),
        ("red BMW SUV", "clip", "clip"),
        ("Citroën DS à Paris", "clip", "clip"),
        ("ＢＭＷ Ｘ５", "clip", "clip"),  # fullwidth Latin is still Latin
        ("🚗🔥 2024!", "clip", "clip"),
    ],
)
def test_auto_routes_by_script(text, multilingual_model, chinese_only_model):
    assert route(text, "auto", chinese_only=False) == multilingual_model
    assert route(text, "auto", chinese_only=True) == chinese_only_model


@pytest.mark.parametrize("routing", ["clip", "multilingual"])
def test_a_fixed_routing_sends_every_text_to_one_encoder(routing):
    assert {route(text, routing, chinese_only=False) for text in ("红色", "red")} == {routing}


def test_the_settings_offer_exactly_the_routings_there_are():
    declared = next(field for field in fields(Settings) if field.name == "text_routing")
    assert declared.metadata["choices"] == ROUTINGS
