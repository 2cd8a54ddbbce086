"""The flags and ``MLX_EMB_*`` environment variables of :class:`app.settings.Settings`: one
flag per field, CLI > env > default, and the usage errors of the server and worker commands."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from app.settings import ENV_PREFIX, Settings


def _field_type(f: dataclasses.Field) -> str:
    return str(f.type)


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _convert(f: dataclasses.Field, raw: str) -> Any:
    t = _field_type(f)
    if t == "bool":
        return _parse_bool(raw)
    if t.startswith("int"):
        return int(raw)
    if t.startswith("float"):
        return float(raw)
    if t.startswith("tuple"):
        return tuple(x.strip() for x in raw.split(",") if x.strip())
    if "Path" in t:
        return Path(raw).expanduser()
    return raw


def flag_of(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


SERVER_DESCRIPTION = (
    "OpenAI-compatible embeddings server for MLX models. "
    f"Every flag can also be set as an environment variable {ENV_PREFIX}<FLAG_NAME>."
)


def build_parser(
    prog: str = "mlx-embeddings-server",
    only: Sequence[str] | None = None,
    parents: Sequence[argparse.ArgumentParser] = (),
    description: str = SERVER_DESCRIPTION,
):
    parser = argparse.ArgumentParser(prog=prog, parents=list(parents), description=description)
    for f in dataclasses.fields(Settings):
        if (only is not None and f.name not in only) or not f.metadata.get("cli", True):
            continue
        flag = flag_of(f)
        env = ENV_PREFIX + f.name.upper()
        help_text = f"{f.metadata['help']} [env {env}]"
        if f.metadata.get("flag") or f.metadata.get("many"):  # repeatable (--api-key K1 ...)
            parser.add_argument(flag, dest=f.name, action="append", default=None, help=help_text)
        elif _field_type(f) == "bool":
            parser.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text + f" (default: {'on' if f.default else 'off'})",
            )
        else:
            parser.add_argument(
                flag,
                dest=f.name,
                default=None,
                type=lambda raw, f=f: _convert(f, raw),
                help=help_text,
            )
    return parser


def load_settings(
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    prog: str = "mlx-embeddings-server",
    only: Sequence[str] | None = None,
    parents: Sequence[argparse.ArgumentParser] = (),
    description: str = SERVER_DESCRIPTION,
) -> Settings:
    """Build the one Settings object. Exits with a usage error when --model is missing."""
    env = os.environ if env is None else env
    parser = build_parser(prog, only, parents, description)
    args = parser.parse_args(argv)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        cli = getattr(args, f.name, None)
        if f.metadata.get("many"):  # --model A --model B=b, or MLX_EMB_MODEL=A,B=b
            raw = cli if cli is not None else env.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values.update(_model_specs(raw, parser))
            continue
        if isinstance(cli, list):  # appended: each value may itself be a comma list
            cli = tuple(x for raw in cli for x in _convert(f, raw))
        if cli is not None:
            values[f.name] = cli
            continue
        raw = env.get(ENV_PREFIX + f.name.upper())
        if raw is not None:
            try:
                values[f.name] = _convert(f, raw)
            except ValueError as exc:
                parser.error(f"{ENV_PREFIX}{f.name.upper()}: {exc}")
    named = values.pop("_first_name", None)  # --model ID=name of the first model
    if named:
        other = values.get("served_model_name")
        if other and other != named:
            parser.error(
                f"--served-model-name {other!r} and --model ...={named!r} name the first "
                "model twice; give one"
            )
        values["served_model_name"] = named
    settings = Settings(**values)
    names = settings.model_names
    if len(set(names)) != len(names):
        parser.error(f"--model: two models are served as the same name ({', '.join(names)})")
    if not settings.model:
        parser.error(f"--model is required (a hub id or a local directory; env {ENV_PREFIX}MODEL)")
    if settings.dtype not in ("auto", "float32", "bfloat16", "float16"):
        parser.error(f"--dtype must be auto, float32, bfloat16 or float16, not {settings.dtype!r}")
    if settings.token_ids not in ("model", "tiktoken", "reject"):
        parser.error(f"--token-ids must be model, tiktoken or reject, not {settings.token_ids!r}")
    if settings.cpu_kernels not in ("auto", "off"):
        parser.error(f"--cpu-kernels must be auto or off, not {settings.cpu_kernels!r}")
    return settings


def _model_specs(raw: str | list[str], parser: argparse.ArgumentParser) -> dict[str, Any]:
    """``model``, ``served_model_name`` (when the first value names one) and ``extra_models``
    from the --model values (``ID`` or ``ID=served-name``; each may be a comma list)."""
    values = [raw] if isinstance(raw, str) else raw
    specs = [x.strip() for value in values for x in value.split(",") if x.strip()]
    out: dict[str, Any] = {}
    if not specs:
        return out
    names: dict[str, str] = {}
    models: set[str] = set()
    extra = []
    for i, spec in enumerate(specs):
        model, eq, name = (x.strip() for x in spec.partition("="))
        if not model or (eq and not name):
            parser.error(f"--model {spec!r}: give ID or ID=served-name")
        if model in models:
            parser.error(f"--model {model!r} is given twice (it would load twice)")
        served = name or model
        if served in names:
            parser.error(
                f"--model: the served name {served!r} names both {names[served]!r} and "
                f"{model!r}; give one of them another name (ID=served-name)"
            )
        models.add(model)
        names[served] = model
        if i == 0:
            out["model"] = model
            if name:
                out["_first_name"] = name
        else:
            extra.append(f"{model}={served}")
    out["extra_models"] = tuple(extra)
    return out


def model_path_problem(model: str) -> str | None:
    """Why ``--model`` names no model, when it is plainly a path (a hub id is ``org/name``):
    said here, before the hub client answers "Repo id must be ..." for it."""
    looks_like_path = (
        model.startswith(("/", ".", "~"))
        or model.count("/") > 1
        or os.sep != "/"
        and os.sep in model
    )
    if not looks_like_path:
        return None
    path = Path(model).expanduser()
    if not path.exists():
        return f"--model {model}: no such directory"
    if not path.is_dir():
        return f"--model {model}: not a directory (give the model's directory)"
    if not (path / "config.json").exists():
        return f"--model {model}: {path} has no config.json, so it is not a model directory"
    return None


def model_paths_problem(settings: Settings) -> str | None:
    """The first ``--model`` that plainly names no model directory (see model_path_problem)."""
    problems = (model_path_problem(s.model) for s in settings.per_model())
    return next(filter(None, problems), None)
