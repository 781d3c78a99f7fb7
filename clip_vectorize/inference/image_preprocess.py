"""CLIP's image preprocessing in PIL + numpy: resize the shortest side (bicubic), center crop, normalize.

The same steps and numbers as transformers' CLIPImageProcessor, read from the model's
preprocessor_config.json, without its per-call overhead. Combined with JPEG draft decoding (inference.image_io)
it is the `fast` path; `exact` runs transformers' own processor on the fully decoded image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class ClipImageTransform:
    shortest_edge: int
    crop_height: int
    crop_width: int
    scale: np.ndarray  # per channel: 1 / (255 * std)
    offset: np.ndarray  # per channel: -mean / std
    resample: int

    @classmethod
    def from_processor(cls, processor) -> ClipImageTransform:
        mean = np.asarray(processor.image_mean, dtype=np.float32)
        std = np.asarray(processor.image_std, dtype=np.float32)
        return cls(
            shortest_edge=processor.size["shortest_edge"],
            crop_height=processor.crop_size["height"],
            crop_width=processor.crop_size["width"],
            scale=1.0 / (255.0 * std),
            offset=-mean / std,
            resample=int(processor.resample),
        )

    @property
    def draft_size(self) -> int:
        """JPEGs decode at no less than twice the input size: cheap, and the bicubic resize still has detail to use."""
        return 2 * self.shortest_edge

    def __call__(self, image: Image.Image) -> np.ndarray:
        """An RGB image in, a (3, crop_height, crop_width) float32 array out."""
        width, height = image.size
        short, long = min(width, height), max(width, height)
        new_short, new_long = self.shortest_edge, int(self.shortest_edge * long / short)  # as transformers rounds
        new_size = (new_short, new_long) if width <= height else (new_long, new_short)
        resized = image.resize(new_size, resample=self.resample)
        left = (new_size[0] - self.crop_width) // 2
        top = (new_size[1] - self.crop_height) // 2
        cropped = resized.crop((left, top, left + self.crop_width, top + self.crop_height))
        pixels = np.asarray(cropped, dtype=np.float32) * self.scale + self.offset
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))
