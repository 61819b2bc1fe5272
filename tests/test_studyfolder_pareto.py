"""The Pareto sweep agrees with brute force, including ties, duplicates and NaN."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from raycert.studyfolder import pareto_front, pareto_mask


def brute_force(values: np.ndarray) -> np.ndarray:
    result = []
    for i, p in enumerate(values):
        if np.isnan(p).any():
            result.append(False)
            continue
        dominated = any(
            not np.isnan(q).any() and (q >= p).all() and (q > p).any()
            for j, q in enumerate(values)
            if j != i
        )
        result.append(not dominated)
    return np.array(result, dtype=bool)


# Few distinct values make ties and duplicates common; NaN appears too.
coordinate = st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0, float("nan")])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(coordinate, coordinate), min_size=0, max_size=30))
def test_two_objectives_match_brute_force(points):
    values = np.array(points, dtype=float).reshape(-1, 2)
    np.testing.assert_array_equal(pareto_mask(values), brute_force(values))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(coordinate, coordinate, coordinate), min_size=1, max_size=20))
def test_three_objectives_match_brute_force(points):
    values = np.array(points, dtype=float)
    np.testing.assert_array_equal(pareto_mask(values), brute_force(values))


def test_random_continuous_points_match_brute_force():
    rng = np.random.default_rng(0)
    values = rng.random((400, 2))
    np.testing.assert_array_equal(pareto_mask(values), brute_force(values))


def test_front_of_a_frame_is_sorted_and_keeps_duplicates():
    trials = pd.DataFrame(
        {
            "clean_acc": [0.9, 0.8, 0.8, 0.7, 0.95, 0.9, np.nan],
            "acr": [0.1, 0.3, 0.3, 0.2, 0.05, 0.1, 0.9],
        }
    )
    front = pareto_front(trials)
    assert front.index.tolist() == [1, 2, 0, 5, 4]
    assert pareto_front(trials.iloc[:0]).empty
