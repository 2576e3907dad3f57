"""Peer for `quanyu bench location`: spopt's maximal covering location problem solved exactly by
PuLP's CBC. Runs in .venv-peers (spopt and its geopandas stack stay out of the main environment).

Usage: python spopt_mclp.py INSTANCE.npz OUT.json
INSTANCE holds `xy` (n × 2 km), `weight` (n), `radius`, `k`, `feasible` (n booleans): every
site is a demand point; feasible sites are candidate facilities."""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pulp
from scipy.spatial import distance_matrix
from spopt.locate import MCLP


def main(instance: str, out: str) -> None:
    data = np.load(instance)
    xy, weight, radius, k = data["xy"], data["weight"], float(data["radius"]), int(data["k"])
    facilities = np.flatnonzero(data["feasible"])
    started = time.perf_counter()
    cost = distance_matrix(xy, xy[facilities])
    model = MCLP.from_cost_matrix(cost, weight, service_radius=radius, p_facilities=k, name="quanyu-bench")
    built = time.perf_counter() - started
    model.solve(pulp.PULP_CBC_CMD(msg=False))
    chosen = [int(facilities[j]) for j, var in enumerate(model.fac_vars) if var.value() and var.value() > 0.5]
    covered = (cost[:, [list(facilities).index(c) for c in chosen]] <= radius).any(axis=1)
    json.dump({"picks": chosen, "covered_weight": float(weight[covered].sum()), "build_seconds": round(built, 3),
               "seconds": round(time.perf_counter() - started, 3),
               "status": pulp.LpStatus[model.problem.status]}, open(out, "w"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
