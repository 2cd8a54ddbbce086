"""Server-side token pooling of multi-vector embeddings (the ``pooling`` request option).

* ``hierarchical``: colpali-engine 0.3.18's ``HierarchicalTokenPooler``. The distances are
  ``1 - E Eᵀ`` (float32), and SciPy's ``linkage(distances, method="ward")`` treats that square
  matrix as *observations*: row i is token i's vector of distances, compared by euclidean
  distance. Ward linkage by the nearest-neighbour chain (SciPy's ``nn_chain``, the same
  tie-breaking, the same Lance-Williams update in float64, then the stable sort by height and
  relabelling), then ``fcluster(Z, max(n // pool_factor, 1), "maxclust")`` (SciPy's bisection
  for the smallest height with at most that many clusters, and its depth-first labelling), all
  in numpy: SciPy is not a runtime dependency. Each cluster's mean, L2-normalised, in cluster
  order. Token distances come from ``‖a‖² + ‖b‖² - 2ab`` instead of SciPy's direct sums, so
  they differ in the last bits; the clusters differ only at an exact near-tie (the goldens in
  tests/goldens/pooling_reference.* show none).
* ``rows_cols``: the Qdrant ColPali recipe's mean pooling of the image grid by rows and by
  columns (:mod:`app.ingest.pooling`, unit length as the ingest CLI stores them), returned
  beside the original vectors as ``pooled_rows`` / ``pooled_columns``. With a ``pool_factor``
  the original vectors are returned hierarchically pooled (``image_grid`` /
  ``image_token_span`` still describe the tokens before pooling, which rows/columns come from).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from app.engine.base import Embedding
from app.errors import InvalidRequest
from app.ingest.pooling import mean_pool_rows_columns, unit_rows

# Cached rows_cols embeddings keep [original; rows; columns] in one matrix and this split.
_SPLIT = "pooled_split"


def ward_linkage(observations: np.ndarray) -> np.ndarray:
    """SciPy's ``linkage(observations, method="ward", metric="euclidean")``: (n-1, 4)."""
    x = np.asarray(observations, dtype=np.float64)
    n = len(x)
    # Equal observations must be exactly 0 apart, and equally far from every other, as in
    # SciPy: compute over the distinct rows, then spread.
    uniq, inverse = np.unique(x, axis=0, return_inverse=True)
    sq = np.einsum("ij,ij->i", uniq, uniq)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (uniq @ uniq.T)
    # Where the expansion cancels (close rows), sum the squared differences as SciPy does.
    close_i, close_j = np.nonzero(np.triu(d2 < 1e-4 * float(sq.max(initial=0.0)), 1))
    if len(close_i):
        exact = ((uniq[close_i] - uniq[close_j]) ** 2).sum(axis=1)
        d2[close_i, close_j] = d2[close_j, close_i] = exact
    d_u = np.sqrt(np.maximum(d2, 0.0))
    np.fill_diagonal(d_u, 0.0)
    inverse = inverse.reshape(-1)
    d = d_u[np.ix_(inverse, inverse)]
    np.fill_diagonal(d, np.inf)
    size = np.ones(n, dtype=np.int64)
    z = np.empty((n - 1, 4))
    chain: list[int] = []
    for k in range(n - 1):
        if not chain:
            chain.append(int(np.flatnonzero(size > 0)[0]))
        while True:
            x_ = chain[-1]
            row = d[x_]
            y = int(np.argmin(row))  # inactive clusters hold inf
            current = row[y]
            if len(chain) > 1:
                prev = chain[-2]
                if row[prev] <= current:  # SciPy prefers the previous element on ties
                    y, current = prev, row[prev]
                if y == prev:
                    break
            chain.append(y)
        chain.pop()
        chain.pop()
        a, b = (x_, y) if x_ < y else (y, x_)
        na, nb = size[a], size[b]
        z[k] = (a, b, current, na + nb)
        size[a], size[b] = 0, na + nb
        active = size > 0
        active[b] = False
        ni = size[active].astype(np.float64)
        t = 1.0 / (na + nb + ni)
        dai, dbi = d[a, active], d[b, active]
        new = np.sqrt(
            (ni + na) * t * dai * dai + (ni + nb) * t * dbi * dbi - ni * t * current * current
        )
        d[b, active] = new
        d[active, b] = new
        d[a, :] = np.inf
        d[:, a] = np.inf
    z = z[np.argsort(z[:, 2], kind="mergesort")]
    _relabel(z, n)
    return z


def _relabel(z: np.ndarray, n: int) -> None:
    """SciPy's ``label``: slot indices -> cluster ids (union-find), smaller id first."""
    parent = np.arange(2 * n - 1)
    sizes = np.zeros(2 * n - 1, dtype=np.int64)
    sizes[:n] = 1

    def find(i: int) -> int:
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return root

    for i in range(n - 1):
        ra, rb = find(int(z[i, 0])), find(int(z[i, 1]))
        new = n + i
        parent[ra] = parent[rb] = new
        sizes[new] = sizes[ra] + sizes[rb]
        z[i, 0], z[i, 1], z[i, 3] = min(ra, rb), max(ra, rb), sizes[new]


def _count_clusters(z: np.ndarray, mc: np.ndarray, thresh: float, n: int, max_nc: int) -> int:
    """SciPy's ``cluster_maxclust_monocrit`` inner walk: clusters at ``thresh`` (stops early)."""
    nc = 0
    stack = [2 * n - 2]
    visited = np.zeros(2 * n - 1, dtype=bool)
    while stack:
        root = stack[-1] - n
        lc, rc = int(z[root, 0]), int(z[root, 1])
        if mc[root] <= thresh:
            nc += 1
            if nc > max_nc:
                return nc
            stack.pop()
            visited[lc] = visited[rc] = True
            continue
        descended = False
        for child in (lc, rc):
            if not visited[child]:
                visited[child] = True
                if child >= n:
                    stack.append(child)
                    descended = True
                    break
                nc += 1
                if nc > max_nc:
                    return nc
        if not descended:
            stack.pop()
    return nc


def fcluster_maxclust(z: np.ndarray, max_nc: int) -> np.ndarray:
    """SciPy's ``fcluster(z, max_nc, criterion="maxclust")``: labels 1..k per observation."""
    n = len(z) + 1
    mc = np.empty(n - 1)
    for i in range(n - 1):  # the highest merge in each subtree (Ward's heights are monotone)
        lc, rc = int(z[i, 0]), int(z[i, 1])
        mc[i] = max(z[i, 2], mc[lc - n] if lc >= n else -np.inf, mc[rc - n] if rc >= n else -np.inf)
    lower, upper = 0, n - 1
    while upper - lower > 1:
        i = (lower + upper) >> 1
        if _count_clusters(z, mc, mc[i], n, max_nc) > max_nc:
            lower = i
        else:
            upper = i
    return _cluster_monocrit(z, mc, mc[upper], n)


def _cluster_monocrit(z: np.ndarray, mc: np.ndarray, cutoff: float, n: int) -> np.ndarray:
    labels = np.zeros(n, dtype=np.int64)
    visited = np.zeros(2 * n - 1, dtype=bool)
    stack = [2 * n - 2]
    n_cluster, leader = 0, -1
    while stack:
        root = stack[-1] - n
        lc, rc = int(z[root, 0]), int(z[root, 1])
        if leader == -1 and mc[root] <= cutoff:
            leader = root
            n_cluster += 1
        if lc >= n and not visited[lc]:
            visited[lc] = True
            stack.append(lc)
            continue
        if rc >= n and not visited[rc]:
            visited[rc] = True
            stack.append(rc)
            continue
        for leaf in (lc, rc):
            if leaf < n:
                if leader == -1:
                    n_cluster += 1
                labels[leaf] = n_cluster
        if leader == root:
            leader = -1
        stack.pop()
    return labels


def hierarchical_pool(vectors: np.ndarray, pool_factor: int) -> np.ndarray:
    """colpali-engine's ``HierarchicalTokenPooler().pool_embeddings([E], pool_factor)[0]``."""
    emb = np.asarray(vectors, dtype=np.float32)
    n = len(emb)
    if pool_factor == 1 or n < 2:  # colpali-engine raises for one token; we keep it
        return emb
    distances = 1.0 - emb @ emb.T  # float32, as torch.mm then 1 - sim in colpali-engine
    labels = fcluster_maxclust(ward_linkage(distances), max(n // pool_factor, 1)) - 1
    pooled = []
    for cluster in range(int(labels.max()) + 1):
        members = emb[labels == cluster]
        if len(members):
            mean = members.mean(axis=0, dtype=np.float32)
            pooled.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
    return np.stack(pooled).astype(np.float32)


def pool_embedding(emb: Embedding, method: str, pool_factor: int | None) -> Embedding:
    """The pooled embedding as cached (rows_cols packed: see :func:`unpack`)."""
    if emb.vectors.ndim != 2:
        raise InvalidRequest(
            "pooling applies to multi-vector models only; this model returns one vector per input",
            param="pooling",
        )
    extras = dict(emb.extras)
    n = len(emb.vectors)
    if method == "hierarchical":
        pooled = hierarchical_pool(emb.vectors, int(pool_factor or 3))
        extras.pop("image_token_span", None)  # the pooled vectors are not tokens any more
        extras["pooled_from"] = n
        return replace(emb, vectors=pooled, extras=extras)
    grid, span = extras.get("image_grid"), extras.get("image_token_span")
    if grid is None or span is None:
        raise InvalidRequest(
            "pooling method 'rows_cols' needs an image (a page): this input has no image grid",
            param="pooling",
        )
    rows, cols = mean_pool_rows_columns(emb.vectors, grid, span)
    base = emb.vectors
    if pool_factor:  # the originals hierarchically pooled too; grid and span stay as computed
        base = hierarchical_pool(emb.vectors, int(pool_factor))
        extras["pooled_from"] = n
    packed = np.concatenate([base, unit_rows(rows), unit_rows(cols)])
    extras[_SPLIT] = [len(base), len(rows), len(cols)]
    return replace(emb, vectors=packed.astype(np.float32), extras=extras)


def unpack(emb: Embedding) -> Embedding:
    """A rows_cols embedding as returned: the original vectors, with the pooled ones as
    ``pooled_rows`` / ``pooled_columns`` extras (numpy; encoded like the embedding)."""
    split = emb.extras.get(_SPLIT)
    if split is None:
        return emb
    n, r, c = (int(x) for x in split)
    extras = {k: v for k, v in emb.extras.items() if k != _SPLIT}
    extras["pooled_rows"] = emb.vectors[n : n + r]
    extras["pooled_columns"] = emb.vectors[n + r : n + r + c]
    return replace(emb, vectors=emb.vectors[:n], extras=extras)
