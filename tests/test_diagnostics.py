"""The diagnostics checks on draws with known behaviour and on a real under-tuned fit."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from robustscope.diagnostics import check_fit, summarize
from robustscope.fit import fit
from robustscope.simulate import simulate_location_scale


def _tree(posterior: dict[str, np.ndarray], diverging: np.ndarray, energy: np.ndarray) -> xr.DataTree:
    chains, draws = diverging.shape
    coords = {"chain": np.arange(chains), "draw": np.arange(draws)}
    post = xr.Dataset({name: (("chain", "draw"), values) for name, values in posterior.items()}, coords=coords)
    stats = xr.Dataset({"diverging": (("chain", "draw"), diverging), "energy": (("chain", "draw"), energy)}, coords=coords)
    return xr.DataTree.from_dict({"posterior": post, "sample_stats": stats})


def test_mixed_chains_pass():
    rng = np.random.default_rng(0)
    shape = (4, 1000)
    tree = _tree({"theta": rng.normal(size=shape)}, np.zeros(shape, bool), rng.normal(size=shape))
    checks = check_fit(tree).set_index("check")
    assert checks.loc["r_hat_max", "status"] == "passed"
    assert checks.loc["ess_bulk_min", "status"] == "passed"
    assert checks.loc["divergences", "status"] == "passed"
    assert summarize(check_fit(tree))["passed"]


def test_disagreeing_chains_fail():
    rng = np.random.default_rng(1)
    shape = (4, 500)
    values = rng.normal(size=shape) + np.array([0.0, 0.0, 3.0, 3.0])[:, None]
    diverging = np.zeros(shape, bool)
    diverging[0, :3] = True
    tree = _tree({"theta": values}, diverging, rng.normal(size=shape))
    checks = check_fit(tree).set_index("check")
    assert checks.loc["r_hat_max", "status"] == "failed"
    assert checks.loc["r_hat_max", "detail"] == "theta"
    assert checks.loc["divergences", "value"] == 3
    assert checks.loc["divergences", "status"] == "failed"
    summary = summarize(check_fit(tree))
    assert not summary["passed"]
    assert "r_hat_max" in summary["failed_checks"]


def test_low_bfmi_fails():
    rng = np.random.default_rng(2)
    shape = (2, 1000)
    energy = np.cumsum(rng.normal(size=shape), axis=1)
    tree = _tree({"theta": rng.normal(size=shape)}, np.zeros(shape, bool), energy)
    checks = check_fit(tree).set_index("check")
    assert checks.loc["bfmi_min", "status"] == "failed"


@pytest.mark.slow
def test_under_tuned_real_fit_fails():
    ds, _ = simulate_location_scale(models=5, tasks=5, perturbations=10, seed=4)
    trace = fit(ds, "location-scale-fast", chains=2, tune=5, draws=30, seed=1, progress=False)
    summary = summarize(check_fit(trace))
    assert not summary["passed"]
    assert summary["failed_checks"]


def _worst_by_arviz(posterior: xr.Dataset, statistic: str) -> tuple[float, str]:
    """The worst value and variable as check_fit computed them before screening: ArviZ on every element."""
    import arviz as az

    from robustscope.diagnostics import _parameter_names, _worst

    names = _parameter_names(posterior)
    if statistic == "r_hat":
        return _worst(az.rhat(posterior[names]), largest=True)
    return _worst(az.ess(posterior[names], method=statistic.removeprefix("ess_")), largest=False)


def _screening_posterior(seed: int, chains: int = 4, draws: int = 101) -> xr.Dataset:
    """Draws with autocorrelated, stuck, constant, shifted and missing elements, over several variables."""
    rng = np.random.default_rng(seed)
    shape = (chains, draws)
    noise = rng.normal(size=shape + (300,))
    autocorrelated = np.cumsum(rng.normal(size=shape + (40,)), axis=1) * 0.2 + rng.normal(size=shape + (40,))
    pairs = rng.normal(size=shape + (60,))
    pairs[1, 40:, 5] = pairs[1, 40, 5]  # a chain stuck for its second half
    pairs[:, :, 7] = 2.5  # a constant element
    pairs[chains - 1, :, 9] += 4.0  # one chain away from the others
    pairs[0, 10, 11] = np.nan  # a missing draw
    coords = {"chain": np.arange(chains), "draw": np.arange(draws)}
    return xr.Dataset(
        {
            "theta": (("chain", "draw"), rng.normal(size=shape)),
            "noise": (("chain", "draw", "element"), noise),
            "walk": (("chain", "draw", "model", "task"), autocorrelated.reshape(shape + (8, 5))),
            "pair_effect": (("chain", "draw", "pair"), pairs),
            "share_model": (("chain", "draw"), rng.uniform(size=shape)),
        },
        coords=coords,
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("statistic", ["r_hat", "ess_bulk", "ess_tail"])
def test_screened_worst_equals_arviz(seed, statistic):
    from robustscope.diagnostics import _parameter_names, _screened_worst

    posterior = _screening_posterior(seed)
    screened = _screened_worst(posterior, _parameter_names(posterior), statistic)
    assert screened == _worst_by_arviz(posterior, statistic)


@pytest.mark.parametrize("statistic", ["r_hat", "ess_bulk", "ess_tail"])
def test_screened_worst_even_draws_two_chains(statistic):
    from robustscope.diagnostics import _parameter_names, _screened_worst

    posterior = _screening_posterior(3, chains=2, draws=64)
    assert _screened_worst(posterior, _parameter_names(posterior), statistic) == _worst_by_arviz(posterior, statistic)


def test_screen_matches_arviz_per_element():
    import arviz as az

    from robustscope.diagnostics import _element_draws, _screen_ess, _screen_rhat

    posterior = _screening_posterior(4).drop_vars(["pair_effect"])
    for name in ("noise", "walk"):
        draws = _element_draws(posterior[name])
        reference = posterior[[name]]
        np.testing.assert_allclose(_screen_rhat(draws), np.ravel(az.rhat(reference)[name].values), rtol=1e-12)
        for method in ("bulk", "tail"):
            screened, _ = _screen_ess(draws, method)
            np.testing.assert_allclose(screened, np.ravel(az.ess(reference, method=method)[name].values), rtol=1e-10)


def test_check_fit_one_chain_uses_arviz():
    rng = np.random.default_rng(5)
    shape = (1, 400)
    tree = _tree({"theta": rng.normal(size=shape)}, np.zeros(shape, bool), rng.normal(size=shape))
    checks = check_fit(tree).set_index("check")
    assert checks.loc["ess_bulk_min", "detail"] == "theta"


def test_stored_psis_loo_gives_the_same_pareto_check_as_recomputing():
    import importlib.util
    from pathlib import Path

    from robustscope.loo import add_pointwise_elpd

    location = Path(__file__).parent / "report" / "fake_fits.py"
    module_spec = importlib.util.spec_from_file_location("fake_fits", location)
    fake_fits = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(fake_fits)
    trace = fake_fits.fake_fit(models=6, tasks=5, pairs_per_model=4, seed=3)
    recomputed = check_fit(trace).set_index("check").loc["pareto_k_max"]
    add_pointwise_elpd(trace)
    stored = check_fit(trace).set_index("check").loc["pareto_k_max"]
    assert stored["value"] == pytest.approx(recomputed["value"])
    assert stored["detail"] == recomputed["detail"]
    assert stored["status"] == recomputed["status"]
