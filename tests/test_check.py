"""Tests of the new-results check against a fitted model.

One real fit (fast specification) of 8 simulated models on 8 tasks. The
held-out models and tasks come from the same simulation, so they follow the
fitted generative process. An outlier model has its log spread raised by 2.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from robustscope import tensor as _tensor
from robustscope.check import LESS_ROBUST, check_and_refit, check_new, write_check_report
from robustscope.errors import InputError
from robustscope.fit import fit
from robustscope.simulate import LocationScaleTruth, simulate_location_scale

FIT_MODELS = 8
FIT_TASKS = 8
HELD_OUT_MODELS = 6
HELD_OUT_TASKS = 2
PERTURBATIONS = 30
N_EXAMPLES = 100


@pytest.fixture(scope="module")
def simulation():
    truth = LocationScaleTruth(gamma1=-0.5, sd_u=0.4, sd_v=0.3, sd_e=0.3)
    return simulate_location_scale(
        models=FIT_MODELS + HELD_OUT_MODELS,
        tasks=FIT_TASKS + HELD_OUT_TASKS,
        perturbations=PERTURBATIONS,
        n_examples=N_EXAMPLES,
        truth=truth,
        seed=21,
    )


def _labels(prefix: str, start: int, stop: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(start, stop)]


@pytest.fixture(scope="module")
def old_tensor(simulation):
    ds, _ = simulation
    return _tensor.validate(ds.sel(model=_labels("model", 0, FIT_MODELS), task=_labels("task", 0, FIT_TASKS)))


@pytest.fixture(scope="module")
def fitted(old_tensor):
    return fit(old_tensor, "location-scale-fast", chains=2, draws=200, tune=400, seed=7, progress=False)


@pytest.fixture(scope="module")
def held_out(simulation):
    ds, _ = simulation
    return _tensor.validate(ds.drop_sel(model=_labels("model", 0, FIT_MODELS)).sel(task=_labels("task", 0, FIT_TASKS)))


def _outlier_tensor(simulation, shift: float, seed: int):
    """Simulate the held-out models again with log sigma raised by ``shift`` on every task."""
    _, realised = simulation
    rng = np.random.default_rng(seed)
    rows = []
    for m in range(FIT_MODELS, FIT_MODELS + HELD_OUT_MODELS):
        for t in range(FIT_TASKS):
            mu = realised["mu"][m, t]
            sigma = np.exp(realised["log_sigma"][m, t] + shift)
            p = 1.0 / (1.0 + np.exp(-(mu + sigma * rng.standard_normal(PERTURBATIONS))))
            for c, k in enumerate(rng.binomial(N_EXAMPLES, p)):
                rows.append({"model": f"outlier{m}", "task": f"task{t}", "perturbation": f"p{c}", "n_correct": int(k), "n_total": N_EXAMPLES})
    return _tensor.from_counts(pd.DataFrame(rows), dataset="outliers", structure="crossed")


@pytest.fixture(scope="module")
def held_out_table(fitted, held_out):
    return check_new(fitted, held_out, seed=3)


@pytest.mark.slow
def test_table_has_one_row_per_pair(held_out_table):
    assert len(held_out_table) == HELD_OUT_MODELS * FIT_TASKS
    assert set(held_out_table["kind"]) == {"new model"}
    assert (held_out_table["predicted_lower"] <= held_out_table["predicted_median"]).all()
    assert (held_out_table["predicted_median"] <= held_out_table["predicted_upper"]).all()
    assert held_out_table["percentile"].between(0, 1).all()


@pytest.mark.slow
def test_observed_spread_matches_fit_statistic(held_out_table, held_out):
    cells = _tensor.observed_cells(held_out)
    first = cells.loc[(cells["model"] == "model8") & (cells["task"] == "task0"), "accuracy"]
    row = held_out_table.loc[(held_out_table["model"] == "model8") & (held_out_table["task"] == "task0")].iloc[0]
    assert row["observed_spread"] == pytest.approx(first.std(ddof=1))
    assert row["observed_accuracy"] == pytest.approx(first.mean())


@pytest.mark.slow
def test_held_out_models_rarely_flagged(held_out_table):
    # About 11% are expected, and 48 pairs correlated within a model leave room for chance.
    share = held_out_table["outside"].mean()
    assert share <= 0.25, held_out_table[["model", "task", "observed_spread", "predicted_lower", "predicted_upper"]]


@pytest.mark.slow
def test_large_identity_effect_flagged(fitted, simulation):
    table = check_new(fitted, _outlier_tensor(simulation, shift=2.0, seed=5), seed=3)
    assert table["outside"].mean() >= 0.75
    flagged = table.loc[table["outside"]]
    assert (flagged["direction"] == LESS_ROBUST).all()


@pytest.mark.slow
def test_unshifted_outlier_simulation_not_flagged(fitted, simulation):
    # The same simulation without the shift: the outlier test above fails for the shift, not the simulation code.
    table = check_new(fitted, _outlier_tensor(simulation, shift=0.0, seed=5), seed=3)
    assert table["outside"].mean() <= 0.25


@pytest.mark.slow
def test_new_tasks_and_both_new(fitted, simulation):
    ds, _ = simulation
    new = _tensor.validate(ds.sel(task=_labels("task", FIT_TASKS, FIT_TASKS + HELD_OUT_TASKS)))
    table = check_new(fitted, new, seed=3, draws=150)
    kinds = table.groupby("kind").size().to_dict()
    assert kinds == {"new task": FIT_MODELS * HELD_OUT_TASKS, "new model and task": HELD_OUT_MODELS * HELD_OUT_TASKS}
    assert table.attrs["draws"] == 150
    assert table["outside"].mean() <= 0.3


@pytest.mark.slow
def test_check_is_reproducible(fitted, held_out):
    first = check_new(fitted, held_out, seed=11)
    second = check_new(fitted, held_out, seed=11)
    pd.testing.assert_frame_equal(first, second)


@pytest.mark.slow
def test_report_files(fitted, held_out_table, tmp_path):
    payload = write_check_report(held_out_table, tmp_path, fit=fitted)
    for name in ("check.html", "check.md", "check.json", "figures/check.png"):
        assert (tmp_path / name).is_file(), name
    stored = json.loads((tmp_path / "check.json").read_text())
    assert stored["flagged"] == int(held_out_table["outside"].sum())
    assert len(stored["rows"]) == len(held_out_table)
    assert payload["expected_share_outside"] == pytest.approx(0.11)
    page = (tmp_path / "check.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*['"]?\s*(https?:)?//""", page)
    assert "data:image/png;base64," in page
    assert "posterior predictive interval" in (tmp_path / "check.md").read_text()


@pytest.mark.slow
def test_report_marks_outlier_model(fitted, simulation, tmp_path):
    table = check_new(fitted, _outlier_tensor(simulation, shift=2.0, seed=5), seed=3)
    write_check_report(table, tmp_path)
    markdown = (tmp_path / "check.md").read_text()
    assert "model identity effect" in markdown
    assert LESS_ROBUST in markdown


def test_check_rejects_bad_probability(tmp_path):
    with pytest.raises(InputError, match="strictly between 0 and 1"):
        check_new(tmp_path / "missing.nc", None, prob=1.5)


@pytest.mark.slow
def test_check_and_refit_writes_comparison(fitted, old_tensor, held_out, tmp_path):
    new = held_out.sel(model=_labels("model", FIT_MODELS, FIT_MODELS + 2))
    result = check_and_refit(fitted, old_tensor, new, tmp_path, spec="location-scale-fast", chains=2, draws=100, tune=200, seed=1, progress=False)
    assert (tmp_path / "check" / "check.md").is_file()
    assert (tmp_path / "posterior.nc").is_file()
    assert (tmp_path / "compare" / "compare.html").is_file()
    assert result["refit"]["constant_data"].sizes["model"] == FIT_MODELS + 2
    assert [fit["label"] for fit in result["comparison"]["fits"]] == ["before", "after"]
    assert result["comparison"]["loo"] == []
    assert len(result["comparison"]["shared_models"]["models"]) == FIT_MODELS


@pytest.mark.slow
def test_check_and_refit_rejects_wrong_tensor(fitted, held_out, tmp_path):
    with pytest.raises(InputError, match="tensor hashes differ"):
        check_and_refit(fitted, held_out, held_out, tmp_path)
