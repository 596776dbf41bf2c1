"""The collapsed binomial likelihood against adaptive numerical integration."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import expit, gammaln

from robustscope.models.quadrature import marginal_logp


def _reference(mu: float, sigma: float, k: int, n: int) -> float:
    def integrand(eta: float) -> float:
        log_value = (
            k * np.log(expit(eta))
            + (n - k) * np.log(expit(-eta))
            + stats.norm.logpdf(eta, mu, sigma)
            + gammaln(n + 1)
            - gammaln(k + 1)
            - gammaln(n - k + 1)
        )
        return float(np.exp(log_value))

    edges = np.linspace(mu - 12 * sigma - 10, mu + 12 * sigma + 10, 60)
    total = sum(integrate.quad(integrand, a, b, epsabs=0, epsrel=1e-12, limit=200)[0] for a, b in zip(edges[:-1], edges[1:], strict=False))
    return float(np.log(total))


CASES = [(mu, sigma, n, k) for mu in (-4.0, -1.0, 0.0, 2.5) for sigma in (0.05, 0.3, 1.0) for n, k in ((100, 0), (100, 7), (100, 50), (100, 100), (26, 13))]


@pytest.mark.parametrize(("mu", "sigma", "n", "k"), CASES)
def test_matches_numerical_integration(mu, sigma, n, k):
    value = marginal_logp(np.array([mu]), np.array([np.log(sigma)]), np.array([k]), np.array([n]), 9)[0]
    assert abs(value - _reference(mu, sigma, k, n)) < 1e-4


def test_wide_spread_at_the_floor_is_close():
    value = marginal_logp(np.array([-3.0]), np.array([np.log(2.0)]), np.array([0]), np.array([100]), 9)[0]
    assert abs(value - _reference(-3.0, 2.0, 0, 100)) < 5e-3


def test_probabilities_sum_to_one():
    n = 40
    k = np.arange(n + 1)
    logp = marginal_logp(np.full(n + 1, 0.7), np.full(n + 1, np.log(0.8)), k, np.full(n + 1, n), 9)
    assert abs(np.exp(logp).sum() - 1.0) < 1e-6


def test_tiny_spread_is_binomial():
    logp = marginal_logp(np.array([0.4]), np.array([np.log(1e-4)]), np.array([55]), np.array([100]), 9)[0]
    assert abs(logp - stats.binom.logpmf(55, 100, expit(0.4))) < 1e-6
