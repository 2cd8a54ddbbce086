"""What a token-id ``input`` (``[1, 2, 3]`` or ``[[1, 2], [3]]``) means: ``--token-ids``.

OpenAI's API reads token ids as ids of its own ``cl100k_base`` encoding, and clients rely on it:
LangChain's ``OpenAIEmbeddings`` with default settings tokenizes every text with tiktoken and
sends the ids (unless ``check_embedding_ctx_length=False``). Read as this model's tokenizer ids
they give vectors of unrelated text: wrong without any error. So:

* ``reject`` (default): a token-id input is a 400 that says what the ids probably are and the two
  fixes (send text: ``check_embedding_ctx_length=False``; or start with ``--token-ids tiktoken``).
  Never silently wrong, for anyone.
* ``tiktoken``: the ids are decoded with tiktoken's ``cl100k_base`` (what OpenAI does) and the text
  is embedded with the model's own tokenizer. LangChain's default path then gives the text's own
  vector. tiktoken downloads the encoding file once (``TIKTOKEN_CACHE_DIR`` keeps it); a server
  that cannot get it answers token-id requests with a 400 that says so.
* ``model``: the ids are this model's tokenizer ids, passed through (the earlier behaviour; for
  clients that tokenized with the model's tokenizer). Ids out of the vocabulary are a 400 that
  names tiktoken as the likely cause.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

from app.errors import InvalidTokenIds

if TYPE_CHECKING:
    import tiktoken

log = logging.getLogger(__name__)

TokenIdMode = Literal["model", "tiktoken", "reject"]
TOKEN_ID_MODES: tuple[str, ...] = ("model", "tiktoken", "reject")
TIKTOKEN_ENCODING = "cl100k_base"

LANGCHAIN_HINT = (
    "these look like tiktoken ids: LangChain sends them unless check_embedding_ctx_length=False"
)


def out_of_vocab_message(vocab_size: int, bad: Sequence[int]) -> str:
    """The engines' message for ids outside the model's vocabulary (``--token-ids model``)."""
    return (
        f"token ids must be in [0, {vocab_size}); got {list(bad)[:5]} - {LANGCHAIN_HINT} "
        "(or start the server with --token-ids tiktoken)"
    )


def rejected_message(param: str) -> str:
    return (
        f"{param}: this server does not take token ids (--token-ids reject): {LANGCHAIN_HINT}. "
        "Send the text instead, or start the server with --token-ids tiktoken (cl100k_base ids, "
        "as OpenAI reads them) or --token-ids model (ids of this model's own tokenizer)"
    )


def _load_cl100k() -> tiktoken.Encoding:
    import tiktoken

    return tiktoken.get_encoding(TIKTOKEN_ENCODING)


class TiktokenDecoder:
    """Decodes cl100k_base ids to text. The encoding is loaded on first use (tiktoken may
    download it), once; a failed load is retried at most every ``retry_after`` seconds.

    ``load``: returns the ``tiktoken.Encoding`` (tests build one from a tiny rank table)."""

    def __init__(
        self, load: Callable[[], tiktoken.Encoding] = _load_cl100k, *, retry_after: float = 30.0
    ) -> None:
        self._load = load
        self._encoding: tiktoken.Encoding | None = None
        self._error: str | None = None
        self._failed_at = 0.0
        self._retry_after = retry_after
        self._lock = threading.Lock()

    def encoding(self, param: str) -> tiktoken.Encoding:
        with self._lock:
            if self._encoding is not None:
                return self._encoding
            now = time.monotonic()
            if self._error is None or now - self._failed_at >= self._retry_after:
                try:
                    self._encoding = self._load()
                    self._error = None
                    return self._encoding
                except Exception as exc:  # offline, blocked, no cache
                    self._error = f"{type(exc).__name__}: {exc}"
                    self._failed_at = now
                    log.warning(
                        "--token-ids tiktoken: the %s encoding could not be loaded (%s); token-id "
                        "requests get 400 until it can (tiktoken downloads it once; "
                        "TIKTOKEN_CACHE_DIR keeps it)",
                        TIKTOKEN_ENCODING,
                        self._error,
                    )
            raise InvalidTokenIds(
                f"{param}: token ids are read as tiktoken {TIKTOKEN_ENCODING} ids here "
                f"(--token-ids tiktoken), but the server cannot load that encoding "
                f"({self._error}); send the text instead (LangChain: "
                "check_embedding_ctx_length=False)",
                param,
            )

    def decode(self, ids: Sequence[int], param: str) -> str:
        enc = self.encoding(param)
        n_vocab = enc.n_vocab
        bad = [i for i in ids if not 0 <= i < n_vocab]
        if not bad:
            try:
                return enc.decode(list(ids))
            except KeyError:  # an unassigned id inside the range
                bad = [i for i in ids if not _decodable(enc, i)]
        raise InvalidTokenIds(
            f"{param}: token ids must be {TIKTOKEN_ENCODING} ids (--token-ids tiktoken), in "
            f"[0, {n_vocab}) and assigned; got {bad[:5]}",
            param,
        )


def _decodable(enc: tiktoken.Encoding, token: int) -> bool:
    try:
        enc.decode_single_token_bytes(token)
    except KeyError:
        return False
    return True
