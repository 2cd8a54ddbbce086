"""A deterministic numpy Adapter for fast tests of everything above the model.

Text becomes tokens by whitespace split; token-id inputs are used as given (ids must be below
``vocab_size``); an image is ``image_tokens`` tokens. Each token's vector is a hash of the token
(and for images of the pixel data), so equal inputs give equal vectors whatever the batch.
A text containing ``FAIL_MARKER`` makes ``forward`` raise (the batch the item is in fails).
Wrap it in the real runner with ``fake_engine``.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Literal

import numpy as np

from app.engine.base import (
    Embedding,
    EngineInput,
    ImageInput,
    ModelInfo,
    Prepared,
    TextInput,
    TokenInput,
)
from app.engine.runner import Engine
from app.errors import InputTooLong, InvalidTokenIds, UnsupportedInput

FAIL_MARKER = "__fail_forward__"


def _token_vector(key: bytes, dim: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
    vec = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return vec / np.linalg.norm(vec)


class FakeAdapter:
    def __init__(
        self,
        *,
        kind: Literal["multi_vector", "pooled"] = "multi_vector",
        name: str = "fake/colqwen",
        dim: int = 8,
        max_tokens: int = 16,
        vocab_size: int = 1000,
        image_tokens: int = 6,
        matryoshka: bool = False,
        forward_delay: float = 0.0,
    ) -> None:
        modalities = ("text", "image") if kind == "multi_vector" else ("text",)
        self.info = ModelInfo(
            name=name,
            kind=kind,
            dim=dim,
            modalities=modalities,
            max_tokens=max_tokens,
            fingerprint=f"fake|{kind}|{dim}",
            dtype="float32",
            extra={"matryoshka": matryoshka, "max_pixels": 1024 * 1024},
        )
        self.vocab_size = vocab_size
        self.image_tokens = image_tokens
        self.forward_delay = forward_delay
        self.batches: list[int] = []  # size of every forward batch, in order
        self.seen: list[str] = []  # every token key computed, in order
        self.threads: set[str] = set()  # names of the threads forward ran on
        self._lock = threading.Lock()

    # ---- any thread ----------------------------------------------------------------------------
    def prepare(self, item: EngineInput, *, truncate: bool = False) -> Prepared:
        if isinstance(item, ImageInput):
            if "image" not in self.info.modalities:
                raise UnsupportedInput(
                    f"{self.info.name} is a text model: images are not supported"
                )
            digest = hashlib.blake2b(item.image.tobytes(), digest_size=8).hexdigest()
            keys = [f"img:{digest}:{k}" for k in range(self.image_tokens)]
            pixels = item.image.width * item.image.height
            return Prepared(n_tokens=len(keys), payload=keys, kind="image", pixels=pixels)
        if isinstance(item, TextInput):
            keys = [f"tok:{w}" for w in item.text.split()] or ["tok:"]
        elif isinstance(item, TokenInput):
            bad = [i for i in item.ids if not 0 <= i < self.vocab_size]
            if bad:
                raise InvalidTokenIds(f"token ids must be in [0, {self.vocab_size}); got {bad[:5]}")
            keys = [f"id:{i}" for i in item.ids]
        else:
            raise UnsupportedInput(f"unsupported input type {type(item).__name__}")
        if len(keys) > self.info.max_tokens:
            if not truncate:
                raise InputTooLong(
                    f"this input is {len(keys)} tokens long; the limit for this model is "
                    f'{self.info.max_tokens} tokens. Shorten it or send "truncate": true.'
                )
            keys = keys[: self.info.max_tokens]
        return Prepared(n_tokens=len(keys), payload=keys, kind="text")

    # ---- the engine thread ---------------------------------------------------------------------
    def forward(self, batch: list[Prepared]) -> list[Embedding]:
        with self._lock:
            self.batches.append(len(batch))
            self.seen.extend(key for p in batch for key in p.payload)
            self.threads.add(threading.current_thread().name)
        if self.forward_delay:
            time.sleep(self.forward_delay)
        if any(FAIL_MARKER in key for p in batch for key in p.payload):
            raise RuntimeError("fake forward failure")
        out = []
        for p in batch:
            rows = np.stack([_token_vector(k.encode(), self.info.dim) for k in p.payload])
            if self.info.kind == "pooled":
                vec = rows.mean(axis=0)
                vec = (vec / np.linalg.norm(vec)).astype(np.float32)
                out.append(Embedding(vectors=vec, n_tokens=p.n_tokens))
            else:
                extras = {}
                if p.kind == "image":
                    extras = {"image_grid": [2, 3], "image_token_span": [0, p.n_tokens]}
                out.append(Embedding(vectors=rows, n_tokens=p.n_tokens, extras=extras))
        return out


def fake_engine(
    adapter: FakeAdapter | None = None,
    *,
    load_delay: float = 0.0,
    load_error: BaseException | None = None,
    load_gate: threading.Event | None = None,
    start: bool = True,
    **engine_kw,
) -> Engine:
    """The real runner around a FakeAdapter. ``load_gate``: loading waits until it is set."""
    adapter = adapter or FakeAdapter()

    def load() -> FakeAdapter:
        if load_gate is not None:
            load_gate.wait()
        if load_delay:
            time.sleep(load_delay)
        if load_error is not None:
            raise load_error
        return adapter

    engine = Engine(load, **engine_kw)
    return engine.start() if start else engine
