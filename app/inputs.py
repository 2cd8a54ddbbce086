"""Turn a request's ``input`` field into validated engine inputs.

Accepted forms (``raw_input`` is the JSON-decoded ``input``):

* ``"text"`` - one text. For a model that takes images, a string starting with ``data:``,
  ``http://`` or ``https://`` is media (compatibility with the earlier server; send
  ``{"type": "text", ...}`` to embed such text). For a text-only model a plain string is always
  text: nothing is fetched or parsed, and a typed media part is 400 ``unsupported_input`` before
  any fetch.
* ``["a", "b", ...]`` - several, each as above.
* ``[1, 2, 3]`` - ONE token-id input; ``[[1, 2], [3]]`` - several token-id inputs. What the ids
  mean is ``--token-ids`` (:mod:`app.token_ids`): rejected (default), tiktoken ``cl100k_base``
  ids decoded to text, or this model's own ids.
* typed parts, mixed freely with strings in one list (or one part on its own):
  ``{"type": "text", "text": "..."}`` (never fetched, whatever it starts with),
  ``{"type": "image_url", "image_url": {"url": "<http(s)/file URL or data URI>"}}``
  (``"image_url": "<url>"`` is accepted too),
  ``{"type": "file", "file": {"file_data": "data:application/pdf;base64,...", "filename": ...}}``,
  ``{"type": "file", "file": {"url": "..."}}``.
  ``file://`` URLs are only read from parts (and only under ``--allowed-local-media-path``).

Media type comes from the bytes (PNG, JPEG, WebP, GIF, BMP, TIFF, PDF), never from a declared
type, so any media source may hold an image or a PDF. A PDF becomes one item per page, in page
order; ``"pages": "1-3,7"`` (in the part, or inside its ``file`` / ``image_url`` object; also
``"5-"`` or a number) selects pages.

Every item of a request is fetched, decoded and validated before :meth:`InputResolver.resolve`
returns, so nothing is queued when one item is bad (the first failure is raised, the rest is
cancelled). Errors are ApiError subclasses whose ``param`` names the offending item:
``input`` (a lone string / token list), ``input[3]`` (a string in a list), ``input[3].text``,
``input[3].image_url``, ``input[3].file`` (parts), or the faulty field (``input[3].pages``,
``input[3].file.file_data``, ``input[3].type``); every message starts with that param.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from app.engine.base import TextInput, TokenInput
from app.errors import ApiError, InvalidRequest, InvalidTokenIds, MediaError, UnsupportedInput
from app.media.datauri import decode_data_uri, is_data_uri
from app.media.fetch import MediaFetcher, Resolver
from app.media.items import (
    ItemBudget,
    MediaJob,
    ResolvedItem,
    all_or_first_error,
    decode_media,
)
from app.settings import Settings
from app.token_ids import TiktokenDecoder, rejected_message

if TYPE_CHECKING:
    import httpx

# Media items fetched and decoded at once within one request.
MEDIA_CONCURRENCY = 8


_Entry = ResolvedItem | MediaJob


def _is_media_string(text: str) -> bool:
    low = text[:8].lower()
    return low.startswith(("data:", "http://", "https://"))


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(value), type(value).__name__)


def _is_token(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class InputResolver:
    """Parses, fetches and decodes request inputs. One per server (shares one HTTP client).

    ``resolver``: ``async (host, port) -> list[str]`` of IP addresses (default: the event
    loop's getaddrinfo); ``transport``: an httpx transport (tests; it receives requests already
    rewritten to the checked IP);
    ``max_image_pixels_for_model``: the model's largest image in pixels - PDF pages are rendered
    to about that size unless ``settings.pdf_dpi`` is set;
    ``modalities``: returns the served model's modalities (``ModelInfo.modalities``; called per
    request, after the model is loaded). Without ``"image"`` plain strings are never media and
    media parts are refused. ``None``: unknown, media allowed (tests of the media path);
    ``token_decoder``: decodes ``--token-ids tiktoken`` ids (default: tiktoken's cl100k_base).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        resolver: Resolver | None = None,
        max_image_pixels_for_model: int | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        modalities: Callable[[], Sequence[str]] | None = None,
        token_decoder: TiktokenDecoder | None = None,
    ) -> None:
        self.settings = settings
        self.max_image_pixels_for_model = max_image_pixels_for_model
        self._fetcher = MediaFetcher(settings, resolver=resolver, transport=transport)
        self._modalities = modalities
        self._token_decoder = token_decoder
        if token_decoder is None and settings.token_ids == "tiktoken":
            self._token_decoder = TiktokenDecoder()

    def _text_only(self) -> bool:
        return self._modalities is not None and "image" not in self._modalities()

    async def aclose(self) -> None:
        await self._fetcher.aclose()

    # ------------------------------------------------------------------ parsing

    def parse(self, raw_input: object) -> list[_Entry]:
        """Check the shape of ``raw_input``; text and tokens are final, media become jobs
        (token ids stay ``TokenInput`` here; ``resolve`` decodes them in ``tiktoken`` mode)."""
        entries = self._parse(raw_input, media=not self._text_only())
        if self.settings.token_ids == "reject":
            for e in entries:
                if isinstance(e, ResolvedItem) and isinstance(e.item, TokenInput):
                    raise InvalidTokenIds(rejected_message(e.param), e.param)
        return entries

    def _parse(self, raw_input: object, *, media: bool) -> list[_Entry]:
        if isinstance(raw_input, str):
            return [self._parse_string(raw_input, 0, "input", may_be_media=media)]
        if isinstance(raw_input, dict):  # one content part on its own
            return [self._parse_part(raw_input, 0, "input", media=media)]
        if not isinstance(raw_input, list):
            raise InvalidRequest(
                "input: must be a string, a content part, an array of strings, an array of token "
                "ids, an array of token-id arrays or an array of strings and content parts, "
                f"not {_type_name(raw_input)}",
                "input",
            )
        if not raw_input:
            raise InvalidRequest("input: must not be an empty array", "input")
        if _is_token(raw_input[0]):
            return [self._parse_tokens(raw_input, 0, "input")]
        if len(raw_input) > self.settings.max_inputs:
            raise InvalidRequest(
                f"input: {len(raw_input)} inputs, more than the server's limit of "
                f"{self.settings.max_inputs} (--max-inputs); split the request",
                "input",
            )
        entries: list[_Entry] = []
        for i, value in enumerate(raw_input):
            param = f"input[{i}]"
            if isinstance(value, str):
                entries.append(self._parse_string(value, i, param, may_be_media=media))
            elif isinstance(value, list):
                entries.append(self._parse_tokens(value, i, param))
            elif isinstance(value, dict):
                entries.append(self._parse_part(value, i, param, media=media))
            else:
                raise InvalidRequest(
                    f"{param}: must be a string, a token-id array or a content part object, "
                    f"not {_type_name(value)}",
                    param,
                )
        kinds = {isinstance(v, list) for v in raw_input}
        if len(kinds) > 1:
            i = next(i for i, v in enumerate(raw_input) if isinstance(v, list))
            raise InvalidRequest(
                f"input[{i}]: token-id arrays cannot be mixed with strings or content parts "
                "in one request",
                f"input[{i}]",
            )
        return entries

    def _parse_string(self, text: str, index: int, param: str, *, may_be_media: bool) -> _Entry:
        """``may_be_media``: a plain string for a model that takes images (URL / data URI)."""
        if not text:
            raise InvalidRequest(f"{param}: must not be an empty string", param)
        if may_be_media and _is_media_string(text):
            return MediaJob(index, param, text.strip(), None, param, from_plain_string=True)
        return ResolvedItem(index, None, TextInput(text), param)

    def _parse_tokens(self, ids: list, index: int, param: str) -> ResolvedItem:
        if not ids:
            raise InvalidRequest(f"{param}: a token-id array must not be empty", param)
        for j, tok in enumerate(ids):
            if not _is_token(tok):
                raise InvalidRequest(
                    f"{param}: token ids must be integers; item {j} is {_type_name(tok)}", param
                )
        return ResolvedItem(index, None, TokenInput(tuple(ids)), param)

    def _parse_part(self, part: dict, index: int, param: str, *, media: bool) -> _Entry:
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise InvalidRequest(
                    f'{param}.text: a "text" part needs a string "text", not {_type_name(text)}',
                    f"{param}.text",
                )
            return self._parse_string(text, index, f"{param}.text", may_be_media=False)
        if kind in ("image_url", "file"):
            if not media:
                raise UnsupportedInput(
                    f'{param}.{kind}: this server\'s model takes text only; "{kind}" parts are '
                    "not supported (nothing was fetched)",
                    f"{param}.{kind}",
                )
            return self._parse_media_part(part, kind, index, param)
        raise InvalidRequest(
            f'{param}.type: unknown content part type {kind!r} (use "text", "image_url" or "file")',
            f"{param}.type",
        )

    def _parse_media_part(self, part: dict, kind: str, index: int, param: str) -> MediaJob:
        body = part.get(kind)
        sub = f"{param}.{kind}"
        if kind == "image_url" and isinstance(body, str):
            body = {"url": body}
        if not isinstance(body, dict):
            raise InvalidRequest(
                f'{sub}: a "{kind}" part needs an object "{kind}", not {_type_name(body)}', sub
            )
        if kind == "image_url":
            source = body.get("url")
            field = "url"
        else:
            if body.get("file_id") is not None:
                raise InvalidRequest(
                    f"{sub}.file_id: uploaded file ids are not supported; send the file inline "
                    'as "file_data" (a data: URI) or give its "url"',
                    f"{sub}.file_id",
                )
            has_data = body.get("file_data") is not None
            has_url = body.get("url") is not None
            if has_data == has_url:
                raise InvalidRequest(
                    f'{sub}: a "file" part needs exactly one of "file_data" (a data: URI) or "url"',
                    sub,
                )
            field = "file_data" if has_data else "url"
            source = body[field]
        if not isinstance(source, str) or not source.strip():
            raise InvalidRequest(
                f"{sub}.{field}: must be a non-empty string, not {_type_name(source)}",
                f"{sub}.{field}",
            )
        source = source.strip()
        if kind == "file" and field == "file_data" and not is_data_uri(source):
            raise InvalidRequest(
                f'{sub}.file_data: must be a data: URI ("data:application/pdf;base64,...")',
                f"{sub}.file_data",
            )
        pages, pages_param = part.get("pages"), f"{param}.pages"
        inner_pages = body.get("pages")
        if inner_pages is not None:
            if pages is not None and pages != inner_pages:
                raise InvalidRequest(
                    f'{param}: "pages" is given twice with different values; give it once',
                    pages_param,
                )
            pages, pages_param = inner_pages, f"{sub}.pages"
        return MediaJob(index, sub, source, pages, pages_param, from_plain_string=False)

    # ------------------------------------------------------------------ resolving

    async def resolve(self, raw_input: object) -> list[ResolvedItem]:
        """All items of ``raw_input``, validated, in request order (PDFs expand to pages)."""
        entries = self.parse(raw_input)
        if self.settings.token_ids == "tiktoken" and any(
            isinstance(e, ResolvedItem) and isinstance(e.item, TokenInput) for e in entries
        ):
            # the first call may load (download) the encoding: never on the event loop
            entries = await asyncio.to_thread(self._decode_token_ids, entries)
        jobs = [(n, e) for n, e in enumerate(entries) if isinstance(e, MediaJob)]
        if not jobs:
            return [e for e in entries if isinstance(e, ResolvedItem)]

        budget = ItemBudget(self.settings.max_inputs, len(entries) - len(jobs))
        sem = asyncio.Semaphore(MEDIA_CONCURRENCY)

        async def run(job: MediaJob) -> list[ResolvedItem]:
            async with sem:
                try:
                    return await self._resolve_media(job, budget)
                except ApiError:
                    raise
                except Exception as exc:  # a decoder bug must still name the item
                    raise MediaError(
                        f"{job.param}: the media could not be processed ({type(exc).__name__}: "
                        f"{exc})",
                        job.param,
                    ) from exc

        results = await all_or_first_error([run(job) for _, job in jobs])
        by_entry = dict(zip((n for n, _ in jobs), results, strict=True))
        out: list[ResolvedItem] = []
        for n, entry in enumerate(entries):
            if isinstance(entry, ResolvedItem):
                out.append(entry)
            else:
                out.extend(by_entry[n])
        return out

    def _decode_token_ids(self, entries: list[_Entry]) -> list[_Entry]:
        """``--token-ids tiktoken``: cl100k_base ids -> the text they encode (re-tokenised by the
        model like any text)."""
        decoder = self._token_decoder
        assert decoder is not None
        out: list[_Entry] = []
        for e in entries:
            if isinstance(e, ResolvedItem) and isinstance(e.item, TokenInput):
                text = decoder.decode(e.item.ids, e.param)
                e = replace(e, item=TextInput(text))
            out.append(e)
        return out

    async def _resolve_media(self, job: MediaJob, budget: ItemBudget) -> list[ResolvedItem]:
        if is_data_uri(job.source):
            try:
                data = await asyncio.to_thread(
                    decode_data_uri,
                    job.source,
                    max_bytes=self.settings.media_max_bytes,
                    param=job.param,
                )
            except MediaError as exc:
                if job.from_plain_string:
                    exc.message += (
                        '; strings starting with "data:" are read as data URIs - to embed such '
                        'text send {"type": "text", "text": ...}'
                    )
                    exc.args = (exc.message,)
                raise
            origin = "data"
        else:
            data, origin = await self._fetcher.fetch(
                job.source, job.param, hint=job.from_plain_string
            )
        # Decoding, rendering and hashing are CPU-bound: never on the event loop.
        return await asyncio.to_thread(
            decode_media, job, data, origin, budget, self.settings, self.max_image_pixels_for_model
        )
