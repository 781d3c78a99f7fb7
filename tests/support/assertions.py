"""The assertions tests share: the one error shape every failure has, cosine similarity, and polling for a state."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def assert_error(response, status: int, fragment: str) -> dict:
    """A JSON error with `status`, the service's error shape, a message containing `fragment`, no traceback."""
    text = response.get_data(as_text=True)
    assert response.status_code == status, text
    assert response.is_json, text
    body = response.get_json()
    assert body["status"] == "error" and isinstance(body["code"], str) and fragment in body["error"], body
    assert "Traceback" not in text
    return body


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def rowwise_cosine(a, b) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def eventually(condition: Callable[[], bool], seconds: float = 5) -> bool:
    """Whether `condition` holds within `seconds`: for state a server updates just after it has answered."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
