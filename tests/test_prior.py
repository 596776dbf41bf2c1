"""Prior predictive checks tell plausible priors from priors that pile accuracies at 0 and 1."""

from __future__ import annotations

import dataclasses

import pytest

from robustscope.prior import plot_prior_predictive, prior_predictive
from robustscope.simulate import simulate_location_scale
from robustscope.specs import Prior, load_spec


@pytest.fixture(scope="module")
def data():
    ds, _ = simulate_location_scale(models=5, tasks=4, perturbations=6, seed=2)
    return ds


def test_default_priors_keep_most_accuracies_away_from_0_and_1(data):
    result = prior_predictive("location-scale", data, datasets=20, seed=1)
    table = result["table"]
    assert table.loc["prior accuracy", "share_at_0_or_1"] < 0.4
    assert 0.2 < table.loc["prior accuracy", "q50"] < 0.8
    assert result["observed_spread_inside_prior_90"] > 0.8
    assert result["shape"] == {"n_models": 5, "n_tasks": 4, "n_perturbations": 6, "n_examples": 100}
    plot_prior_predictive(result, "location-scale").savefig(__import__("io").BytesIO(), format="png")


def test_very_wide_priors_are_seen_to_pile_accuracies_at_the_bounds(data):
    spec = load_spec("location-scale")
    wide = dataclasses.replace(spec, priors={**spec.priors, "alpha": Prior("normal", 0.0, 10.0), "sd_model": Prior("halfnormal", sigma=10.0)})
    result = prior_predictive(wide, data, datasets=20, seed=1)
    assert result["table"].loc["prior accuracy", "share_at_0_or_1"] > 0.5
