"""Llama-Nemotron-Embed-VL equals NVIDIA's implementation on the tiny model, per the committed
goldens (tests/goldens/nemotron_vl_reference.*, from scripts/make_goldens.py: NeMo Automodel
0.7.0's LlamaNemotronVLModel.encode_queries / encode_documents with its processor, through a
torchvision shim): 6 texts as queries (mean pooling, and last-token pooling) and as text
documents, the 6 committed PNGs as image documents (4 to 7 tiles, bfloat16 pixels), 2
image+text documents; each alone, in one batch per kind, and all mixed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from golden_checks import ABS_MAX, assert_matches
from PIL import Image
from script_modules import load_script

from app.engine import Engine, load_adapter, load_engine, nemotron_vl
from app.engine.base import ImageInput, Prepared, TextInput, TokenInput
from app.engine.multivector import right_padded
from app.engine.nemotron_vl import NemotronVLAdapter, tile_grid, torch_bicubic_aa_uint8
from app.errors import InputTooLong, InvalidRequest, UnsupportedInput
from app.settings import Settings

GOLDENS = Path(__file__).resolve().parents[1] / "goldens"
INDEX = json.loads((GOLDENS / "nemotron_vl_reference.json").read_text())
REF = np.load(GOLDENS / "nemotron_vl_reference.npz")


def images() -> list[Image.Image]:
    out = []
    for name in INDEX["images"]:
        with Image.open(GOLDENS / "images" / f"{name}.png") as f:
            out.append(f.copy())
    return out


def prepared(adapter: NemotronVLAdapter, mode: str) -> list[Prepared]:
    if mode == "image":
        return [adapter.prepare(ImageInput(img)) for img in images()]
    if mode == "image_text":
        imgs = {name: img for name, img in zip(INDEX["images"], images(), strict=True)}
        return [adapter.prepare_image(imgs[name], text) for name, text in INDEX["image_text"]]
    role = "query" if mode.startswith("query") else "document"
    return [adapter.prepare(TextInput(t, prompt_name=role)) for t in INDEX["texts"]]


@pytest.fixture(scope="module")
def path(tiny_models_dir: Path) -> Path:
    return tiny_models_dir / INDEX["model_dir"]


@pytest.fixture(scope="module")
def adapter(path: Path) -> NemotronVLAdapter:
    a = load_adapter(Settings(model=str(path)))
    assert isinstance(a, NemotronVLAdapter)
    return a


def vectors(adapter: NemotronVLAdapter, batch: list[Prepared]) -> np.ndarray:
    return np.stack([e.vectors for e in adapter.forward(batch)])


def test_tiny_model_is_the_one_the_goldens_were_made_from(path: Path) -> None:
    digest = load_script("make_goldens").model_dir_digest(path)
    assert digest == INDEX["model_digest"], "make_tiny_models.py changed: rerun make_goldens.py"


@pytest.mark.parametrize("mode", ["query", "query_last", "document", "image", "image_text"])
def test_matches_nemo_automodel(adapter: NemotronVLAdapter, mode: str) -> None:
    expected = INDEX["modes"][mode]
    batch = prepared(adapter, mode)
    assert [p.payload.input_ids.tolist() for p in batch] == expected["input_ids"]
    if mode == "image":
        assert [len(p.payload.pixel_values) for p in batch] == expected["tiles"]
        for i, p in enumerate(batch):  # NHWC here, NCHW in the reference: identical values
            ref = REF[f"image.{i}.pixel_values"].transpose(0, 2, 3, 1)
            np.testing.assert_array_equal(p.payload.pixel_values, ref)
    ref = REF[f"{mode}.embeddings"]
    pooling = adapter.pooling
    adapter.pooling = "last" if mode == "query_last" else pooling
    try:
        alone = np.concatenate([vectors(adapter, [p]) for p in batch])
        batched = vectors(adapter, batch)
    finally:
        adapter.pooling = pooling
    assert_matches(alone, ref, f"{mode} alone")
    assert_matches(batched, ref, f"{mode} batched")


def test_texts_and_images_in_one_engine_batch(path: Path, adapter: NemotronVLAdapter) -> None:
    """Through the engine (load_engine routes llama_nemotron_vl): queries, documents and images
    interleaved in one padded batch equal each one alone in the reference."""
    engine: Engine = load_engine(Settings(model=str(path)))
    engine.wait_ready(120)
    try:
        items = [
            (m, i, p)
            for m in ("query", "document", "image")
            for i, p in enumerate(prepared(adapter, m))
        ]
        order = items[1::2] + items[::2]
        out = engine.embed_blocking([p for _, _, p in order])
        for (mode, i, _), e in zip(order, out, strict=True):
            assert_matches(e.vectors[None], REF[f"{mode}.embeddings"][i][None], f"{mode} {i}")
    finally:
        engine.close()


def test_padding_does_not_change_a_vector(adapter: NemotronVLAdapter) -> None:
    short = adapter.prepare(TextInput(INDEX["texts"][0], prompt_name="query"))
    long_image = prepared(adapter, "image")[3]
    alone = vectors(adapter, [short])[0]
    padded = vectors(adapter, [long_image, short, long_image])[1]
    assert len(long_image.payload.input_ids) > 4 * len(short.payload.input_ids)
    np.testing.assert_allclose(padded, alone, atol=1e-6)


def test_a_text_spelling_the_image_token_batches_with_images(adapter: NemotronVLAdapter) -> None:
    text = adapter.prepare(TextInput("look <IMG_CONTEXT> here", prompt_name="document"))
    assert adapter.image_token_id in text.payload.input_ids.tolist()
    image = prepared(adapter, "image")[0]
    alone = vectors(adapter, [text])[0]
    together = vectors(adapter, [image, text])
    np.testing.assert_allclose(together[1], alone, atol=1e-6)
    assert_matches(together[:1], REF["image.embeddings"][:1], "image next to the text")


def test_info_prompts_and_refusals(adapter: NemotronVLAdapter) -> None:
    info = adapter.info
    assert info.kind == "pooled" and info.modalities == ("text", "image") and info.dim == 64
    assert info.max_tokens == INDEX["processor"]["p_max_length"]
    assert info.extra["family"] == "llama_nemotron_vl" and info.extra["pooling"] == "mean"
    assert info.extra["prompts"] == {"query": "query: ", "document": "passage: "}
    assert info.extra["default_prompt_name"] == "query"
    assert info.extra["max_image_tokens"] == 4 * 7 and info.extra["max_pixels"] == 6 * 32 * 32
    plain = adapter.prepare(TextInput(INDEX["texts"][2])).payload.input_ids.tolist()
    assert plain == INDEX["modes"]["query"]["input_ids"][2]  # no prompt: a query
    with pytest.raises(InvalidRequest):
        adapter.prepare(TextInput("x", prompt_name="search"))
    with pytest.raises(UnsupportedInput):
        adapter.prepare(TokenInput((1, 2, 3)))


def test_limits(path: Path) -> None:
    a = load_adapter(Settings(model=str(path), max_tokens_per_input=40))
    text = INDEX["texts"][5]
    with pytest.raises(InputTooLong):
        a.prepare(TextInput(text, prompt_name="query"))
    cut = a.prepare(TextInput(text, prompt_name="query"), truncate=True)
    assert cut.payload.input_ids.tolist() == INDEX["modes"]["query"]["input_ids"][5][:40]
    small = load_adapter(Settings(model=str(path), max_tokens_per_input=20))
    with pytest.raises(InputTooLong):  # image tokens are never cut
        small.prepare(ImageInput(images()[0]), truncate=True)


def test_unsupported_pooling_is_refused(path: Path, tmp_path: Path) -> None:
    copy = tmp_path / "m"
    shutil.copytree(path, copy)
    cfg = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**cfg, "pooling": "cls"}))
    with pytest.raises(ValueError, match="pooling"):
        load_adapter(Settings(model=str(copy)))


def test_resize_is_torchs_not_pils() -> None:
    """The reference resizes with torch's uint8 antialiased bicubic; PIL's BICUBIC differs
    (by up to 16 levels on the text image), ours equals the reference's tiles exactly."""
    img = images()[INDEX["images"].index("tall_text")].convert("RGB")
    cols, rows = tile_grid(img.width, img.height, 32, 6)
    ours = torch_bicubic_aa_uint8(np.asarray(img), rows * 32, cols * 32)
    pil = np.asarray(img.resize((cols * 32, rows * 32), Image.BICUBIC))
    assert np.abs(ours.astype(int) - pil.astype(int)).max() >= 8
    first_tile = (ours[:32, :32].astype(np.float32) - 127.5) / 127.5
    ref = REF[f"image.{INDEX['images'].index('tall_text')}.pixel_values"][0].transpose(1, 2, 0)
    np.testing.assert_allclose(first_tile, ref, atol=1 / 128)  # bfloat16 rounding apart


def test_stock_mlx_embeddings_forward_breaks_batches_and_skips_the_bf16_pixels(
    adapter: NemotronVLAdapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why the forward is ours: mlx-embeddings' Model.__call__ writes image features at the
    image tokens' column indices of every row (a batch with an image is wrong), and it does
    not round the pixels to bfloat16 as the reference processor does (max abs diff > 1e-4)."""
    model = adapter.model
    batch = prepared(adapter, "image")
    ref = REF["image.embeddings"]
    one = batch[0].payload
    stock = np.array(
        model(mx.array(one.input_ids[None]), pixel_values=mx.array(one.pixel_values)).text_embeds
    )
    assert_matches(stock, ref[:1], "stock, one image, rounded pixels")
    ids = right_padded([p.payload.input_ids for p in batch], adapter.pad_id)
    lengths = np.array([len(p.payload.input_ids) for p in batch])
    mask = (np.arange(ids.shape[1])[None] < lengths[:, None]).astype(np.float32)
    pixels = np.concatenate([p.payload.pixel_values for p in batch])
    out = model(mx.array(ids), attention_mask=mx.array(mask), pixel_values=mx.array(pixels))
    cos = (np.array(out.text_embeds) * ref).sum(-1)
    assert cos.min() < 0.9
    # the same tiles without the bfloat16 rounding: what mlx-embeddings' own path would feed
    monkeypatch.setattr(nemotron_vl, "bfloat16_rounded", lambda x: x)
    worst = 0.0
    for i, img in enumerate(images()):
        p = adapter.prepare(ImageInput(img)).payload
        assert not np.array_equal(p.pixel_values, batch[i].payload.pixel_values)
        v = np.array(
            model(mx.array(p.input_ids[None]), pixel_values=mx.array(p.pixel_values)).text_embeds
        )
        worst = max(worst, float(np.abs(v[0] - ref[i]).max()))
    assert worst > ABS_MAX
