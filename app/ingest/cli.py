"""``mlx-embeddings-ingest``: embed page images and PDFs with the embeddings server's jobs API
and store them in Qdrant (embedded local mode by default, or a Qdrant server)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from app.ingest.client import DEFAULT_SERVER, EmbeddingsClient, ServerError
from app.ingest.collection import CollectionMismatch, default_qdrant_path, open_qdrant
from app.ingest.walk import SUPPORTED_SUFFIXES, UnsupportedFile, plan_pages, walk

EPILOG = """\
examples:
  mlx-embeddings-ingest images/ reports/ --collection pages
  mlx-embeddings-ingest --collection pages --query "quarterly revenue bar chart"
  mlx-embeddings-ingest docs/ --collection pages --qdrant-url http://localhost:6333

Points get ids derived from the file bytes, the page number and the model, so running the same
command again skips what is stored, and an interrupted run resumes.
"""


def build_parser(prog: str = "mlx-embeddings-ingest") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Embed page images and PDFs with an mlx-embeddings-server (ColQwen2.5) through its "
            "jobs API and upsert them into Qdrant; optionally search them."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="files or folders (walked recursively) to ingest: "
        + " ".join(sorted(SUPPORTED_SUFFIXES)),
    )
    p.add_argument("--collection", default="pages", help="Qdrant collection (default: pages)")
    g = p.add_argument_group("embeddings server")
    g.add_argument(
        "--server", default=DEFAULT_SERVER, help=f"server URL (default: {DEFAULT_SERVER})"
    )
    g.add_argument("--model", help="model id to request (default: the server's, GET /v1/models)")
    g.add_argument("--api-key", help="bearer token for the server, if it needs one")
    g.add_argument(
        "--chunk-size", type=int, default=16, help="pages per embedding job (default: 16)"
    )
    g.add_argument("--max-jobs", type=int, default=2, help="jobs in flight at once (default: 2)")
    g.add_argument(
        "--timeout", type=float, default=300.0, help="HTTP timeout in seconds (default: 300)"
    )
    g.add_argument(
        "--pool-factor",
        type=int,
        help="store the original vectors hierarchically pooled by the server (colpali-engine's "
        "token pooling: at most n_tokens / N vectors a page; 2 costs almost no accuracy)",
    )
    q = p.add_argument_group("qdrant")
    q.add_argument("--qdrant-url", help="a Qdrant server, e.g. http://localhost:6333")
    q.add_argument(
        "--qdrant-path",
        help=f"embedded Qdrant directory when no --qdrant-url (default: {default_qdrant_path()})",
    )
    q.add_argument("--qdrant-api-key", help="API key of the Qdrant server")
    q.add_argument(
        "--binary-quantization",
        action="store_true",
        help="new collections keep a 1-bit copy of the original vectors in RAM (Qdrant's "
        "binary quantization); searches rescore with the full vectors",
    )
    s = p.add_argument_group("search")
    s.add_argument("--query", action="append", help="search this text (repeatable)")
    s.add_argument("--top-k", type=int, default=5, help="results per query (default: 5)")
    s.add_argument(
        "--prefetch",
        type=int,
        default=100,
        help="candidates from each pooled vector before the MaxSim rerank; 0 = exact full "
        "search (default: 100)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.paths and not args.query:
        build_parser().error("give PATHs to ingest and/or --query TEXT")
    if args.pool_factor is not None and not 1 <= args.pool_factor <= 64:
        build_parser().error("--pool-factor must be between 1 and 64")
    if args.chunk_size < 1 or args.max_jobs < 1 or args.top_k < 1 or args.prefetch < 0:
        build_parser().error("--chunk-size, --max-jobs and --top-k must be >= 1, --prefetch >= 0")
    try:
        return run(args)
    except KeyboardInterrupt:
        print(
            "interrupted; what was stored stays - run the same command to resume", file=sys.stderr
        )
        return 130
    except (ServerError, CollectionMismatch, UnsupportedFile, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except RuntimeError as exc:  # e.g. the embedded Qdrant is locked
        print(f"error: {exc}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace) -> int:
    from app.ingest.pipeline import ingest_pages
    from app.ingest.search import embed_query, search

    files = walk(args.paths) if args.paths else []
    if args.paths and not files:
        raise FileNotFoundError(f"no images or PDFs under {' '.join(args.paths)}")
    with EmbeddingsClient(args.server, api_key=args.api_key, timeout=args.timeout) as client:
        model = args.model or client.model_id()
        qdrant = open_qdrant(args.qdrant_url, args.qdrant_path, args.qdrant_api_key)
        try:
            if files:
                pages = plan_pages(files, model)
                report = ingest_pages(
                    pages,
                    client=client,
                    qdrant=qdrant,
                    collection=args.collection,
                    model=model,
                    chunk_size=args.chunk_size,
                    max_jobs=args.max_jobs,
                    progress=not args.no_progress,
                    binary_quantization=args.binary_quantization,
                    pool_factor=args.pool_factor,
                )
                rate = f", {report.pages_per_second:.2f} pages/s" if report.ingested else ""
                print(
                    f"{report.files} files, {report.pages} pages: {report.ingested} ingested, "
                    f"{report.skipped} already in {args.collection!r} "
                    f"({report.seconds:.1f}s{rate})"
                )
            for text in args.query or []:
                if not qdrant.collection_exists(args.collection):
                    raise ServerError(
                        f"collection {args.collection!r} does not exist yet; ingest pages first"
                    )
                hits = search(
                    qdrant,
                    args.collection,
                    embed_query(client, text, model),
                    top_k=args.top_k,
                    prefetch=args.prefetch,
                )
                print(f"\nquery: {text}")
                for rank, hit in enumerate(hits, 1):
                    pl = hit.payload or {}
                    page = f"  page {pl.get('page')}" if pl.get("kind") == "pdf" else ""
                    print(f"{rank:>3}. {hit.score:9.4f}  {pl.get('source')}{page}")
        finally:
            qdrant.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
