"""Goldens for server-side hierarchical token pooling (tests/goldens/pooling_reference.*).

colpali-engine 0.3.18's ``HierarchicalTokenPooler`` (torch + SciPy) on (a) the colpali-engine
ColQwen2.5 vectors already in ``colqwen_reference.npz`` (queries and pages) and (b) one
synthetic 743-token page of clustered vectors with exact duplicates (ties), stored as int8
(the input is ``int8 / 127`` in float32, so both sides start from the same floats). For each
pool factor it writes the cluster label of every token, and for pool factor 3 the pooled
vectors of the ColQwen2.5 items (the labels determine the rest; the file stays small).

Runs in the goldens venv (see tests/goldens/README.md), never in the project venv:

    /work/goldens-venv/bin/python scripts/make_pooling_goldens.py tests/goldens/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_goldens  # noqa: E402

POOL_FACTORS = (2, 3, 4)
SYNTHETIC_TOKENS, SYNTHETIC_DIM, SYNTHETIC_CENTERS = 743, 128, 60


def synthetic_page(seed: int = 14) -> np.ndarray:
    """Clustered unit-ish vectors as int8, with a block of exact duplicate tokens."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((SYNTHETIC_CENTERS, SYNTHETIC_DIM))
    which = rng.integers(0, SYNTHETIC_CENTERS, SYNTHETIC_TOKENS)
    x = centers[which] + 0.6 * rng.standard_normal((SYNTHETIC_TOKENS, SYNTHETIC_DIM))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = np.clip(np.rint(x * 127), -127, 127).astype(np.int8)
    q[700:720] = q[100]  # identical tokens (a blank area of a page): ties in the linkage
    return q


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, nargs="?", default=make_goldens.DEFAULT_OUT_DIR)
    args = parser.parse_args(argv)
    make_goldens._import_reference_stack()
    import torch
    from colpali_engine.compression.token_pooling import HierarchicalTokenPooler

    torch.set_num_threads(1)
    ref = np.load(args.out_dir / "colqwen_reference.npz")
    inputs = {k.removesuffix(".embeddings"): ref[k] for k in ref.files if k.endswith(".embeddings")}
    page = synthetic_page()
    inputs["synthetic_page"] = page.astype(np.float32) / np.float32(127.0)
    pooler = HierarchicalTokenPooler()
    arrays: dict[str, np.ndarray] = {"synthetic_page.int8": page}
    index: dict = {"items": {}, "pool_factors": list(POOL_FACTORS)}
    for name, emb in inputs.items():
        index["items"][name] = {"tokens": len(emb)}
        for pf in POOL_FACTORS:
            out = pooler.pool_embeddings([torch.from_numpy(emb.copy())], pool_factor=pf,
                                         return_dict=True)  # fmt: skip
            pooled = out.pooled_embeddings[0].numpy().astype(np.float32)
            labels = np.full(len(emb), -1, dtype=np.int16)
            for cluster, (indices,) in out.cluster_id_to_indices[0].items():
                labels[indices.numpy()] = cluster
            assert (labels >= 0).all()
            arrays[f"{name}.pf{pf}.labels"] = labels
            if name != "synthetic_page" and pf == 3:  # labels say the rest; keep the file small
                arrays[f"{name}.pf{pf}.pooled"] = pooled
            index["items"][name][f"pf{pf}"] = len(pooled)
    index["versions"] = make_goldens._package_versions()
    make_goldens.write_npz(args.out_dir / "pooling_reference.npz", arrays)
    make_goldens.write_json(args.out_dir / "pooling_reference.json", index)
    print({k: v for k, v in index["items"].items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
