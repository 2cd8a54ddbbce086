"""app.settings_cli.load_settings: CLI flag > env MLX_EMB_* > default, and its usage errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from app.settings import ENV_PREFIX, Settings
from app.settings_cli import build_parser, flag_of, load_settings, model_path_problem


def test_defaults_with_only_model() -> None:
    s = load_settings(["--model", "org/m"], env={})
    assert s.model == "org/m" and s.model_name == "org/m"
    assert s.host == "127.0.0.1" and s.port == 8888
    assert s.blas == "auto" and s.cache is True
    assert s.max_inputs == 2048 and s.max_tokens_per_request == 300_000


def test_model_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        load_settings([], env={})
    assert info.value.code == 2
    assert "--model is required" in capsys.readouterr().err


def test_env_is_used_and_flags_win() -> None:
    env = {f"{ENV_PREFIX}MODEL": "env/model", f"{ENV_PREFIX}PORT": "9001"}
    s = load_settings([], env=env)
    assert s.model == "env/model" and s.port == 9001
    s = load_settings(["--port", "9002", "--model", "cli/model"], env=env)
    assert s.model == "cli/model" and s.port == 9002


def test_served_model_name_overrides_model_name() -> None:
    s = load_settings(["--model", "/models/x", "--served-model-name", "org/x"], env={})
    assert s.model_name == "org/x"


@pytest.mark.parametrize(
    ("argv", "env", "field", "value"),
    [
        (["--no-cache"], {}, "cache", False),
        ([], {f"{ENV_PREFIX}CACHE": "off"}, "cache", False),
        (["--cache"], {f"{ENV_PREFIX}CACHE": "0"}, "cache", True),
        (["--max-wait-ms", "2.5"], {}, "max_wait_ms", 2.5),
        (
            [],
            {f"{ENV_PREFIX}ALLOWED_MEDIA_DOMAINS": "a.com, b.org,"},
            "allowed_media_domains",
            ("a.com", "b.org"),
        ),
        (["--data-dir", "/tmp/x"], {}, "data_dir", Path("/tmp/x")),
        (["--blas", "off"], {}, "blas", "off"),
        (["--query-prefix", "Query: "], {}, "query_prefix", "Query: "),
    ],
)
def test_conversions(argv, env, field, value) -> None:
    s = load_settings(["--model", "m", *argv], env=env)
    assert getattr(s, field) == value


def test_bad_env_value_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        load_settings(["--model", "m"], env={f"{ENV_PREFIX}PORT": "eighty"})
    assert f"{ENV_PREFIX}PORT" in capsys.readouterr().err


def test_bad_dtype_is_a_usage_error() -> None:
    with pytest.raises(SystemExit):
        load_settings(["--model", "m", "--dtype", "int4"], env={})


def test_settings_are_frozen() -> None:
    s = load_settings(["--model", "m"], env={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.port = 1  # type: ignore[misc]


def test_every_field_has_a_flag_with_help_naming_its_env_var() -> None:
    parser = build_parser()
    text = parser.format_help()
    for f in dataclasses.fields(Settings):
        if not f.metadata.get("cli", True):  # derived from another flag (--model)
            continue
        assert flag_of(f) in text
        assert ENV_PREFIX + f.name.upper() in text


def test_api_key_repeats_and_env_is_a_comma_list() -> None:
    s = load_settings(["--model", "m", "--api-key", "k1", "--api-key", "k2,k3"], env={})
    assert s.api_keys == ("k1", "k2", "k3")
    s = load_settings(["--model", "m"], env={f"{ENV_PREFIX}API_KEYS": "a, b"})
    assert s.api_keys == ("a", "b")
    s = load_settings(["--model", "m", "--api-key", "c"], env={f"{ENV_PREFIX}API_KEYS": "a"})
    assert s.api_keys == ("c",)  # the flag wins, as everywhere
    assert "k1" not in repr(load_settings(["--model", "m", "--api-key", "k1"], env={}))
    assert s.public_health is True and s.allow_unauthenticated is False


def test_a_model_path_that_does_not_exist_is_named_not_sent_to_the_hub(tmp_path: Path) -> None:
    assert model_path_problem("org/name") is None  # a hub id: the hub decides
    assert (
        model_path_problem(str(tmp_path / "nope"))
        == f"--model {tmp_path / 'nope'}: no such directory"
    )
    assert "no such directory" in (model_path_problem("./nope/x") or "")
    assert "no config.json" in (model_path_problem(str(tmp_path)) or "")
    (tmp_path / "config.json").write_text("{}")
    assert model_path_problem(str(tmp_path)) is None


def test_model_repeats_with_served_names() -> None:
    s = load_settings(["--model", "org/a", "--model", "/m/b=bee", "--model", "c"], env={})
    assert (s.model, s.model_name) == ("org/a", "org/a")
    assert s.model_names == ("org/a", "bee", "c")
    per = s.per_model()
    assert [(p.model, p.model_name, p.extra_models) for p in per] == [
        ("org/a", "org/a", ()),
        ("/m/b", "bee", ()),
        ("c", "c", ()),
    ]
    assert per[1].port == s.port  # everything else is shared
    assert s.source_of("bee") == "/m/b"
    first_named = load_settings(["--model", "org/a=alpha"], env={})
    assert (first_named.model, first_named.model_name) == ("org/a", "alpha")


def test_model_env_is_a_comma_list() -> None:
    s = load_settings([], env={f"{ENV_PREFIX}MODEL": "org/a=alpha, org/b"})
    assert s.model_names == ("alpha", "org/b")
    flag_wins = load_settings(["--model", "x"], env={f"{ENV_PREFIX}MODEL": "org/a,org/b"})
    assert flag_wins.model_names == ("x",)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--model", "a", "--model", "a"], "given twice"),
        (["--model", "a", "--model", "b=a"], "served name 'a'"),
        (["--model", "a=x", "--served-model-name", "y"], "name the first model twice"),
        (["--model", "a", "--served-model-name", "b", "--model", "b"], "same name"),
        (["--model", "a="], "ID=served-name"),
    ],
)
def test_model_mistakes_are_usage_errors(argv, says, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        load_settings(argv, env={})
    assert exc.value.code == 2
    assert says in capsys.readouterr().err
