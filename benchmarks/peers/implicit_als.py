"""Peer for `quanyu bench matching`: implicit's alternating least squares on the same split.
Runs in .venv-peers (implicit stays out of the main environment).

Usage: python implicit_als.py INSTANCE.npz OUT.npz
INSTANCE: `rows`, `cols`, `values` (member × item purchase lines up to the cutoff), `shape`,
`members` (positions to recommend for), `k`, `allowed` (items that may be recommended),
optionally `exclude_own` (leave out each member's own items), and the ALS settings `factors`, `iterations`, `regularization`, `alpha`. OUT: `items` (len(members) × k),
`fit_seconds`, `recommend_seconds`."""

from __future__ import annotations

import sys
import time

import numpy as np
from scipy import sparse
from threadpoolctl import threadpool_limits


def main(instance: str, out: str) -> None:
    data = np.load(instance)
    matrix = sparse.csr_matrix((data["values"], (data["rows"], data["cols"])), shape=tuple(data["shape"]))
    from implicit.als import AlternatingLeastSquares

    model = AlternatingLeastSquares(factors=int(data["factors"]), iterations=int(data["iterations"]),
                                    regularization=float(data["regularization"]), alpha=float(data["alpha"]),
                                    random_state=1)
    with threadpool_limits(1, "blas"):
        started = time.perf_counter()
        model.fit(matrix, show_progress=False)
        fit_seconds = time.perf_counter() - started
        members = data["members"]
        k = int(data["k"])
        blocked = np.flatnonzero(~data["allowed"])
        started = time.perf_counter()
        exclude_own = bool(data["exclude_own"]) if "exclude_own" in data.files else False
        items, _ = model.recommend(members, matrix[members], N=k, filter_already_liked_items=exclude_own,
                                   items=np.flatnonzero(data["allowed"]))
        recommend_seconds = time.perf_counter() - started
    assert not np.isin(items, blocked).any()
    np.savez(out, items=items, fit_seconds=fit_seconds, recommend_seconds=recommend_seconds)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
