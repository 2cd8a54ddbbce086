"""Print the configuration table of the README (Markdown) from app.settings.Settings.

uv run python scripts/print_settings_table.py > /tmp/table.md
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.settings import ENV_PREFIX, Settings  # noqa: E402
from app.settings_cli import flag_of  # noqa: E402


def _default(f: dataclasses.Field) -> str:
    value = f.default
    if value is None or value == ():
        return ""
    if isinstance(value, bool):
        return "on" if value else "off"
    if "bytes" in f.name and isinstance(value, int) and value % (1 << 20) == 0:
        return f"{value} ({value >> 20} MiB)"
    return f"`{value}`" if value != "" else ""


def table() -> str:
    rows = [
        "| Flag | Environment variable | Default | Meaning |",
        "|---|---|---|---|",
    ]
    for f in dataclasses.fields(Settings):
        if not f.metadata.get("cli", True):  # derived from another flag
            continue
        flag = flag_of(f)
        if f.metadata.get("flag") or f.metadata.get("many"):
            flag += " (repeatable)"
        if str(f.type) == "bool":
            flag = f"{flag} / --no-{f.name.replace('_', '-')}"
        help_text = f.metadata["help"].replace("|", "\\|")
        rows.append(f"| `{flag}` | `{ENV_PREFIX}{f.name.upper()}` | {_default(f)} | {help_text} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
