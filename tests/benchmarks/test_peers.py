"""The peers the benchmarks measure Quanyu against must be right themselves: a weak peer makes a
ratio look good."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from benchmarks.matching import item_knn


def test_item_knn_ranks_what_buyers_of_the_same_items_bought_and_leaves_out_the_users_own():
    # items 0..3; users 0-2 bought 0 and 1 together, user 3 bought 2 and 3, user 4 bought only 0
    rows = [0, 0, 1, 1, 2, 2, 3, 3, 4]
    cols = [0, 1, 0, 1, 0, 1, 2, 3, 0]
    history = sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(5, 4))
    top = item_knn(history, np.array([4, 3]), k=2)
    assert top[0, 0] == 1  # bought with item 0 by three users
    assert 0 not in top[0]  # user 4's own item
    assert not set(top[1]) & {2, 3}
    # kept, an own item still does not score as its own neighbour: item 1 first
    assert item_knn(history, np.array([4]), k=1, exclude_own=False)[0, 0] == 1
