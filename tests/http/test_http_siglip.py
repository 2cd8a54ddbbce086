"""SigLIP over HTTP with the openai client on the real engine (tiny SigLIP): texts and images in
one request equal transformers' SiglipModel; the model card tells the image size."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from http_servers import Served, serve_real_model

GOLDENS = Path(__file__).resolve().parents[1] / "goldens"
INDEX = json.loads((GOLDENS / "siglip_reference.json").read_text())
REF = np.load(GOLDENS / "siglip_reference.npz")
NAME = "tiny/siglip"


@pytest.fixture(scope="module")
def server(tiny_models_dir: Path) -> Iterator[Served]:
    yield from serve_real_model(str(tiny_models_dir / INDEX["model_dir"]), NAME, queue_threshold=64)


def _data_uri(name: str) -> str:
    data = (GOLDENS / "images" / f"{name}.png").read_bytes()
    return "data:image/png;base64," + base64.b64encode(data).decode()


def test_texts_and_images_in_one_request(server: Served) -> None:
    texts = INDEX["texts"]  # the longer ones cut to the 16-token text length, as the reference
    images = [_data_uri(n) for n in INDEX["images"]]
    resp = server.openai().embeddings.create(
        model=NAME, input=[*texts, *images], extra_body={"truncate": True}
    )
    vecs = np.stack([np.asarray(d.embedding, dtype=np.float32) for d in resp.data])
    ref = np.concatenate([REF["text.embeddings"], REF["image.embeddings"]])
    cos = (vecs * ref).sum(1) / (np.linalg.norm(vecs, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() >= 0.9999
    n_text = sum(min(16, sum(1 for i in ids if i != 1) + 1) for ids in INDEX["text_input_ids"])
    assert resp.usage.prompt_tokens == n_text + len(images) * 16  # 16 patches per image


def test_model_card(server: Served) -> None:
    card = httpx.get(server.url + "/v1/models/" + NAME, timeout=30).json()
    assert (card["family"], card["kind"], card["modalities"]) == (
        "siglip",
        "pooled",
        ["text", "image"],
    )
    assert card["dimensions"] == 32 and card["max_tokens"] == 16
    assert card["image"] == {"min_pixels": 1024, "max_pixels": 1024, "max_image_tokens": 16}
