"""Clients that just work, on the real all-MiniLM-L6-v2 (and the tiny ColQwen2.5) served in
process over real sockets: LangChain's default token-id path under each ``--token-ids`` mode,
and URL-looking text on a text-only model (a local media server must see no request).

No network: tiktoken's cl100k_base cannot be downloaded here, so the tests build a tiktoken
``Encoding`` in-process from a tiny rank table and put it where tiktoken would return
cl100k_base, for LangChain (the client) and the server alike.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tiktoken
from http_servers import ServerThread

from app.engine import load_engine
from app.server import create_app
from app.settings import Settings

TESTS_DIR = Path(__file__).resolve().parents[1]
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))
from media_server import MediaServer  # noqa: E402

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
OFFSET = 40_000  # ids above MiniLM's 30522: like most cl100k ids of real words


def tiny_cl100k() -> tiktoken.Encoding:
    """A byte-level BPE with cl100k's split pattern; every id is >= OFFSET."""
    ranks = {bytes([b]): OFFSET + b for b in range(256)}
    for word in (b"he", b"hel", b"hell", b"hello", b" w", b" wo", b" wor", b" worl", b" world"):
        ranks[word] = OFFSET + len(ranks)
    cl100k_pat = (
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
        r"""|\s*[\r\n]|\s+(?!\S)|\s+"""
    )
    return tiktoken.Encoding(
        "cl100k_base", pat_str=cl100k_pat, mergeable_ranks=ranks, special_tokens={}
    )


@pytest.fixture
def offline_cl100k(monkeypatch) -> tiktoken.Encoding:
    enc = tiny_cl100k()

    def get_encoding(name: str) -> tiktoken.Encoding:
        assert name == "cl100k_base", name
        return enc

    monkeypatch.setattr(tiktoken, "get_encoding", get_encoding)
    return enc


@pytest.fixture(scope="module")
def media() -> Iterator[MediaServer]:
    with MediaServer() as srv:
        yield srv


def _serve(path: Path, **kw) -> tuple[ServerThread, object]:
    settings = Settings(
        model=str(path),
        served_model_name=MINILM,
        blas="off",
        allow_private_media=True,  # if it fetched, it would reach the media server
        **kw,
    )
    engine = load_engine(settings)
    engine.wait_ready(120)
    thread = ServerThread(create_app(settings, engine)).start()
    return thread, engine


@pytest.fixture(scope="module")
def servers(minilm_path: Path) -> Iterator[dict[str, ServerThread]]:
    started = {mode: _serve(minilm_path, token_ids=mode)[0] for mode in ("reject", "tiktoken")}
    try:
        yield started
    finally:
        for thread in started.values():
            thread.stop()


def post(thread: ServerThread, body: dict) -> httpx.Response:
    return httpx.post(thread.url + "/v1/embeddings", json={"model": MINILM, **body}, timeout=60)


def vectors(r: httpx.Response) -> np.ndarray:
    assert r.status_code == 200, r.text
    return np.asarray([d["embedding"] for d in r.json()["data"]], dtype=np.float32)


def error(r: httpx.Response, status: int, code: str | None, param: str | None) -> str:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error"
    assert (err["code"], err["param"]) == (code, param), err
    return err["message"]


def langchain(thread: ServerThread, **kw):
    from langchain_openai import OpenAIEmbeddings

    return OpenAIEmbeddings(
        model=MINILM, base_url=thread.url + "/v1", api_key="unused", max_retries=0, **kw
    )


TEXTS = ["hello world", "the quick brown fox jumps over the lazy dog", "x"]


# ---- token ids ------------------------------------------------------------------------------
def test_settings_default_is_reject():
    assert Settings(model="x").token_ids == "reject"


def test_langchain_default_is_loud_under_reject(servers, offline_cl100k):
    import openai

    with pytest.raises(openai.BadRequestError) as exc:
        langchain(servers["reject"]).embed_documents(TEXTS)
    err = exc.value.body
    assert err["code"] == "invalid_token_ids" and err["param"] == "input[0]"
    assert "these look like tiktoken ids" in err["message"]
    assert "check_embedding_ctx_length=False" in err["message"]
    assert "--token-ids tiktoken" in err["message"]


def test_raw_token_ids_under_reject_name_the_param(servers):
    msg = error(
        post(servers["reject"], {"input": [101, 7592, 102]}), 400, "invalid_token_ids", "input"
    )
    assert msg.startswith("input: ")
    error(post(servers["reject"], {"input": [[1, 2], [3]]}), 400, "invalid_token_ids", "input[0]")


def test_langchain_without_token_ids_works_under_reject(servers):
    lc = langchain(servers["reject"], check_embedding_ctx_length=False)
    got = np.asarray(lc.embed_documents(TEXTS), dtype=np.float32)
    want = vectors(post(servers["reject"], {"input": TEXTS}))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_langchain_default_is_correct_under_tiktoken(servers, offline_cl100k):
    """LangChain tokenises with 'cl100k_base' and sends ids; the server decodes them with the
    same encoding and embeds the text: the text's own vectors."""
    got = np.asarray(langchain(servers["tiktoken"]).embed_documents(TEXTS), dtype=np.float32)
    want = vectors(post(servers["tiktoken"], {"input": TEXTS}))
    cos = np.sum(got * want, axis=1)
    assert np.all(cos > 0.99999), cos
    query = np.asarray(langchain(servers["tiktoken"]).embed_query("hello world"))
    np.testing.assert_allclose(query, want[0], rtol=1e-5, atol=1e-6)


def test_tiktoken_mode_bad_ids_are_400_with_the_param(servers, offline_cl100k):
    n_vocab = offline_cl100k.n_vocab
    good = offline_cl100k.encode_ordinary("hello")
    msg = error(
        post(servers["tiktoken"], {"input": [good, [OFFSET + 1, n_vocab + 5]]}),
        400,
        "invalid_token_ids",
        "input[1]",
    )
    assert str(n_vocab + 5) in msg and "cl100k_base" in msg
    error(post(servers["tiktoken"], {"input": [-3]}), 400, "invalid_token_ids", "input")


def test_tiktoken_mode_without_the_encoding_is_a_clear_400(minilm_path, monkeypatch):
    def offline(name: str):
        raise ConnectionError("no route to openaipublic.blob.core.windows.net")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    thread, _ = _serve(minilm_path, token_ids="tiktoken")
    try:
        msg = error(post(thread, {"input": [[40001, 40002]]}), 400, "invalid_token_ids", "input[0]")
        assert "cannot load" in msg and "no route" in msg
        assert "check_embedding_ctx_length=False" in msg
        assert post(thread, {"input": "text still works"}).status_code == 200
    finally:
        thread.stop()


def test_model_mode_out_of_vocab_names_tiktoken(minilm_path):
    thread, _ = _serve(minilm_path, token_ids="model")
    try:
        ok = vectors(post(thread, {"input": [[7592, 2088]]}))  # MiniLM ids of "hello world"
        text = vectors(post(thread, {"input": "hello world"}))
        np.testing.assert_allclose(ok, text, rtol=1e-5, atol=1e-6)
        msg = error(
            post(thread, {"input": [[7592], [40001, 40002]]}), 400, "invalid_token_ids", "input[1]"
        )
        assert "[0, 30522)" in msg and "these look like tiktoken ids" in msg
    finally:
        thread.stop()


# ---- text-only models never fetch ------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "{url}",
        "https://example.com/path",
        "data: 5 rows loaded",
        "data:image/png;base64,iVBORw0KGgo=",
        "HTTP://EXAMPLE.COM",
    ],
)
def test_url_looking_text_on_a_text_model_is_text(servers, media, text):
    text = text.format(url=media.url("/img/png.png"))
    before = len(media.requests)
    r = post(servers["reject"], {"input": [text]})
    as_part = post(servers["reject"], {"input": [{"type": "text", "text": text}]})
    np.testing.assert_allclose(vectors(r), vectors(as_part), rtol=1e-6, atol=1e-7)
    assert "image_size" not in r.json()["data"][0]
    lone = post(servers["reject"], {"input": text})
    np.testing.assert_allclose(vectors(lone), vectors(r), rtol=1e-6, atol=1e-7)
    assert len(media.requests) == before  # nothing was fetched


def test_langchain_url_documents_on_a_text_model(servers, media):
    docs = ["https://example.com/path", media.url("/img/png.png")]
    got = langchain(servers["reject"], check_embedding_ctx_length=False).embed_documents(docs)
    assert len(got) == 2 and len(got[0]) == 384
    assert media.requests == []


PDF_URI = "data:application/pdf;base64,JVBERi0xLjQK"
MEDIA_PARTS = {
    "image_url object": (lambda u: {"type": "image_url", "image_url": {"url": u}}, "image_url"),
    "image_url string": (lambda u: {"type": "image_url", "image_url": u}, "image_url"),
    "file url": (lambda u: {"type": "file", "file": {"url": u}}, "file"),
    "file data": (lambda u: {"type": "file", "file": {"file_data": PDF_URI}}, "file"),
}


@pytest.mark.parametrize("name", sorted(MEDIA_PARTS))
def test_typed_media_part_on_a_text_model_is_unsupported_without_fetch(servers, media, name):
    make, kind = MEDIA_PARTS[name]
    before = len(media.requests)
    r = post(servers["reject"], {"input": ["fine", make(media.url("/img/png.png"))]})
    msg = error(r, 400, "unsupported_input", f"input[1].{kind}")
    assert msg.startswith(f"input[1].{kind}: ") and "text only" in msg
    assert len(media.requests) == before


@pytest.fixture(scope="module")
def colqwen(tiny_colqwen_path: Path) -> Iterator[ServerThread]:
    settings = Settings(
        model=str(tiny_colqwen_path), served_model_name="tiny", blas="off", allow_private_media=True
    )
    engine = load_engine(settings)
    engine.wait_ready(120)
    thread = ServerThread(create_app(settings, engine)).start()
    yield thread
    thread.stop()


def test_image_model_still_reads_url_strings_as_media(colqwen, media):
    """Multi-vector models keep the earlier server's behaviour: a plain URL string is an image."""
    before = len(media.requests)
    r = httpx.post(
        colqwen.url + "/v1/embeddings",
        json={"model": "tiny", "input": [media.url("/img/png.png")]},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert "image_grid" in r.json()["data"][0]
    assert len(media.requests) == before + 1


def _png_uri(size: tuple[int, int]) -> str:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 90)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.mark.parametrize("size", [(850, 1100), (64, 48), (3000, 400)])
def test_image_size_is_the_size_embedded_and_source_size_the_decoded_one(colqwen, size):
    part = {"type": "image_url", "image_url": {"url": _png_uri(size)}}
    r = httpx.post(
        colqwen.url + "/v1/embeddings", json={"model": "tiny", "input": [part]}, timeout=60
    )
    assert r.status_code == 200, r.text
    item = r.json()["data"][0]
    rows, cols = item["image_grid"]
    assert item["source_size"] == list(size)
    assert item["image_size"] == [cols * 28, rows * 28]  # 14 px patches, 2 x 2 merged per token
    # what the model's image processor really resizes to (smart_resize, the model's pixel range)
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    card = httpx.get(colqwen.url + "/v1/models/tiny", timeout=30).json()
    lo, hi = card["image"]["min_pixels"], card["image"]["max_pixels"]
    h, w = smart_resize(size[1], size[0], factor=28, min_pixels=lo, max_pixels=hi)
    assert item["image_size"] == [w, h]
    assert item["image_size"] != list(size)
