"""What the clients send: the scenarios, a large pool of distinct car-search queries, and pre-built request bodies.

Stdlib only, so the load-generator process stays small and starts fast.
"""

from __future__ import annotations

import json
import random
import unicodedata
import uuid
from dataclasses import dataclass
from itertools import product
from pathlib import Path


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str  # endpoint
    clients: int  # concurrent closed-loop clients, one keep-alive connection each
    kind: str  # "text" (one text), "texts" (a batch of texts) or "image" (one multipart JPEG)
    unit: str  # what items/s counts
    texts_per_request: int = 1
    query_slice: int = 0  # which disjoint slice of the query pool (so no scenario re-sends another's texts)
    language: str | None = None  # None: the whole pool; "en": queries without Han characters; "zh": with them
    photo: str = ""  # image scenarios: which photo they upload, a key of bench.photo.PHOTOS

    @property
    def items_per_request(self) -> int:
        return self.texts_per_request if self.kind == "texts" else 1


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("text-1", "/encode-text", 1, "text", "texts", query_slice=0),
        Scenario("text-16", "/encode-text", 16, "text", "texts", query_slice=1),
        Scenario("texts-batch", "/encode-texts", 2, "texts", "texts", texts_per_request=32, query_slice=2),
        Scenario("jpeg-12mp-4", "/encode-image", 4, "image", "images", photo="12mp"),
        Scenario("jpeg-2mp-4", "/encode-image", 4, "image", "images", photo="2mp"),
        # Our service with a multilingual tower: English (routed to CLIP) beside Chinese (routed to the tower).
        Scenario("en-1", "/encode-text", 1, "text", "texts", query_slice=0, language="en"),
        Scenario("en-16", "/encode-text", 16, "text", "texts", query_slice=1, language="en"),
        Scenario("zh-1", "/encode-text", 1, "text", "texts", query_slice=0, language="zh"),
        Scenario("zh-16", "/encode-text", 16, "text", "texts", query_slice=1, language="zh"),
    )
}
MAIN_SCENARIOS = [name for name, s in SCENARIOS.items() if s.language is None]  # naive vs ours
LANGUAGE_SCENARIOS = [name for name, s in SCENARIOS.items() if s.language is not None]

# Colours x brands x body types x settings, in English, Chinese, and the mixed form users really type.
_EN = (
    ["red", "white", "black", "silver", "blue", "grey", "green", "yellow", "orange", "matte black"],
    ["BMW", "Tesla Model 3", "Mercedes-Benz", "Audi", "BYD", "Toyota", "Honda", "Porsche", "Volkswagen",
     "NIO", "Li Auto", "XPeng", "Geely", "Hongqi"],
    ["SUV", "sedan", "sports car", "pickup truck", "MPV", "station wagon", "convertible", "hatchback"],
    ["", "at night", "in the rain", "side view", "front view", "rear view", "interior", "on a mountain road",
     "in a showroom", "parked in the city"],
)
_ZH = (
    ["红色的", "白色的", "黑色", "银色", "蓝色的", "灰色", "绿色", "黄色的", "橙色", "哑光黑"],
    ["宝马", "特斯拉", "奔驰", "奥迪", "比亚迪", "丰田", "本田", "保时捷", "大众",
     "蔚来", "理想", "小鹏", "吉利", "红旗"],
    ["SUV", "轿车", "跑车", "皮卡", "MPV", "旅行车", "敞篷车", "两厢车"],
    ["", " 夜景", " 雨中", " 侧面", " 正面", " 尾部", " 内饰", " 山路上", " 展厅", " 停在街边"],
)


def query_pool(seed: int = 0) -> list[str]:
    """~32k distinct queries in a fixed shuffled order: enough that no scenario of a normal run repeats a text,
    so a text cache in the service cannot make its figures look better than real traffic would."""
    english = [" ".join(filter(None, combo)) for combo in product(*_EN)]
    chinese = ["".join(combo) for combo in product(*_ZH)]
    mixed = [" ".join(filter(None, ("".join(zh), setting))) for *zh, setting in product(*_ZH[:3], _EN[3])]
    pool = sorted(set(english + chinese + mixed))
    random.Random(seed).shuffle(pool)
    return pool


def has_han(text: str) -> bool:
    """Whether `text` holds a Han character: what the service's `auto` routing sends to the multilingual tower."""
    return any(unicodedata.name(char, "").startswith(("CJK UNIFIED IDEOGRAPH", "CJK COMPATIBILITY IDEOGRAPH"))
               for char in text)


def scenario_queries(scenario: Scenario) -> list[str]:
    """This scenario's own slice of its language's part of the pool (the same for every server)."""
    pool = [text for text in query_pool() if scenario.language is None or has_han(text) == (scenario.language == "zh")]
    slices = 1 + max(s.query_slice for s in SCENARIOS.values() if s.language == scenario.language)
    size = len(pool) // slices
    return pool[scenario.query_slice * size : (scenario.query_slice + 1) * size]


def text_bodies(scenario: Scenario) -> list[bytes]:
    """JSON bodies for the text scenarios, from this scenario's own slice of the pool (same for both servers)."""
    texts = scenario_queries(scenario)
    if scenario.kind == "text":
        return [_json({"text": text}) for text in texts]
    step = scenario.texts_per_request
    return [_json({"texts": texts[i : i + step]}) for i in range(0, len(texts) - step + 1, step)]


def image_body(jpeg: Path, field: str = "image") -> tuple[bytes, str]:
    """One multipart/form-data body carrying the JPEG, and its Content-Type (with the boundary)."""
    boundary = f"bench-{uuid.uuid4().hex}"
    head = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{jpeg.name}\"\r\n"
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return head + jpeg.read_bytes() + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def read_response(scenario: Scenario, payload: bytes, dimension: int) -> tuple[bool, tuple[str, ...]]:
    """Whether the body is JSON with one vector (or one per text) of the model's dimension, and the text encoders
    it names (its "encoder" field; none for images or the naive service)."""
    try:
        body = json.loads(payload)
        vectors = body["vectors"] if scenario.kind == "texts" else [body["vector"]]
    except (ValueError, KeyError, TypeError):
        return False, ()
    encoder = body.get("encoder")
    encoders = tuple(encoder) if isinstance(encoder, list) else (encoder,) if isinstance(encoder, str) else ()
    expected = scenario.texts_per_request if scenario.kind == "texts" else 1
    return len(vectors) == expected and all(isinstance(v, list) and len(v) == dimension for v in vectors), encoders


def _json(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()
