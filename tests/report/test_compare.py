"""Tests of the side-by-side comparison of fits.

Three real fits of simulated data with the fast specification: A and F share
one tensor (F is sampled far too briefly to converge), B is simulated with
the opposite competence effect. A large fake posterior built directly with
xarray checks that big inputs render.
"""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
import xarray as xr

from robustscope.diagnostics import Thresholds
from robustscope.fit import fit
from robustscope.report.compare import compare, probability_greater
from robustscope.simulate import LocationScaleTruth, simulate_location_scale

from fake_fits import fake_fit as _fake_fit

# Thresholds that a 2 x 200-draw fit of well-identified data meets and a
# 2 x 20-draw fit cannot (its effective sample size stays below 50).
RELAXED = Thresholds(r_hat_max=1.1, ess_min=50.0, divergences_max=5, bfmi_min=0.2)
MODELS, TASKS, PERTURBATIONS = 10, 8, 30


@pytest.fixture(scope="module")
def data_a():
    truth = LocationScaleTruth(gamma1=-0.9, sd_e=0.4)
    ds, _ = simulate_location_scale(models=MODELS, tasks=TASKS, perturbations=PERTURBATIONS, truth=truth, seed=1)
    return ds


@pytest.fixture(scope="module")
def fit_a(data_a):
    return fit(data_a, "location-scale-fast", chains=2, draws=200, tune=400, seed=1, progress=False)


@pytest.fixture(scope="module")
def fit_b():
    truth = LocationScaleTruth(gamma1=0.6, sd_e=0.4)
    ds, _ = simulate_location_scale(models=MODELS, tasks=TASKS, perturbations=PERTURBATIONS, truth=truth, seed=2)
    return fit(ds, "location-scale-fast", chains=2, draws=200, tune=400, seed=2, progress=False)


@pytest.fixture(scope="module")
def fit_failed(data_a):
    return fit(data_a, "location-scale-fast", chains=2, draws=20, tune=5, seed=3, progress=False)


@pytest.fixture(scope="module")
def compared(fit_a, fit_b, fit_failed, tmp_path_factory):
    output = tmp_path_factory.mktemp("compare")
    summary = compare([fit_a, fit_b, fit_failed], output, labels=["A", "B", "F"], thresholds=RELAXED)
    return summary, output


def _difference(summary, quantity, first, second):
    for item in summary["differences"]:
        if item["quantity"] == quantity and item["first"] == first and item["second"] == second:
            return item
    raise AssertionError(f"no difference entry for {quantity} between {first} and {second}")


def test_probability_greater_pairs_at_random():
    rng = np.random.default_rng(0)
    first = rng.normal(1.0, 1.0, 4000)
    second = rng.normal(0.0, 1.0, 3000)
    p = probability_greater(first, second, np.random.default_rng(1))
    # P(X > Y) for X ~ N(1, 1), Y ~ N(0, 1) is Phi(1 / sqrt(2)) = 0.760.
    assert abs(p - 0.760) < 0.03


def test_probability_greater_counts_ties_half():
    values = np.zeros(100)
    assert probability_greater(values, values, np.random.default_rng(0)) == 0.5


@pytest.mark.slow
def test_gamma1_difference_from_draws(compared, fit_a, fit_b):
    summary, _ = compared
    entry = _difference(summary, "gamma1", "A", "B")
    assert entry["p_first_greater"] < 0.01
    assert entry["clear"]
    assert "P(gamma1 in A < gamma1 in B)" in entry["statement"]

    # The stated probability is the share of randomly paired draws, so it
    # matches a direct count up to Monte Carlo error.
    a = fit_a["posterior"]["gamma1"].values.ravel()
    b = fit_b["posterior"]["gamma1"].values.ravel()
    direct = np.mean(a[:, None] > b[None, :])
    assert abs(entry["p_first_greater"] - direct) < 0.02


@pytest.mark.slow
def test_statements_name_probabilities(compared):
    _, output = compared
    markdown = (output / "compare.md").read_text()
    assert "P(gamma1 in A < gamma1 in B)" in markdown
    assert "paired at random" in markdown
    assert "overlap" not in markdown.replace("not from interval overlap", "")


@pytest.mark.slow
def test_failed_fit_marked_at_top(compared):
    summary, output = compared
    assert "F" in summary["failed_fits"]
    assert "A" not in summary["failed_fits"]
    markdown = (output / "compare.md").read_text()
    banner = markdown.index("FITS THAT FAILED DIAGNOSTICS")
    assert banner < markdown.index("## Differences")
    assert "F (" in markdown[banner : markdown.index("## Differences")]
    page = (output / "compare.html").read_text()
    assert page.index("class='failed'") < page.index("<h2>Differences</h2>")


@pytest.mark.slow
def test_loo_only_for_same_tensor(compared):
    summary, output = compared
    assert len(summary["loo"]) == 1
    group = summary["loo"][0]
    assert group["fits"] == ["A", "F"]
    assert group["tensor_hash"] == summary["fits"][0]["tensor_hash"]
    assert "PSIS-LOO" in (output / "compare.md").read_text()
    row = next(r for r in group["loo"] if r["fit"] == "A")
    assert row["good_k"] > 0
    assert row["pairs"] == MODELS * TASKS


@pytest.mark.slow
def test_no_loo_for_different_data(fit_a, fit_b, tmp_path):
    summary = compare([fit_a, fit_b], tmp_path, labels=["A", "B"], thresholds=RELAXED)
    assert summary["loo"] == []
    markdown = (tmp_path / "compare.md").read_text()
    assert "## PSIS-LOO" not in markdown
    assert "No PSIS-LOO comparison" in markdown


@pytest.mark.slow
def test_shared_models_listed(compared):
    summary, _ = compared
    shared = summary["shared_models"]
    assert shared["models"] == [f"model{i}" for i in range(MODELS)]
    assert len(shared["pairwise"]) == 3
    for row in shared["rows"]:
        for label in ("A", "B", "F"):
            assert row[label]["lower"] <= row[label]["mean"] <= row[label]["upper"]


@pytest.mark.slow
def test_html_self_contained(compared):
    _, output = compared
    page = (output / "compare.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*['"]?\s*(https?:)?//""", page)
    assert "<script" not in page
    assert page.count("data:image/png;base64,") >= 5
    assert "@media print" in page
    for name in ("competence_curves", "variance_shares", "shared_model_effects", "spread_ppc", "traces_1"):
        assert (output / "figures" / f"{name}.png").stat().st_size > 1000


@pytest.mark.slow
def test_json_round_trips(compared):
    summary, output = compared
    stored = json.loads((output / "compare.json").read_text())
    assert stored["failed_fits"] == summary["failed_fits"]
    assert len(stored["fits"]) == 3
    assert stored["fits"][0]["counts"]["pairs"] == MODELS * TASKS


def test_compare_rejects_one_fit(tmp_path):
    from robustscope.errors import InputError

    with pytest.raises(InputError, match="at least two fits"):
        compare([xr.DataTree()], tmp_path)


@pytest.mark.slow
def test_large_fits_render(tmp_path):
    # 1,000 models x 500 tasks, each model observed on 3 tasks (3,000 pairs
    # per fit): the per-element R-hat and ESS of check_fit grow with pairs.
    first = _fake_fit(1000, 500, 3, seed=1)
    second = _fake_fit(1000, 500, 3, seed=2)
    start = time.perf_counter()
    summary = compare([first, second], tmp_path, labels=["first", "second"])
    elapsed = time.perf_counter() - start
    print(f"comparison of two fits with 1,000 models and 3,000 pairs each rendered in {elapsed:.1f} s")
    assert len(summary["shared_models"]["models"]) == 1000
    markdown = (tmp_path / "compare.md").read_text()
    assert "960 middle models hidden" in markdown
    assert (tmp_path / "compare.html").stat().st_size < 5_000_000


def _saved_fake_fit(path, dataset: str, seed: int):
    from robustscope.fit import save_posterior

    tree = _fake_fit(12, 6, 3, seed=seed)
    tree.attrs["dataset"] = dataset
    return save_posterior(tree, path)


@pytest.mark.slow
def test_default_labels_from_folders(tmp_path):
    paths = [
        _saved_fake_fit(tmp_path / "run-a" / "posterior.nc", "bench", seed=1),
        _saved_fake_fit(tmp_path / "run-b" / "posterior.nc", "bench", seed=2),
        _saved_fake_fit(tmp_path / "copy" / "run-a" / "posterior.nc", "bench", seed=3),
    ]
    other = _fake_fit(12, 6, 3, seed=4)
    other.attrs["dataset"] = "other"
    summary = compare([*paths, other], tmp_path / "out")
    labels = [record["label"] for record in summary["fits"]]
    assert labels[0] == "bench (location-scale) [run-a] #1"
    assert labels[1] == "bench (location-scale) [run-b]"
    assert labels[2] == "bench (location-scale) [run-a] #2"
    assert labels[3] == "other (location-scale)"
    markdown = (tmp_path / "out" / "compare.md").read_text()
    assert "bench (location-scale) [run-b]" in markdown


def test_default_labels_from_file_names():
    from robustscope.report.compare import _default_labels

    trees = []
    for spec in ("location-scale", "location-scale", "location-scale-fast"):
        tree = xr.DataTree()
        tree.attrs.update({"dataset": "bench", "spec_name": spec})
        trees.append(tree)
    labels = _default_labels(["runs/first.nc", "runs/second.nc", "runs/third.nc"], trees)
    assert labels == ["bench (location-scale) [first]", "bench (location-scale) [second]", "bench (location-scale-fast)"]


def test_default_labels_without_attributes():
    from robustscope.report.compare import _default_labels

    labels = _default_labels([xr.DataTree(), xr.DataTree()], [xr.DataTree(), xr.DataTree()])
    assert labels == ["fit (unknown specification) #1", "fit (unknown specification) #2"]


def test_fits_without_a_shared_model_compare(tmp_path):
    first = _fake_fit(models=4, tasks=5, pairs_per_model=3, seed=1)
    second = _fake_fit(models=3, tasks=5, pairs_per_model=3, seed=2)
    renamed = second["posterior"].to_dataset().assign_coords(model=[f"other{i}" for i in range(3)])
    second["posterior"] = xr.DataTree(renamed)
    second["constant_data"] = xr.DataTree(second["constant_data"].to_dataset().assign_coords(model=[f"other{i}" for i in range(3)]))
    result = compare([first, second], tmp_path, labels=["a", "b"])
    assert result["shared_models"]["models"] == []
    assert "share no model" in result["shared_models"]["note"]
    assert (tmp_path / "compare.html").exists()
