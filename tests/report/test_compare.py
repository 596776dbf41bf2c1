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
from robustscope.fit import LOGLIK_VARIABLE, fit
from robustscope.report.compare import compare, probability_greater
from robustscope.simulate import LocationScaleTruth, simulate_location_scale

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


def _fake_fit(models: int, tasks: int, pairs_per_model: int, seed: int, chains: int = 2, draws: int = 50) -> xr.DataTree:
    """Build a DataTree with a fit's layout from random draws (no sampling)."""
    rng = np.random.default_rng(seed)
    model_labels = [f"m{i}" for i in range(models)]
    task_labels = [f"t{j}" for j in range(tasks)]
    pair_model = np.repeat(np.arange(models), pairs_per_model)
    pair_task = np.concatenate([rng.choice(tasks, pairs_per_model, replace=False) for _ in range(models)])
    n_pairs = len(pair_model)
    pair_labels = [f"{model_labels[m]} | {task_labels[t]}" for m, t in zip(pair_model, pair_task, strict=True)]
    shape = (chains, draws)

    def draws_of(*extra: int, scale: float = 1.0, loc: float = 0.0) -> np.ndarray:
        return loc + scale * rng.standard_normal(shape + extra)

    u = draws_of(models, scale=0.3)
    v = draws_of(tasks, scale=0.3)
    mu = draws_of(n_pairs, scale=0.05) + rng.normal(0.0, 1.0, n_pairs)
    gamma0 = draws_of(scale=0.05, loc=-1.0)
    gamma1 = draws_of(scale=0.05, loc=-0.4)
    log_sigma = gamma0[..., None] + gamma1[..., None] * mu + u[..., pair_model] + v[..., pair_task] + draws_of(n_pairs, scale=0.1)
    shares = rng.dirichlet([4, 2, 2, 1], size=shape)
    coords = {"chain": np.arange(chains), "draw": np.arange(draws)}
    posterior = xr.Dataset(
        {
            "alpha": (("chain", "draw"), draws_of(scale=0.05)),
            "gamma0": (("chain", "draw"), gamma0),
            "gamma1": (("chain", "draw"), gamma1),
            "sd_u": (("chain", "draw"), np.abs(draws_of(scale=0.05, loc=0.3))),
            "sd_v": (("chain", "draw"), np.abs(draws_of(scale=0.05, loc=0.3))),
            "sd_e": (("chain", "draw"), np.abs(draws_of(scale=0.02, loc=0.1))),
            "u_model": (("chain", "draw", "model"), u),
            "v_task": (("chain", "draw", "task"), v),
            "mu": (("chain", "draw", "pair"), mu),
            "log_sigma": (("chain", "draw", "pair"), log_sigma),
            "share_competence": (("chain", "draw"), shares[..., 0]),
            "share_model": (("chain", "draw"), shares[..., 1]),
            "share_task": (("chain", "draw"), shares[..., 2]),
            "share_residual": (("chain", "draw"), shares[..., 3]),
            "bayes_r2": (("chain", "draw"), 1.0 - shares[..., 3]),
        },
        coords={**coords, "model": model_labels, "task": task_labels, "pair": pair_labels},
    )
    sample_stats = xr.Dataset(
        {"diverging": (("chain", "draw"), np.zeros(shape, dtype=bool)), "energy": (("chain", "draw"), draws_of(scale=3.0, loc=100.0))},
        coords=coords,
    )
    loglik = xr.DataArray(draws_of(n_pairs, scale=0.3, loc=-5.0), dims=("chain", "draw", "pair"), coords={**coords, "pair": pair_labels})
    observed = np.abs(rng.normal(0.05, 0.02, n_pairs))
    replicated = np.abs(observed + 0.02 * rng.standard_normal((1, 200, n_pairs)))
    tree = xr.DataTree.from_dict(
        {
            "posterior": posterior,
            "sample_stats": sample_stats,
            "log_likelihood": xr.Dataset({LOGLIK_VARIABLE: loglik}),
            "posterior_predictive": xr.Dataset({"spread": (("chain", "draw", "pair"), replicated)}, coords={"pair": pair_labels}),
            "observed_data": xr.Dataset({"spread": ("pair", observed)}, coords={"pair": pair_labels}),
            "constant_data": xr.Dataset(
                {
                    "pair_model": ("pair", pair_model),
                    "pair_task": ("pair", pair_task),
                    "pair_perturbations": ("pair", np.full(n_pairs, 10)),
                    "pair_accuracy": ("pair", rng.uniform(0, 1, n_pairs)),
                    "pair_empirical_logit": ("pair", mu.mean((0, 1))),
                },
                coords={"pair": pair_labels, "model": model_labels, "task": task_labels},
            ),
        }
    )
    tree.attrs.update(
        {
            "dataset": f"fake-{seed}",
            "metric": "accuracy",
            "tensor_hash": f"fake{seed}",
            "spec_name": "location-scale",
            "spec": json.dumps({"name": "location-scale"}),
            "sampler": "none",
            "seed": seed,
            "chains": chains,
            "draws": draws,
            "tune": 0,
            "competence_center": 0.0,
            "versions": json.dumps({"robustscope": "test"}),
            "timings": "{}",
            "manifest": "{}",
            "caveat": "",
        }
    )
    return tree


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
