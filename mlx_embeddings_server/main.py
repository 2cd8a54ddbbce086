"""``python -m mlx_embeddings_server.main --model ...`` (the earlier project's command line),
now served by ``app.cli``."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from app.cli import main as cli_main

    return cli_main(argv, prog="python -m mlx_embeddings_server.main")


if __name__ == "__main__":
    sys.exit(main())
