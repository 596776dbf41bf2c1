"""Tests of the new-results check against a fitted model.

One real fit (fast specification) of 8 simulated models on 8 tasks. The
held-out models and tasks come from the same simulation, so they follow the
fitted generative process. An outlier model has its log spread raised by 2.
"""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pandas as pd
import pytest

from robustscope import tensor as _tensor
from robustscope.check import IN_FIT, KIND_IN_FIT, LESS_ROBUST, check_and_refit, check_new, summarize_check, write_check_report
from robustscope.errors import InputError
from robustscope.fit import fit
from robustscope.simulate import LocationScaleTruth, simulate_location_scale
import xarray as xr

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


def _synthetic_fit(ds, fitted_pairs, draws: int = 200, seed: int = 0) -> xr.DataTree:
    """Build a fit-shaped DataTree over ``ds``'s models and tasks with draws near the simulation's truth.

    ``fitted_pairs`` lists the (model index, task index) pairs the fit
    records as fitted. The draws are random, not sampled, so these tests
    check the bookkeeping of the check, not the quality of a posterior.
    """
    rng = np.random.default_rng(seed)
    models = [str(m) for m in ds["model"].values]
    tasks = [str(t) for t in ds["task"].values]
    pair_model = np.array([m for m, _ in fitted_pairs])
    pair_task = np.array([t for _, t in fitted_pairs])
    shape = (1, draws)
    posterior = xr.Dataset(
        {
            "gamma0": (("chain", "draw"), rng.normal(-1.0, 0.05, shape)),
            "gamma1": (("chain", "draw"), rng.normal(-0.5, 0.05, shape)),
            "sd_u": (("chain", "draw"), np.abs(rng.normal(0.4, 0.05, shape))),
            "sd_v": (("chain", "draw"), np.abs(rng.normal(0.3, 0.05, shape))),
            "sd_e": (("chain", "draw"), np.abs(rng.normal(0.3, 0.05, shape))),
            "u_model": (("chain", "draw", "model"), rng.normal(0.0, 0.3, shape + (len(models),))),
            "v_task": (("chain", "draw", "task"), rng.normal(0.0, 0.3, shape + (len(tasks),))),
        },
        coords={"chain": [0], "draw": np.arange(draws), "model": models, "task": tasks},
    )
    constant = xr.Dataset(
        {"pair_model": ("pair", pair_model), "pair_task": ("pair", pair_task)},
        coords={"pair": np.arange(len(pair_model)), "model": models, "task": tasks},
    )
    tree = xr.DataTree.from_dict({"posterior": posterior, "constant_data": constant})
    tree.attrs.update({"dataset": "synthetic", "spec_name": "location-scale", "competence_center": -1.0, "tensor_hash": "synthetic"})
    return tree


@pytest.fixture(scope="module")
def small_simulation():
    ds, _ = simulate_location_scale(models=4, tasks=3, perturbations=10, seed=5)
    return ds


def test_pairs_in_fit_reported_separately(small_simulation, caplog, tmp_path):
    # The fit covers model0 and model1 on every task; model0's pairs come back in the "new" results.
    fitted_pairs = [(m, t) for m in range(2) for t in range(3)]
    trace = _synthetic_fit(small_simulation.sel(model=["model0", "model1"]), fitted_pairs)
    new = _tensor.validate(small_simulation.sel(model=["model0", "model2", "model3"]))
    with caplog.at_level(logging.WARNING, logger="robustscope.check"):
        table = check_new(trace, new, seed=1, draws=100)
    assert "3 of 9 pairs of the new results are already in the fit" in caplog.text

    in_fit = table.loc[table["model"] == "model0"]
    assert len(in_fit) == 3
    assert (in_fit["kind"] == KIND_IN_FIT).all()
    assert (in_fit["direction"] == IN_FIT).all()
    assert not in_fit["outside"].any()
    assert in_fit["predicted_median"].isna().all()
    assert in_fit["percentile"].isna().all()

    new_rows = table.loc[table["model"] != "model0"]
    assert set(new_rows["kind"]) == {"new model"}
    assert new_rows["predicted_median"].notna().all()

    summary = summarize_check(table)
    assert summary["checked"] == 6
    assert summary["already_in_fit"] == 3
    assert summary["not_checked"] == 0
    assert summary["already_in_fit_pairs"] == ["model0 | task0", "model0 | task1", "model0 | task2"]
    assert summary["pairs_by_kind"] == {"new model": 6}

    write_check_report(table, tmp_path)
    markdown = (tmp_path / "check.md").read_text()
    assert "3 pairs of the new results are already in the fit" in markdown
    assert "## Pairs already in the fit, not checked" in markdown
    assert "of 6 new (model, task) pairs" in markdown
    assert "Pairs already in the fit" in (tmp_path / "check.html").read_text()


def test_known_model_and_task_not_in_fit_is_checked(small_simulation):
    # model0 and task2 are both in the fit, but the pair (model0, task2) is not.
    fitted_pairs = [(0, 0), (0, 1), (1, 2)]
    trace = _synthetic_fit(small_simulation, fitted_pairs)
    new = _tensor.validate(small_simulation.sel(model=["model0"], task=["task2"]))
    table = check_new(trace, new, seed=1, draws=50)
    assert table["kind"].tolist() == ["known model and task"]
    assert table["direction"].iloc[0] != IN_FIT


def test_only_pairs_in_fit_checks_nothing(small_simulation, tmp_path):
    trace = _synthetic_fit(small_simulation, [(m, t) for m in range(4) for t in range(3)])
    table = check_new(trace, small_simulation, seed=1, draws=50)
    assert (table["direction"] == IN_FIT).all()
    payload = write_check_report(table, tmp_path)
    assert payload["checked"] == 0
    assert payload["already_in_fit"] == 12
    assert "No new (model, task) pair was checked." in (tmp_path / "check.md").read_text()


def _renamed(ds, models: dict[str, str] | None = None, tasks: dict[str, str] | None = None):
    renamed = ds
    if models:
        renamed = renamed.assign_coords(model=[models.get(str(m), str(m)) for m in renamed["model"].values])
    if tasks:
        renamed = renamed.assign_coords(task=[tasks.get(str(t), str(t)) for t in renamed["task"].values])
    return _tensor.validate(renamed)


def test_no_shared_task_for_new_models_rejected(small_simulation):
    trace = _synthetic_fit(small_simulation.sel(model=["model0", "model1"]), [(0, 0), (1, 1)])
    new = _renamed(
        small_simulation.sel(model=["model2", "model3"]),
        tasks={"task0": "Task0", "task1": "Task1", "task2": "Task2"},
    )
    with pytest.raises(InputError, match="share no model and no task with the fit") as caught:
        check_new(trace, new, seed=1, draws=50)
    message = str(caught.value)
    assert "'model2', 'model3'" in message
    assert "'Task0', 'Task1', 'Task2'" in message
    assert "fit tasks: 'task0', 'task1', 'task2'" in message


def test_no_shared_model_for_new_tasks_rejected(small_simulation):
    trace = _synthetic_fit(small_simulation.sel(task=["task0", "task1"]), [(0, 0), (1, 1)])
    new = _renamed(small_simulation.sel(task=["task2"]), models={f"model{i}": f"other{i}" for i in range(4)})
    with pytest.raises(InputError, match="share no model and no task with the fit") as caught:
        check_new(trace, new, seed=1, draws=50)
    message = str(caught.value)
    assert "'other0', 'other1', 'other2', 'other3'" in message
    assert "'task2'" in message
    assert "fit models: 'model0', 'model1', 'model2', 'model3'" in message


@pytest.mark.slow
def test_fitted_pairs_not_counted_as_new(fitted, simulation):
    ds, _ = simulation
    new = _tensor.validate(ds.sel(model=["model0", "model8"], task=_labels("task", 0, FIT_TASKS)))
    table = check_new(fitted, new, seed=3, draws=200)
    assert (table.loc[table["model"] == "model0", "direction"] == IN_FIT).all()
    assert set(table.loc[table["model"] == "model8", "kind"]) == {"new model"}
    assert summarize_check(table)["checked"] == FIT_TASKS
