"""The spline form of the competence term recovers a bent competence curve.

Data are simulated with robustness that improves with competence below the
centre and is flat above it (a hinge). The fitted spline's posterior curve
must cover the true curve, and the linear form must not be able to follow it.
"""

from __future__ import annotations

import numpy as np
import pytest

from robustscope.fit import fit
from robustscope.models.location_scale import competence_curve, competence_term
from robustscope.simulate import LocationScaleTruth, simulate_location_scale
from robustscope.specs import load_spec


def hinge(x: np.ndarray) -> np.ndarray:
    return np.where(x < 0.0, -0.9 * x, 0.0)


def test_competence_term_is_linear_without_knots_and_bends_at_a_knot():
    x = np.linspace(-3, 3, 61)
    assert np.allclose(competence_term(x, -0.5, None, np.zeros(0), 1.0, 0.0), -0.5 * x)
    bent = competence_term(x, -0.5, np.array([0.5]), np.array([0.0]), 0.05, 0.0)
    slopes = np.gradient(bent, x)
    assert slopes[5] == pytest.approx(-0.5, abs=1e-3)
    assert slopes[-5] == pytest.approx(0.0, abs=1e-3)


@pytest.mark.slow
def test_spline_posterior_curve_covers_a_hinge():
    truth = LocationScaleTruth(gamma0=-0.8, sd_u=0.2, sd_v=0.2, sd_e=0.1, sd_model=1.0, sd_task=1.0)
    ds, realised = simulate_location_scale(models=10, tasks=8, perturbations=20, truth=truth, seed=31, competence_fn=hinge)
    trace = fit(ds, load_spec("location-scale-spline"), chains=2, draws=300, tune=400, seed=3, progress=False)
    posterior = trace["posterior"].to_dataset()
    center = realised["competence_center"]
    mu = realised["mu"].ravel()
    grid = np.quantile(mu, [0.15, 0.5, 0.85])
    curves = competence_curve(posterior, grid, trace.attrs)
    # Compare shapes: the intercept trades off against the task and model effects,
    # so the curve is checked relative to its value at the median competence.
    relative = curves - curves[:, [1]]
    true_relative = hinge(grid - center) - hinge(grid[1] - center)
    # Two points are checked (the median is 0 by construction), so each gets a
    # 97% interval for about 94% joint coverage.
    lower, upper = np.quantile(relative, [0.015, 0.985], axis=0)
    assert np.all(lower <= true_relative + 1e-9) and np.all(true_relative <= upper + 1e-9)
    # The bend is detected: the slope below the centre is steeper than above it.
    low_slope = (curves[:, 1] - curves[:, 0]) / (grid[1] - grid[0])
    high_slope = (curves[:, 2] - curves[:, 1]) / (grid[2] - grid[1])
    assert np.mean(low_slope < high_slope) > 0.9
