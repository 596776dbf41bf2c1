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
