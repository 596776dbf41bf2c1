"""The location-scale model's data-based starting values for the sampler."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from robustscope import tensor as _tensor

from robustscope.models.location_scale import (
    build_model,
    initial_point,
    noncentered_pairs,
    noncentered_spread_effects,
    pair_log_spread,
    prepare_data,
    scale_information,
)
from robustscope.simulate import LocationScaleTruth, simulate_location_scale
from robustscope.specs import load_spec


@pytest.fixture(scope="module")
def simulated():
    truth = LocationScaleTruth(gamma1=-0.5, sd_u=0.4, sd_v=0.3, sd_e=0.3)
    ds, realised = simulate_location_scale(models=6, tasks=6, perturbations=120, truth=truth, seed=21)
    data = prepare_data(ds)
    return data, realised


def test_log_spread_tracks_simulation(simulated):
    data, realised = simulated
    true_log_sigma = realised["log_sigma"].ravel()[data.pair_model * len(data.tasks) + data.pair_task]
    estimate = pair_log_spread(data)
    # Pairs whose spread sits near the floor carry little information, so only the rest are compared.
    informative = true_log_sigma > np.log(0.2)
    assert informative.sum() >= 10
    assert np.corrcoef(estimate[informative], true_log_sigma[informative])[0, 1] > 0.8
    assert np.median(np.abs(estimate[informative] - true_log_sigma[informative])) < 0.3


def test_log_spread_has_floor():
    # m1 gives 40 of 100 under both perturbations of every task; m2 swings from 10 to 90.
    rows = []
    for task in ("t1", "t2"):
        for perturbation, k2 in (("p1", 10), ("p2", 90)):
            rows.append({"model": "m1", "task": task, "perturbation": perturbation, "n_correct": 40, "n_total": 100})
            rows.append({"model": "m2", "task": task, "perturbation": perturbation, "n_correct": k2, "n_total": 100})
    records = pd.DataFrame(rows)
    data = prepare_data(_tensor.from_counts(records, dataset="floor", structure="crossed"))
    spread = pair_log_spread(data, floor=0.05)
    steady = data.pair_model == data.models.index("m1")
    np.testing.assert_allclose(spread[steady], np.log(0.05))
    assert (spread[~steady] > np.log(1.0)).all()


@pytest.mark.parametrize("parameterization", ["centered", "auto", "noncentered"])
def test_initial_point_raises_density(simulated, parameterization):
    data, _ = simulated
    spec = dataclasses.replace(load_spec("location-scale"), parameterization=parameterization)
    model = build_model(data, spec)
    start = initial_point(data, spec, model)
    free = {rv.name for rv in model.free_RVs}
    assert set(start) <= free
    weak_location, weak_scale = noncentered_pairs(data, spec)
    if (~weak_location).any():
        centred = np.flatnonzero(~weak_location)
        np.testing.assert_allclose(start["mu_centered"], np.clip(data.pair_empirical_logit[centred], -6, 6))
    else:
        assert "mu_centered" not in start
    if (~weak_scale).any():
        assert len(start["log_sigma_centered"]) == int((~weak_scale).sum())

    if parameterization == "noncentered":
        # Only alpha and gamma0 are set there, and the pair offsets stay at zero.
        assert set(start) == {"alpha", "gamma0"}
        return
    # With the pairs centred, the data-based point sits where the posterior
    # is, well above the prior's support point.
    logp = model.compile_logp()
    support = model.initial_point()
    informed = dict(support)
    for name, value in start.items():
        informed[name] = np.asarray(value, dtype=float)
    assert np.isfinite(logp(informed))
    assert logp(informed) > logp(support) + 100


def test_auto_noncentres_three_cell_spreads(simulated):
    many, _ = simulated
    few = prepare_data(simulate_location_scale(models=6, tasks=6, perturbations=3, seed=21)[0])
    spec = dataclasses.replace(load_spec("location-scale"), parameterization="auto")
    # Three cells carry at most 2 * 2 = 4 units of information about log sigma.
    assert np.all(scale_information(few) <= 4.0)
    assert np.all(noncentered_pairs(few, spec)[1])
    # 120 cells with a spread well above the binomial noise are centred.
    clear = many.pair_excess_variance > 4.0
    assert clear.sum() >= 5
    assert not np.any(noncentered_pairs(many, spec)[1][clear])


def test_auto_centres_well_backed_spread_effects():
    # 60 models x 2 tasks: 60 pairs behind each task effect, 2 behind each model effect.
    data = prepare_data(simulate_location_scale(models=60, tasks=2, perturbations=3, seed=4)[0])
    spec = load_spec("location-scale")
    auto = dataclasses.replace(spec, parameterization="auto")
    assert noncentered_spread_effects(data, auto) == {"u_model": True, "v_task": False}
    assert noncentered_spread_effects(data, spec) == {"u_model": False, "v_task": False}
    noncentered = dataclasses.replace(spec, parameterization="noncentered")
    assert noncentered_spread_effects(data, noncentered) == {"u_model": True, "v_task": True}
    names = {rv.name for rv in build_model(data, auto).free_RVs}
    assert "v_task" in names
    assert "u_model_raw" in names
