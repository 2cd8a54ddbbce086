"""--token-ids (reject / tiktoken / model) and text-only parsing in the InputResolver."""

from __future__ import annotations

import asyncio

import pytest
import tiktoken

from app.engine.base import TextInput, TokenInput
from app.errors import ApiError, InvalidRequest, InvalidTokenIds, UnsupportedInput
from app.inputs import InputResolver, ResolvedItem
from app.settings import Settings
from app.settings_cli import load_settings
from app.token_ids import LANGCHAIN_HINT, TiktokenDecoder, out_of_vocab_message


def tiny_encoding() -> tiktoken.Encoding:
    ranks = {bytes([b]): b for b in range(256)}
    ranks[b"ab"] = 256
    ranks[b"abc"] = 258  # 257 is left unassigned: a gap inside the range
    return tiktoken.Encoding(
        "tiny", pat_str=r"\S+|\s+", mergeable_ranks=ranks, special_tokens={"<|eot|>": 300}
    )


def resolve(raw: object, *, modalities=None, decoder=None, **settings) -> list[ResolvedItem]:
    async def go() -> list[ResolvedItem]:
        r = InputResolver(
            Settings(model="t", **settings),
            modalities=(lambda: modalities) if modalities is not None else None,
            token_decoder=decoder,
        )
        try:
            return await r.resolve(raw)
        finally:
            await r.aclose()

    return asyncio.run(go())


def fails(raw: object, cls: type[ApiError], param: str, **kw) -> str:
    with pytest.raises(ApiError) as err:
        resolve(raw, **kw)
    assert type(err.value) is cls, err.value.message
    assert err.value.param == param and err.value.status == 400
    assert err.value.message.startswith(param + ": ")
    return err.value.message


# ---- reject (the default) ------------------------------------------------------------------------
def test_reject_names_the_param_the_cause_and_the_fixes():
    msg = fails([1, 2, 3], InvalidTokenIds, "input")
    assert LANGCHAIN_HINT in msg and "--token-ids tiktoken" in msg and "--token-ids model" in msg
    fails([[1, 2], [3]], InvalidTokenIds, "input[0]")


def test_reject_comes_after_shape_errors():
    fails([[1], [2, "x"]], InvalidRequest, "input[1]")
    fails([[1], "text"], InvalidRequest, "input[0]")


def test_text_is_untouched_by_the_token_policy():
    (item,) = resolve("plain text")
    assert item.item == TextInput("plain text")


# ---- tiktoken ------------------------------------------------------------------------------
def test_tiktoken_decodes_to_text():
    enc = tiny_encoding()
    decoder = TiktokenDecoder(load=lambda: enc)
    ids = enc.encode("abc xyz ab")
    items = resolve([ids, enc.encode("hi")], decoder=decoder, token_ids="tiktoken")
    assert [i.item for i in items] == [TextInput("abc xyz ab"), TextInput("hi")]
    assert [i.param for i in items] == ["input[0]", "input[1]"]
    (eot,) = resolve([300], decoder=decoder, token_ids="tiktoken")
    assert eot.item == TextInput("<|eot|>")


@pytest.mark.parametrize("bad", [301, 10**9, -1, 257])
def test_tiktoken_bad_ids(bad):
    decoder = TiktokenDecoder(load=tiny_encoding)
    msg = fails(
        [[97], [97, bad]], InvalidTokenIds, "input[1]", decoder=decoder, token_ids="tiktoken"
    )
    assert str(bad) in msg


def test_tiktoken_load_failure_is_a_400_and_is_retried_later():
    calls = []

    def load():
        calls.append(1)
        if len(calls) == 1:
            raise OSError("offline")
        return tiny_encoding()

    decoder = TiktokenDecoder(load=load, retry_after=0.0)
    msg = fails([97], InvalidTokenIds, "input", decoder=decoder, token_ids="tiktoken")
    assert "cannot load" in msg and "offline" in msg
    (item,) = resolve([97], decoder=decoder, token_ids="tiktoken")
    assert item.item == TextInput("a") and len(calls) == 2
    resolve([98], decoder=decoder, token_ids="tiktoken")
    assert len(calls) == 2  # loaded once


def test_tiktoken_failure_is_not_retried_at_once():
    calls = []

    def load():
        calls.append(1)
        raise OSError("offline")

    decoder = TiktokenDecoder(load=load, retry_after=3600)
    for _ in range(3):
        fails([97], InvalidTokenIds, "input", decoder=decoder, token_ids="tiktoken")
    assert len(calls) == 1


# ---- model ---------------------------------------------------------------------------------
def test_model_passes_ids_through_and_the_engine_message_names_tiktoken():
    (item,) = resolve([5, 6], token_ids="model")
    assert item.item == TokenInput((5, 6))
    msg = out_of_vocab_message(30522, [40001, 99999])
    assert "[0, 30522)" in msg and LANGCHAIN_HINT in msg and "40001" in msg


def test_settings_flag_and_env():
    assert load_settings(["--model", "m"], env={}).token_ids == "reject"
    assert (
        load_settings(["--model", "m", "--token-ids", "tiktoken"], env={}).token_ids == "tiktoken"
    )
    assert load_settings(["--model", "m"], env={"MLX_EMB_TOKEN_IDS": "model"}).token_ids == "model"
    with pytest.raises(SystemExit):
        load_settings(["--model", "m", "--token-ids", "cl100k"], env={})


# ---- text-only models ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    ["https://example.com/a.png", "http://x", "data: 5 rows loaded", "data:image/png;base64,"],
)
def test_text_only_model_reads_plain_strings_as_text(text):
    (item,) = resolve(text, modalities=("text",))
    assert item.item == TextInput(text)
    items = resolve(["a", text], modalities=("text",))
    assert items[1].item == TextInput(text) and items[1].param == "input[1]"


def test_text_only_model_refuses_media_parts_before_any_fetch():
    part = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    msg = fails(["a", part], UnsupportedInput, "input[1].image_url", modalities=("text",))
    assert "text only" in msg
    fails(part, UnsupportedInput, "input.image_url", modalities=("text",))
    file_part = {"type": "file", "file": {"url": "https://example.com/a.pdf"}}
    fails([file_part], UnsupportedInput, "input[0].file", modalities=("text",))


def test_image_model_keeps_url_strings_as_media():
    # a data URI that is not an image: reaching the media decoder proves it was read as media
    with pytest.raises(ApiError) as err:
        resolve("data: 5 rows loaded", modalities=("text", "image"))
    assert err.value.param == "input" and "data URI" in err.value.message
