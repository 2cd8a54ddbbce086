"""The wire protocol: request and response bodies of the OpenAI-compatible API.

Requests are validated with these models; responses are written straight from numpy arrays by
``app.encoding`` for speed, and these models document (and in tests check) their shape.
Unknown request fields are ignored, as OpenAI does.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from pydantic import ValidationError as PydanticValidationError

from app.errors import InvalidRequest

EncodingFormat = Literal["float", "base64"]
# Cohere's names; app.encoding documents each.
EmbeddingType = Literal["float", "float16", "int8", "uint8", "binary", "ubinary"]


class PoolingSpec(BaseModel):
    """Server-side token pooling of multi-vector embeddings (app.pooling)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["hierarchical", "rows_cols"]
    # at most n_tokens // pool_factor clusters (colpali-engine's rule). hierarchical: default 3;
    # rows_cols: optional, the originals returned beside the pooled rows/columns are pooled so.
    pool_factor: StrictInt | None = Field(default=None, ge=1, le=64)

    def key(self) -> dict[str, Any]:
        """What the cache key records (pooled vectors are cached under their own key)."""
        return {"method": self.method, "pool_factor": self.factor}

    @property
    def factor(self) -> int | None:
        if self.method == "hierarchical":
            return self.pool_factor if self.pool_factor is not None else 3
        return self.pool_factor


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    # Any JSON; app.inputs.InputResolver validates its shape (str | str[] | int[] | int[][] |
    # typed parts) and answers errors pointed at input[i].
    input: Any
    model: StrictStr
    encoding_format: EncodingFormat = "float"
    dimensions: StrictInt | None = Field(default=None, gt=0)
    user: StrictStr | None = None
    # TEI-style: cut inputs over the token cap instead of answering 400.
    truncate: StrictBool = False
    # Which prompt to apply to text inputs (app.engine.prompts): input_type "query" |
    # "document" (Cohere/Voyage; also "search_query" / "search_document"), or prompt_name, any
    # prompt of the model (sentence-transformers / TEI). Neither: the model's default.
    input_type: StrictStr | None = None
    prompt_name: StrictStr | None = None
    embedding_type: EmbeddingType = "float"
    pooling: PoolingSpec | None = None


def parse_embedding_request(body: Any) -> EmbeddingRequest:
    """Validate a decoded JSON body; errors become InvalidRequest with ``param`` = field path."""
    if not isinstance(body, dict):
        raise InvalidRequest(
            f"the request body must be a JSON object, not {_json_type(body)}", param=None
        )
    if body.get("encoding_format", "float") is None:  # clients may send an explicit null
        body = {**body, "encoding_format": "float"}
    try:
        req = EmbeddingRequest.model_validate(body)
    except PydanticValidationError as exc:
        raise validation_error(exc) from None
    if req.input is None:
        raise InvalidRequest("'input' must not be null", param="input")
    return req


def validation_error(exc: PydanticValidationError) -> InvalidRequest:
    err = exc.errors(include_url=False)[0]
    param = ".".join(str(p) for p in err.get("loc", ())) or None
    kind = err.get("type", "")
    if kind == "missing":
        message = f"'{param}' is required"
    elif param == "encoding_format":
        message = f"invalid encoding_format {err.get('input')!r}: must be 'float' or 'base64'"
    elif kind == "extra_forbidden":
        message = f"unknown field '{param}'"
    else:
        message = f"invalid '{param}': {err.get('msg', 'invalid value')}"
    return InvalidRequest(message, param=param)


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if value is None:
        return "null"
    return type(value).__name__


class RerankRequest(BaseModel):
    """POST /v1/rerank (the Cohere / Jina / TEI shape)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    model: StrictStr
    query: Any  # one input: a string, typed parts, an image part (app.inputs)
    documents: list[Any] = Field(min_length=1)  # each: a string, typed parts, image, PDF
    top_n: StrictInt | None = Field(default=None, ge=1)
    return_documents: StrictBool = False
    truncate: StrictBool = False


class ScoreRequest(BaseModel):
    """POST /v1/score (vLLM's shape): ``text_1`` one item or a list, ``text_2`` one item or a
    list; one ``text_1`` scores against every ``text_2``, two lists of the same length pairwise."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    model: StrictStr
    text_1: Any
    text_2: Any
    truncate: StrictBool = False


class BatchCreateRequest(BaseModel):
    """POST /v1/batches (OpenAI's shape; only the embeddings endpoint is served)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    input_file_id: StrictStr
    endpoint: Literal["/v1/embeddings"]
    completion_window: Literal["24h"]
    metadata: dict[str, StrictStr] | None = None


def parse_model(cls: type[BaseModel], body: Any) -> Any:
    if not isinstance(body, dict):
        raise InvalidRequest(
            f"the request body must be a JSON object, not {_json_type(body)}", param=None
        )
    try:
        return cls.model_validate(body)
    except PydanticValidationError as exc:
        raise validation_error(exc) from None


# ---- responses -------------------------------------------------------------------------------


class EmbeddingData(BaseModel):
    """One embedding. ``embedding`` is a float list (n_tokens lists of dim floats for
    multi-vector models) or, with ``encoding_format=base64``, little-endian float32 bytes."""

    model_config = ConfigDict(extra="allow")

    object: Literal["embedding"] = "embedding"
    embedding: list[float] | list[list[float]] | str
    index: int
    # extensions (present only where they apply)
    shape: list[int] | None = None
    input_index: int | None = None
    page: int | None = None
    image_grid: list[int] | None = None
    image_token_span: list[int] | None = None


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage


class ModelLimits(BaseModel):
    max_inputs: int
    max_tokens_per_input: int
    max_tokens_per_request: int
    max_body_bytes: int
    max_batch_size: int
    media_max_bytes: int | None = None
    max_image_pixels: int | None = None
    max_pdf_pages: int | None = None
    media_timeout_s: float | None = None


class ModelCard(BaseModel):
    """An OpenAI model object plus what an embeddings client needs to know about it.

    The extension fields are null while the model is still loading."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    # extensions
    ready: bool = True
    kind: Literal["multi_vector", "pooled"] | None = None
    dimensions: int | None = None
    modalities: list[str] | None = None
    max_tokens: int | None = None
    dtype: str | None = None
    limits: ModelLimits | None = None
    image: dict[str, int] | None = None  # min_pixels, max_pixels, max_image_tokens
    family: str | None = None  # e.g. bert, modernbert, qwen3, gemma3_text, colqwen2_5
    matryoshka: bool | None = None  # smaller "dimensions" accepted
    prompts: dict[str, str] | None = None  # prompt name -> text put before the input
    default_prompt_name: str | None = None  # applied when a request names none
    pooling: str | None = None  # pooled models: cls | mean | max | last
    normalized: bool | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
