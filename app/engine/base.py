"""What every model adapter offers, in types that do not import mlx.

The HTTP layer and the workers speak only these types. An adapter has two halves:
``prepare`` (tokenise / preprocess one item on any thread, validating it, so a bad item fails
alone before it joins a batch) and ``forward`` (a batch of prepared items, called only on the
single MLX thread).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class TextInput:
    text: str
    # The model prompt to apply (app.engine.prompts); None: none.
    prompt_name: str | None = None


@dataclass(frozen=True)
class TokenInput:
    ids: tuple[int, ...]
    prompt_name: str | None = None


@dataclass(frozen=True)
class ImageInput:
    """A decoded RGB page or picture. ``content_hash`` identifies the decoded pixels;
    ``source`` holds the image file it was decoded from (None for rendered PDF pages), so a job
    ships the original bytes and a worker decodes exactly the same pixels."""

    image: Image.Image
    content_hash: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    source: bytes | None = field(default=None, compare=False, repr=False)


EngineInput = TextInput | TokenInput | ImageInput


@dataclass
class Prepared:
    """One validated, preprocessed item, ready to join a batch."""

    n_tokens: int
    payload: Any
    kind: Literal["text", "image"] = "text"
    pixels: int = 0


@dataclass
class Embedding:
    """One item's result: float32 vectors (2-D multi-vector or 1-D pooled) and real token count."""

    vectors: np.ndarray
    n_tokens: int
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    kind: Literal["multi_vector", "pooled"]
    dim: int
    modalities: tuple[str, ...]
    max_tokens: int
    fingerprint: str
    dtype: str = "float32"
    extra: dict[str, Any] = field(default_factory=dict)


class Adapter(Protocol):
    info: ModelInfo

    def prepare(self, item: EngineInput, *, truncate: bool = False) -> Prepared:
        """Validate and preprocess one item. Raises app.errors.ApiError subclasses."""
        ...

    def forward(self, batch: list[Prepared]) -> list[Embedding]:
        """Run one batch. Only ever called on the MLX thread."""
        ...
