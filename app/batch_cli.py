"""``mlx-embeddings-batch``: the Batch API (``/v1/files``, ``/v1/batches``) from a shell, with
a progress bar: ``submit FILE.jsonl [--wait]``, ``status BATCH_ID [--watch]``,
``download BATCH_ID``, ``cancel BATCH_ID``. Plain HTTP (httpx) against ``--server``, like
``mlx-embeddings-ingest``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from app.ingest.client import DEFAULT_SERVER, base_url

TERMINAL = ("completed", "failed", "cancelled", "expired")

EPILOG = """\
examples:
  mlx-embeddings-batch submit requests.jsonl --wait        # upload, run, show progress, download
  mlx-embeddings-batch status batch_0123... --watch
  mlx-embeddings-batch download batch_0123... -o out.jsonl --errors errors.jsonl

Each line of FILE.jsonl is {"custom_id": "...", "method": "POST", "url": "/v1/embeddings",
"body": {...a /v1/embeddings request...}}. --server defaults to $OPENAI_BASE_URL or
http://127.0.0.1:8888, --api-key to $OPENAI_API_KEY.
"""


class BatchError(Exception):
    """A server's error answer, or a batch that did not complete."""


def build_parser(prog: str = "mlx-embeddings-batch") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Run OpenAI-style embedding batches on an mlx-embeddings-server.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--server", "--base-url", dest="server",
                   default=os.environ.get("OPENAI_BASE_URL") or DEFAULT_SERVER,
                   help=f"server URL, with or without /v1 (default: {DEFAULT_SERVER})")  # fmt: skip
    p.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"),
                   help="bearer token, if the server needs one")  # fmt: skip
    p.add_argument("--timeout", type=float, default=300.0, help="HTTP timeout (s)")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("submit", help="upload FILE.jsonl and create a batch; prints its id")
    s.add_argument("file", type=Path, metavar="FILE.jsonl")
    s.add_argument("--wait", action="store_true", help="show progress until done, then download")
    s.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE")
    _outputs(s)
    st = sub.add_parser("status", help="print a batch's status and request counts")
    st.add_argument("batch_id")
    st.add_argument("--watch", action="store_true", help="a progress bar until it ends")
    st.add_argument("--poll", type=float, default=1.0, help=argparse.SUPPRESS)
    d = sub.add_parser("download", help="save a batch's output (and error) file")
    d.add_argument("batch_id")
    _outputs(d)
    c = sub.add_parser("cancel", help="cancel a batch")
    c.add_argument("batch_id")
    return p


def _outputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", type=Path, help="output file (default: BATCH_ID.output.jsonl)")
    p.add_argument("--errors", type=Path, help="error file (default: BATCH_ID.errors.jsonl)")
    p.add_argument("--poll", type=float, default=1.0, help=argparse.SUPPRESS)


class Client:
    def __init__(self, server: str, api_key: str | None, timeout: float) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url(server) + "/v1", headers=headers,
                                 timeout=timeout)  # fmt: skip

    def _check(self, r: httpx.Response) -> Any:
        if r.status_code >= 400:
            try:
                message = r.json()["error"]["message"]
            except Exception:
                message = r.text[:500]
            raise BatchError(f"{r.request.method} {r.request.url.path}: {r.status_code} {message}")
        return r.json()

    def upload(self, path: Path) -> dict:
        with path.open("rb") as f:  # streamed from the file, never read whole
            files = {"file": (path.name, f, "application/jsonl")}
            return self._check(self.http.post("/files", data={"purpose": "batch"}, files=files))

    def create(self, file_id: str, metadata: dict | None) -> dict:
        body = {"input_file_id": file_id, "endpoint": "/v1/embeddings",
                "completion_window": "24h", "metadata": metadata}  # fmt: skip
        return self._check(self.http.post("/batches", json=body))

    def batch(self, batch_id: str) -> dict:
        return self._check(self.http.get(f"/batches/{batch_id}"))

    def cancel(self, batch_id: str) -> dict:
        return self._check(self.http.post(f"/batches/{batch_id}/cancel"))

    def save(self, file_id: str, path: Path) -> int:
        size = 0
        with self.http.stream("GET", f"/files/{file_id}/content") as r:
            if r.status_code >= 400:
                r.read()
                self._check(r)
            tmp = path.with_name(path.name + ".part")
            with tmp.open("wb") as f:
                for chunk in r.iter_bytes():
                    size += f.write(chunk)
            tmp.replace(path)
        return size


def _line(b: dict) -> str:
    c = b["request_counts"]
    return (f"{b['id']} {b['status']}: {c['completed']} completed, {c['failed']} failed, "
            f"{c['total']} total")  # fmt: skip


def watch(client: Client, batch_id: str, poll: float) -> dict:
    """A tqdm bar of the batch's finished lines until it ends."""
    from tqdm import tqdm

    b = client.batch(batch_id)
    with tqdm(total=b["request_counts"]["total"] or None, unit="line", file=sys.stderr) as bar:
        while True:
            c = b["request_counts"]
            if c["total"] and bar.total != c["total"]:
                bar.total = c["total"]
            bar.n = c["completed"] + c["failed"]
            bar.set_postfix_str(f"{b['status']}, {c['failed']} failed")
            if b["status"] in TERMINAL:
                break
            time.sleep(poll)
            b = client.batch(batch_id)
    return b


def download(client: Client, b: dict, output: Path | None, errors: Path | None) -> None:
    if b["status"] not in TERMINAL:
        raise BatchError(f"batch {b['id']} is {b['status']}; nothing to download yet")
    for field, path, kind in ((b["output_file_id"], output, "output"),
                              (b["error_file_id"], errors, "errors")):  # fmt: skip
        if not field:
            continue
        path = path or Path(f"{b['id']}.{kind}.jsonl")
        size = client.save(field, path)
        print(f"{kind}: {path} ({size} bytes)", file=sys.stderr)


def _metadata(pairs: list[str]) -> dict | None:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--metadata takes KEY=VALUE, not {pair!r}")
        out[key] = value
    return out or None


def run(args: argparse.Namespace) -> int:
    client = Client(args.server, args.api_key, args.timeout)
    if args.command == "submit":
        f = client.upload(args.file)
        b = client.create(f["id"], _metadata(args.metadata))
        print(b["id"], flush=True)
        if not args.wait:
            return 0
        b = watch(client, b["id"], args.poll)
        print(_line(b), file=sys.stderr)
        download(client, b, args.output, args.errors)
        return 0 if b["status"] == "completed" else 1
    if args.command == "status":
        b = watch(client, args.batch_id, args.poll) if args.watch else client.batch(args.batch_id)
        print(_line(b))
        return 0
    if args.command == "download":
        download(client, client.batch(args.batch_id), args.output, args.errors)
        return 0
    print(_line(client.cancel(args.batch_id)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("interrupted; the batch keeps running on the server", file=sys.stderr)
        return 130
    except (BatchError, OSError, ValueError, httpx.HTTPError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
