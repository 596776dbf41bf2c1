"""PSIS-LOO comparison: the ranking direction, the stored pointwise values, and nested fits."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from robustscope.errors import RobustscopeError
from robustscope.loo import add_pointwise_elpd, good_k_threshold, loo_compare, nested_specs
from robustscope.specs import load_spec
from robustscope.simulate import LocationScaleTruth, simulate_location_scale
from robustscope.sweep import sweep


def _normal_fit(offset: float, y: np.ndarray, seed: int, tensor_hash: str = "same", shift: float = 0.0) -> xr.DataTree:
    """A fit whose predictive distribution for every unit is Normal(mean draw + offset, 1), log density plus ``shift``."""
    rng = np.random.default_rng(seed)
    mean = rng.normal(0.0, 0.05, (2, 500, 1)) + offset
    loglik = -0.5 * np.log(2 * np.pi) - 0.5 * (y[None, None, :] - mean) ** 2 + shift
    tree = xr.DataTree.from_dict(
        {
            "posterior": xr.Dataset({"m": (("chain", "draw"), mean[..., 0])}),
            "log_likelihood": xr.Dataset({"n_correct": (("chain", "draw", "pair"), loglik)}, coords={"pair": [f"p{i}" for i in range(len(y))]}),
        }
    )
    tree.attrs["tensor_hash"] = tensor_hash
    return tree


@pytest.fixture(scope="module")
def outcomes():
    return np.random.default_rng(0).normal(0.0, 1.0, 60)


def test_the_model_that_predicts_better_ranks_first(outcomes):
    ranking = loo_compare({"wrong": _normal_fit(1.5, outcomes, 1), "right": _normal_fit(0.0, outcomes, 2)})
    assert list(ranking.index) == ["right", "wrong"]
    assert ranking.loc["right", "elpd"] > ranking.loc["wrong", "elpd"]
    assert ranking.loc["right", "elpd_diff"] == 0.0
    assert ranking.loc["wrong", "elpd_diff"] < -2 * ranking.loc["wrong", "dse"]
    assert ranking.loc["right", "weight"] > 0.9
    assert list(ranking["rank"]) == [0, 1]


def test_stacking_weights_survive_large_negative_elpd(outcomes):
    # A pair of many cells has a log likelihood hundreds or thousands below
    # zero. The same constant added to every fit leaves the weights unchanged.
    plain = loo_compare({"wrong": _normal_fit(1.5, outcomes, 1), "right": _normal_fit(0.0, outcomes, 2)})
    shifted = loo_compare({"wrong": _normal_fit(1.5, outcomes, 1, shift=-1000.0), "right": _normal_fit(0.0, outcomes, 2, shift=-1000.0)})
    assert shifted.loc["right", "weight"] > 0.9
    assert shifted.loc["right", "weight"] == pytest.approx(plain.loc["right", "weight"], abs=1e-6)
    assert shifted["weight"].sum() == pytest.approx(1.0)


def test_stacking_weights_mix_complementary_fits():
    # The first fit predicts 60 units 3 nats better, the second the other 20.
    # With a = exp(-3), the optimum of 60 log(w + (1 - w) a) + 20 log(w a + 1 - w)
    # is w = (60 - 20 a) / (80 (1 - a)) = 0.776 for the first fit.
    y = np.random.default_rng(5).normal(0.0, 1.0, 80)
    first = _normal_fit(0.0, y, 1)
    second = _normal_fit(0.0, y, 2)
    first["log_likelihood"]["n_correct"] = first["log_likelihood"]["n_correct"] - 3.0 * (np.arange(80) >= 60)
    second["log_likelihood"]["n_correct"] = second["log_likelihood"]["n_correct"] - 3.0 * (np.arange(80) < 60)
    weights = loo_compare({"first": first, "second": second})["weight"]
    a = np.exp(-3.0)
    assert weights["first"] == pytest.approx((60 - 20 * a) / (80 * (1 - a)), abs=0.02)
    assert weights["second"] == pytest.approx(1 - weights["first"])


def test_pointwise_elpd_is_kept_and_sums_to_the_total(outcomes):
    tree = add_pointwise_elpd(_normal_fit(0.0, outcomes, 3))
    pointwise = tree["loo"].to_dataset()
    assert pointwise["elpd_loo"].sizes["pair"] == len(outcomes)
    assert np.isclose(float(pointwise["elpd_loo"].sum()), tree.attrs["loo_elpd"])
    assert tree.attrs["loo_good_k"] == pytest.approx(good_k_threshold(1000))
    assert tree.attrs["loo_units_above_good_k"] == int((pointwise["pareto_k"] > tree.attrs["loo_good_k"]).sum())


def test_threshold_depends_on_the_number_of_draws():
    assert good_k_threshold(100) == pytest.approx(0.5)
    assert good_k_threshold(10_000) == pytest.approx(0.7)


def test_fits_of_different_tensors_are_not_compared(outcomes):
    with pytest.raises(RobustscopeError, match="different tensor hashes"):
        loo_compare({"a": _normal_fit(0.0, outcomes, 1, "h1"), "b": _normal_fit(0.0, outcomes, 2, "h2")})


def test_nested_specs_change_only_the_scale_terms():
    specs = nested_specs("location-scale")
    assert sorted(specs) == sorted(["location-scale"] + [f"location-scale-{s}" for s in ("competence-only", "model-only", "neither")])
    assert specs["location-scale-neither"].scale_terms == ("task", "residual")
    assert {s.priors == specs["location-scale"].priors for s in specs.values()} == {True}
    assert specs["location-scale"] == load_spec("location-scale")


@pytest.mark.slow
def test_nested_comparison_prefers_model_identity_when_it_drives_robustness(tmp_path):
    truth = LocationScaleTruth(gamma1=0.0, sd_u=0.9, sd_v=0.2, sd_e=0.1)
    ds, _ = simulate_location_scale(models=8, tasks=6, perturbations=12, truth=truth, seed=21)
    result = sweep([ds], ["location-scale"], tmp_path, nested=True, compare_report=False, chains=2, draws=300, tune=300, progress=False)
    ranking = result["loo"]["simulated"]
    with_model = {"location-scale", "location-scale-model-only"}
    assert ranking.index[0] in with_model
    assert ranking.loc["location-scale-neither", "elpd"] < ranking.loc["location-scale-model-only", "elpd"]
    assert ranking.loc["location-scale-competence-only", "elpd"] < ranking.loc["location-scale-model-only", "elpd"]
    # A second run resumes: every fit is read back, none is refitted.
    again = sweep([ds], ["location-scale"], tmp_path, nested=True, compare_report=False, chains=2, draws=300, tune=300, progress=False)
    assert again["fits"]["reused"].all()
    for trace_file in (tmp_path / "fits").glob("*.nc"):
        assert trace_file.stat().st_size > 0
