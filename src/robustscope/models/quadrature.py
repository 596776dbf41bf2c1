"""The logit-normal binomial likelihood by adaptive Gauss-Hermite quadrature.

For a cell with ``k`` correct answers out of ``n`` under a perturbation whose
logit effect is ``eta ~ Normal(mu, sigma)``, the marginal probability is

    p(k | mu, sigma) = C(n, k) * Integral sigmoid(eta)^k (1 - sigmoid(eta))^(n - k) Normal(eta; mu, sigma) d eta.

The integrand is log-concave in ``eta``. Its mode is found with a few
clipped Newton steps from a normal approximation, and a Gauss-Hermite rule is
centred at the mode with the Laplace scale (adaptive Gauss-Hermite
quadrature). The test suite checks the result against adaptive numerical
integration: with 7 nodes (the default specification) or 9 the error in
``log p`` is below 1e-7 for typical cells and below 2e-3 in the worst tested
case (sigma = 2 logits with every answer wrong).

The same function builds a PyTensor graph (for the sampler, which
differentiates through the Newton steps, so the gradient is the exact
derivative of the quadrature sum) or computes with NumPy (for the post-hoc
pointwise log likelihood).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import gammaln

NEWTON_STEPS = 3
# Longest Newton step on the logit scale. The log integrand is concave, so a
# clipped step still moves towards the mode and cannot oscillate.
MAX_STEP = 2.0


def hermite_rule(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Return Gauss-Hermite nodes and log weights with the ``exp(x**2)`` factor folded in."""
    x, w = np.polynomial.hermite.hermgauss(nodes)
    return x, np.log(w) + x**2


def log_binomial_coefficient(n: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Return ``log C(n, k)`` elementwise."""
    return gammaln(n + 1.0) - gammaln(k + 1.0) - gammaln(n - k + 1.0)


def marginal_logp(mu: Any, log_sigma: Any, k: np.ndarray, n: np.ndarray, nodes: int, xp: Any = np) -> Any:
    """Return ``log p(k | mu, sigma)`` for each cell, integrating the logit effect out.

    Parameters
    ----------
    mu, log_sigma
        Location (logit scale) and log scale of the perturbation effect, one
        value per cell (PyTensor tensors, or NumPy arrays that may carry
        leading draw axes).
    k, n
        Correct answers and trials per cell (NumPy arrays).
    nodes
        Number of Gauss-Hermite nodes.
    xp
        The array namespace: ``pytensor.tensor`` or ``numpy``.
    """
    x, log_w = hermite_rule(nodes)
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    inv_var = xp.exp(-2.0 * log_sigma)

    # Newton steps towards the mode, from the normal approximation of the
    # binomial on the logit scale.
    empirical = np.log((k + 0.5) / (n - k + 0.5))
    binomial_precision = (k + 0.5) * (n - k + 0.5) / (n + 1.0)
    eta = (mu * inv_var + empirical * binomial_precision) / (inv_var + binomial_precision)
    for _ in range(NEWTON_STEPS):
        p = _sigmoid(eta, xp)
        step = (-(eta - mu) * inv_var + k - n * p) / (inv_var + n * p * (1.0 - p))
        eta = eta + xp.clip(step, -MAX_STEP, MAX_STEP)
    p = _sigmoid(eta, xp)
    scale = np.sqrt(2.0) / xp.sqrt(inv_var + n * p * (1.0 - p))

    # The rule's nodes run along a trailing axis.
    node = eta[..., None] + scale[..., None] * x
    log_f = (
        -0.5 * np.log(2 * np.pi)
        - log_sigma[..., None]
        - 0.5 * (node - mu[..., None]) ** 2 * inv_var[..., None]
        - k[..., None] * _softplus(-node, xp)
        - (n - k)[..., None] * _softplus(node, xp)
    )
    terms = log_f + log_w + xp.log(scale)[..., None]
    return _logsumexp(terms, xp) + log_binomial_coefficient(n, k)


def _sigmoid(value: Any, xp: Any) -> Any:
    if xp is np:
        return 1.0 / (1.0 + np.exp(-value))
    return xp.sigmoid(value)


def _softplus(value: Any, xp: Any) -> Any:
    if xp is np:
        return np.logaddexp(0.0, value)
    return xp.softplus(value)


def _logsumexp(terms: Any, xp: Any) -> Any:
    if xp is np:
        top = np.max(terms, axis=-1, keepdims=True)
        return np.log(np.sum(np.exp(terms - top), axis=-1)) + top[..., 0]
    return xp.logsumexp(terms, axis=-1)
