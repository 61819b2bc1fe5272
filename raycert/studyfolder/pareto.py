"""Pareto fronts: which points no other point beats in every objective (the trials table's
``pareto`` column), and the non-dominated sorting ranks a study's promotions and polish read."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pareto_mask(values: np.ndarray) -> np.ndarray:
    """Which rows of ``values`` (rows = points, columns = objectives to maximize) are undominated.

    A row is dominated when another row is >= in every column and > in one. Duplicates do not
    dominate each other, so all copies of a front point are on the front. Rows holding NaN are
    never on the front and dominate nothing. Two objectives take an O(n log n) sweep; more fall
    back to pairwise comparison.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 2:
        raise ValueError(f"expected a 2-d array of points, got shape {values.shape}")
    mask = np.zeros(len(values), dtype=bool)
    finite = ~np.isnan(values).any(axis=1)
    points = values[finite]
    if values.shape[1] == 2:
        on_front = _sweep_2d(points)
    else:
        on_front = np.array(
            [not ((points >= p).all(1) & (points > p).any(1)).any() for p in points], dtype=bool
        )
    mask[np.flatnonzero(finite)] = on_front
    return mask


def _sweep_2d(points: np.ndarray) -> np.ndarray:
    """Front of 2-d points: by first column descending, keep what beats every higher one."""
    on_front = np.zeros(len(points), dtype=bool)
    order = np.lexsort((-points[:, 1], -points[:, 0]))
    best_second = -np.inf  # best second column among points with a strictly greater first
    i = 0
    while i < len(order):
        first = points[order[i], 0]
        j = i
        while j < len(order) and points[order[j], 0] == first:
            j += 1
        group = order[i:j]  # equal first column, second column descending
        top = points[group[0], 1]
        if top > best_second:
            on_front[group[points[group, 1] == top]] = True
            best_second = top
        i = j
    return on_front


def pareto_ranks(points: Sequence[Sequence[float]]) -> list[int]:
    """Non-dominated sorting rank of each point (objectives to maximize), by ``pareto_mask``: 0
    for the front, 1 for the front of the rest, and so on; -1 for a point holding NaN."""
    values = np.asarray(points, dtype=float)
    ranks = np.full(len(values), -1)
    if not len(values):
        return []
    left = np.flatnonzero(~np.isnan(values).any(axis=1))
    rank = 0
    while len(left):
        front = pareto_mask(values[left])
        ranks[left[front]] = rank
        left = left[~front]
        rank += 1
    return ranks.tolist()
