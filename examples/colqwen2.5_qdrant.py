"""ColQwen2.5 page retrieval with Qdrant: index page images, then search them with text.

    uv run mlx-embeddings-server --model qnguyen3/colqwen2.5-v0.2-mlx      # another terminal
    uv run python examples/colqwen2.5_qdrant.py                           # embedded Qdrant
    uv run python examples/colqwen2.5_qdrant.py --qdrant-url http://localhost:6333

Pages go through the server's async jobs API (POST /v1/embeddings/jobs); queries through the
OpenAI client. Each page is stored three times in one point, as in Qdrant's ColPali recipe:
all token vectors (``original``, MaxSim rerank only, no HNSW; with ``--binary-quantization``
Qdrant keeps a 1-bit copy in RAM and rescores with the full vectors) and the image grid
mean-pooled per row and per column (small, indexed: the fast first stage). The server does the
pooling (``"pooling": {"method": "rows_cols"}``): no numpy here. ``mlx-embeddings-ingest`` is
the full tool (PDFs, folders, resume, progress bar).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import time
import uuid
from pathlib import Path

import httpx
import platformdirs
from openai import APIConnectionError, OpenAI
from qdrant_client import QdrantClient, models

HERE = Path(__file__).resolve().parent
QUERIES = ["quarterly revenue bar chart", "invoice total amount due", "energy mix pie chart"]


def embed_pages_job(server: str, model: str, paths: list[Path]) -> list[dict]:
    """Embed images with one job: submit, poll until it ends, fetch its result."""
    parts = [
        {
            "type": "image_url",
            "image_url": {
                "url": "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode()
            },
        }
        for p in paths
    ]
    with httpx.Client(base_url=server, timeout=300) as http:
        body = {"model": model, "input": parts, "pooling": {"method": "rows_cols"}}
        resp = http.post("/embeddings/jobs", json=body)
        if resp.status_code >= 400:
            raise SystemExit(f"POST /embeddings/jobs: {resp.status_code} {resp.text}")
        job = resp.json()
        while job["status"] in ("queued", "running"):
            time.sleep(0.5)
            job = http.get(f"/embeddings/jobs/{job['id']}").json()
        if job["status"] != "succeeded":
            raise SystemExit(f"job {job['id']} {job['status']}: {job.get('error')}")
        return http.get(f"/embeddings/jobs/{job['id']}/result").json()["data"]


def create_collection(qdrant: QdrantClient, name: str, dim: int, binary: bool) -> None:
    if qdrant.collection_exists(name):
        return
    maxsim = models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM)
    cos = models.Distance.COSINE
    bq = (models.BinaryQuantization(binary=models.BinaryQuantizationConfig(always_ram=True))
          if binary else None)  # fmt: skip
    qdrant.create_collection(name, vectors_config={
        "original": models.VectorParams(size=dim, distance=cos, multivector_config=maxsim,
                                        hnsw_config=models.HnswConfigDiff(m=0),
                                        quantization_config=bq),
        "mean_pooling_rows": models.VectorParams(size=dim, distance=cos, multivector_config=maxsim),
        "mean_pooling_columns": models.VectorParams(size=dim, distance=cos,
                                                    multivector_config=maxsim),
    })  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", default="http://127.0.0.1:8888/v1")
    ap.add_argument("--images", type=Path, default=HERE.parent / "images")
    ap.add_argument("--collection", default="colqwen_example")
    ap.add_argument("--qdrant-url", help="a Qdrant server (default: embedded, no Docker)")
    ap.add_argument("--qdrant-path", default=platformdirs.user_data_dir("mlx-embeddings-server")
                    + "/qdrant")  # fmt: skip
    ap.add_argument("--query", action="append", help="repeatable; default: three samples")
    ap.add_argument("--binary-quantization", action="store_true",
                    help="1-bit originals in RAM, rescored with the full vectors")  # fmt: skip
    args = ap.parse_args()

    openai = OpenAI(base_url=args.server, api_key="unused")
    try:
        model = openai.models.list().data[0].id
    except APIConnectionError:
        raise SystemExit(
            f"no embeddings server at {args.server}; start one with "
            "`uv run mlx-embeddings-server --model qnguyen3/colqwen2.5-v0.2-mlx`"
        ) from None
    qdrant = (QdrantClient(url=args.qdrant_url) if args.qdrant_url
              else QdrantClient(path=args.qdrant_path))  # fmt: skip

    paths = sorted(args.images.glob("*.png"))
    # Same bytes + same model = same id: running this twice stores nothing new.
    ids = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"{hashlib.sha256(p.read_bytes()).hexdigest()}"
                                              f":1:{model}")) for p in paths]  # fmt: skip
    stored = set()
    if qdrant.collection_exists(args.collection):
        stored = {str(r.id) for r in qdrant.retrieve(args.collection, ids)}
    todo = [(p, i) for p, i in zip(paths, ids, strict=True) if i not in stored]
    print(f"{len(paths)} pages in {args.images}, {len(todo)} to embed")
    if todo:
        data = embed_pages_job(args.server, model, [p for p, _ in todo])
        points = []
        for (path, pid), item in zip(todo, data, strict=True):
            # the server's float lists, stored as they come (pooled rows are unit length)
            create_collection(qdrant, args.collection, item["shape"][1], args.binary_quantization)
            points.append(models.PointStruct(id=pid, payload={"source": str(path)}, vector={
                "original": item["embedding"],
                "mean_pooling_rows": item["pooled_rows"],
                "mean_pooling_columns": item["pooled_columns"],
            }))  # fmt: skip
        qdrant.upsert(args.collection, points)

    for text in args.query or QUERIES:
        # float format: the OpenAI client would flatten base64 multi-vectors.
        q = openai.embeddings.create(model=model, input=[text], encoding_format="float")
        query = q.data[0].embedding  # n_tokens lists of 128 floats
        hits = qdrant.query_points(
            args.collection,
            prefetch=[
                models.Prefetch(query=query, using="mean_pooling_rows", limit=100),
                models.Prefetch(query=query, using="mean_pooling_columns", limit=100),
            ],
            query=query,
            using="original",
            limit=3,
            search_params=models.SearchParams(
                quantization=models.QuantizationSearchParams(rescore=True)
            )
            if args.binary_quantization
            else None,
        ).points
        print(f"\n{text}")
        for hit in hits:
            print(f"  {hit.score:8.3f}  {hit.payload['source']}")


if __name__ == "__main__":
    main()
