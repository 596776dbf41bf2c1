"""Per-example metrics against values computed by hand on a tiny tensor.

Task t1 (K = 3 perturbations), scores and predictions per example:

    e1: 1 1 1  (A A A)   all correct, identical predictions
    e2: 0 0 0  (B C B)   all wrong, predictions differ
    e3: 1 0 1  (A B A)   mixed
    e4: 1 - 1            missing under p2, so excluded

Task t2 has only e5, answered 1 and 1 under p1 and p2 (K = 2).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from robustscope import tensor
from robustscope.errors import RobustscopeError
from robustscope.metrics.per_example import (
    complete_examples,
    correctness_consistency,
    output_consistency,
    performance_drop_rate,
    robustness_above_baseline,
    score_std,
    trivial_baseline,
)

ROWS = [
    ("e1", (1, 1, 1), ("A", "A", "A")),
    ("e2", (0, 0, 0), ("B", "C", "B")),
    ("e3", (1, 0, 1), ("A", "B", "A")),
    ("e4", (1, None, 1), ("A", None, "A")),
]


@pytest.fixture(scope="module")
def ds():
    records = []
    for example, scores, predictions in ROWS:
        for perturbation, score, prediction in zip(("p1", "p2", "p3"), scores, predictions, strict=True):
            if score is not None:
                records.append(("m", "t1", perturbation, example, float(score), prediction))
    records += [("m", "t2", "p1", "e5", 1.0, "D"), ("m", "t2", "p2", "e5", 1.0, "D")]
    frame = pd.DataFrame(records, columns=["model", "task", "perturbation", "example", "score", "prediction"])
    return tensor.from_examples(frame, dataset="tiny")


def value(result, name, task="t1"):
    return float(result[name].sel(model="m", task=task))


def test_complete_examples_counts(ds):
    complete, excluded, k = complete_examples(ds)
    assert complete.sel(model="m", task="t1").values.tolist() == [True, True, True, False, False]
    assert int(excluded.sel(model="m", task="t1")) == 1
    assert int(k.sel(model="m", task="t1")) == 3
    assert int(k.sel(model="m", task="t2")) == 2
    assert int(excluded.sel(model="m", task="t2")) == 0


def test_output_consistency(ds):
    result = output_consistency(ds)
    assert value(result, "consistency") == pytest.approx(1 / 3)
    assert value(result, "n_examples") == 3
    assert value(result, "n_excluded") == 1
    assert value(result, "consistency", "t2") == 1.0
    assert result["consistency"].dims == ("model", "task")


def test_correctness_consistency(ds):
    result = correctness_consistency(ds)
    assert value(result, "consistency") == pytest.approx(2 / 3)
    assert value(result, "all_correct") == pytest.approx(1 / 3)
    assert value(result, "all_wrong") == pytest.approx(1 / 3)


def test_score_std(ds):
    result = score_std(ds)
    assert value(result, "score_std") == pytest.approx(math.sqrt(2 / 9) / 3)
    assert value(result, "score_std", "t2") == 0.0


@pytest.mark.parametrize(
    ("variant", "outcome", "expected"),
    [
        ("pooled", "all_correct", 125 / 729),
        ("pooled", "consistent", 189 / 729),
        ("per_configuration", "all_correct", 4 / 27),
        ("per_configuration", "consistent", 6 / 27),
    ],
)
def test_trivial_baseline(ds, variant, outcome, expected):
    result = trivial_baseline(ds, variant=variant, outcome=outcome)
    assert value(result, "baseline") == pytest.approx(expected)
    assert value(result, "accuracy") == pytest.approx(5 / 9)


def test_robustness_above_baseline(ds):
    result = robustness_above_baseline(ds)
    assert value(result, "above_baseline") == pytest.approx(1 / 3 - 125 / 729)
    consistent = robustness_above_baseline(ds, variant="per_configuration", outcome="consistent")
    assert value(consistent, "above_baseline") == pytest.approx(2 / 3 - 6 / 27)


def test_performance_drop_rate(ds):
    result = performance_drop_rate(ds, default="p1")
    pdr = result["pdr"].sel(model="m", task="t1")
    assert float(pdr.sel(perturbation="p1")) == 0.0
    assert float(pdr.sel(perturbation="p2")) == pytest.approx(5 / 9)
    assert float(pdr.sel(perturbation="p3")) == pytest.approx(0.0)
    assert value(result, "pdr_mean") == pytest.approx(5 / 18)
    assert np.isnan(float(result["pdr"].sel(model="m", task="t2", perturbation="p3")))


def test_unknown_default_rejected(ds):
    with pytest.raises(RobustscopeError, match="'p9' not found"):
        performance_drop_rate(ds, default="p9")


def test_aggregated_tensor_rejected():
    frame = pd.DataFrame([("m", "t", "p", 1, 2)], columns=["model", "task", "perturbation", "n_correct", "n_total"])
    counts = tensor.from_counts(frame, dataset="x")
    with pytest.raises(RobustscopeError, match="no 'example' dimension"):
        output_consistency(counts)
    assert np.isnan(float(performance_drop_rate(counts, default="p")["pdr_mean"].sel(model="m", task="t")))
