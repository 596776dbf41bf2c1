"""The collapsed binomial likelihood against adaptive numerical integration."""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.compile.mode import Mode
from scipy import integrate, stats
from scipy.special import expit, gammaln

from robustscope.models import quadrature
from robustscope.models.quadrature import MarginalLogpOp, _marginal_logp_elementwise, marginal_logp


def elementwise_logp(mu, log_sigma, k, n, nodes):
    """Return the NumPy elementwise form of the quadrature, the reference the fused kernel is checked against."""
    return _marginal_logp_elementwise(mu, log_sigma, k, n, nodes, np)


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


# ---------------------------------------------------------------------------
# The fused kernel (MarginalLogpOp) against the NumPy computation.

# "numba" is PyTensor's Numba backend, which nutpie compiles. "python" runs
# the Op's perform method, as PyTensor's C and Python backends do.
MODES = {"numba": "NUMBA", "python": Mode(linker="py", optimizer="fast_run")}

GRADIENT_GRID = [
    (mu, sigma, n, k)
    for mu in (-4.0, -1.0, 0.0, 2.5)
    for sigma in (1e-3, 0.05, 0.3, 1.0, 2.0)
    for n, k in ((100, 0), (100, 7), (100, 50), (100, 100), (26, 13), (1, 0), (1, 1))
]


def _columns(rows):
    mu, sigma, n, k = (np.array(column, dtype=float) for column in zip(*rows, strict=True))
    return mu, np.log(sigma), k, n


def _random_patterns(seed: int, size: int):
    rng = np.random.default_rng(seed)
    n = rng.integers(1, 300, size).astype(float)
    k = np.floor(rng.uniform(0.0, 1.0, size) * (n + 1.0))
    k[: size // 10] = 0.0
    k[size // 10 : size // 5] = n[size // 10 : size // 5]
    mu = rng.uniform(-6.0, 6.0, size)
    log_sigma = np.log(rng.uniform(1e-3, 3.0, size))
    return mu, log_sigma, k, n


def _compile(k, n, nodes, mode, fused=True):
    """Compile the per-cell log probability and the gradient of its weighted sum, as the models use them."""
    mu = pt.vector("mu")
    log_sigma = pt.vector("log_sigma")
    previous = quadrature.FUSED_KERNEL
    quadrature.FUSED_KERNEL = fused
    try:
        logp = marginal_logp(mu, log_sigma, k, n, nodes, xp=pt)
    finally:
        quadrature.FUSED_KERNEL = previous
    weights = np.linspace(0.5, 1.5, len(k))
    gradient = pytensor.grad(pt.sum(weights * logp), [mu, log_sigma])
    function = pytensor.function([mu, log_sigma], [logp, *gradient], mode=MODES.get(mode, mode))
    return function, weights


def _kernel_nodes(function):
    return [node for node in function.maker.fgraph.toposort() if isinstance(node.op, MarginalLogpOp)]


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("nodes", [7, 9])
def test_op_value_matches_numpy_on_grid(mode, nodes):
    mu, log_sigma, k, n = _columns(CASES)
    function, _ = _compile(k, n, nodes, mode)
    value = function(mu, log_sigma)[0]
    np.testing.assert_allclose(value, elementwise_logp(mu, log_sigma, k, n, nodes), rtol=0, atol=1e-10)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_op_value_matches_numpy_on_random_patterns(mode):
    mu, log_sigma, k, n = _random_patterns(seed=3, size=5000)
    function, _ = _compile(k, n, 7, mode)
    value = function(mu, log_sigma)[0]
    np.testing.assert_allclose(value, elementwise_logp(mu, log_sigma, k, n, 7), rtol=0, atol=1e-10)


def test_op_value_is_close_for_extreme_patterns():
    # With up to 3,000 trials, mu up to 25 logits and sigma from 6e-6 to 12,
    # the two forms of the binomial term round differently, by about 1e-11 relative.
    rng = np.random.default_rng(4)
    size = 4000
    n = rng.integers(1, 3000, size).astype(float)
    k = np.floor(rng.uniform(0.0, 1.0, size) * (n + 1.0))
    mu = rng.uniform(-25.0, 25.0, size)
    log_sigma = rng.uniform(-12.0, 2.5, size)
    function, _ = _compile(k, n, 9, "numba")
    value = function(mu, log_sigma)[0]
    expected = elementwise_logp(mu, log_sigma, k, n, 9)
    assert np.all(np.isfinite(value))
    np.testing.assert_allclose(value, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("nodes", [7, 9])
def test_op_gradient_matches_finite_differences(nodes):
    mu, log_sigma, k, n = _columns(GRADIENT_GRID)
    function, weights = _compile(k, n, nodes, "numba")
    _, d_mu, d_log_sigma = function(mu, log_sigma)
    step = 1e-5
    numeric_mu = (elementwise_logp(mu + step, log_sigma, k, n, nodes) - elementwise_logp(mu - step, log_sigma, k, n, nodes)) / (2 * step)
    numeric_log_sigma = (elementwise_logp(mu, log_sigma + step, k, n, nodes) - elementwise_logp(mu, log_sigma - step, k, n, nodes)) / (2 * step)
    for name, analytic, numeric in (("mu", d_mu / weights, numeric_mu), ("log_sigma", d_log_sigma / weights, numeric_log_sigma)):
        error = np.abs(analytic - numeric)
        allowed = np.maximum(1e-6, 1e-5 * np.abs(numeric))
        worst = int(np.argmax(error / allowed))
        assert np.all(error <= allowed), f"d logp / d {name} at (mu, sigma, n, k) = {GRADIENT_GRID[worst]}: {analytic[worst]} != {numeric[worst]}"


def test_op_passes_verify_grad():
    mu, log_sigma, k, n = _columns(GRADIENT_GRID)
    rng = np.random.default_rng(7)
    pytensor.gradient.verify_grad(
        lambda location, log_scale: marginal_logp(location, log_scale, k, n, 7, xp=pt),
        [mu, log_sigma],
        rng=rng,
        mode="NUMBA",
    )


def test_op_gradient_equals_elementwise_graph_gradient():
    mu, log_sigma, k, n = _random_patterns(seed=5, size=2000)
    fused, _ = _compile(k, n, 7, "numba", fused=True)
    elementwise, _ = _compile(k, n, 7, "numba", fused=False)
    assert _kernel_nodes(fused)
    assert not _kernel_nodes(elementwise)
    for fused_value, elementwise_value in zip(fused(mu, log_sigma), elementwise(mu, log_sigma), strict=True):
        np.testing.assert_allclose(fused_value, elementwise_value, rtol=1e-9, atol=1e-9)


def test_numba_and_python_backends_agree():
    mu, log_sigma, k, n = _random_patterns(seed=6, size=1000)
    numba_outputs = _compile(k, n, 7, "numba")[0](mu, log_sigma)
    python_outputs = _compile(k, n, 7, "python")[0](mu, log_sigma)
    for numba_value, python_value in zip(numba_outputs, python_outputs, strict=True):
        np.testing.assert_allclose(numba_value, python_value, rtol=1e-12, atol=1e-12)


def test_value_and_gradient_share_one_kernel_node():
    _, _, k, n = _random_patterns(seed=8, size=50)
    both, _ = _compile(k, n, 7, "numba")
    [node] = _kernel_nodes(both)
    assert node.op.with_gradient

    mu = pt.vector("mu")
    value_only = pytensor.function([mu], marginal_logp(mu, pt.zeros_like(mu), k, n, 7, xp=pt), mode="NUMBA")
    [node] = _kernel_nodes(value_only)
    assert not node.op.with_gradient


def test_scalar_parameters_are_broadcast_to_the_op():
    _, _, k, n = _random_patterns(seed=9, size=40)
    location = pt.scalar("location")
    function = pytensor.function([location], marginal_logp(location, pt.constant(np.log(0.4)), k, n, 7, xp=pt), mode="NUMBA")
    assert _kernel_nodes(function)
    expected = elementwise_logp(np.full(40, 0.3), np.full(40, np.log(0.4)), k, n, 7)
    np.testing.assert_allclose(function(0.3), expected, rtol=0, atol=1e-10)


def test_batched_parameters_use_the_elementwise_graph():
    _, _, k, n = _random_patterns(seed=10, size=30)
    rng = np.random.default_rng(10)
    mu_value = rng.normal(0.0, 1.0, (3, 30))
    log_sigma_value = rng.normal(-1.0, 0.3, (3, 30))
    mu = pt.matrix("mu")
    log_sigma = pt.matrix("log_sigma")
    function = pytensor.function([mu, log_sigma], marginal_logp(mu, log_sigma, k, n, 7, xp=pt), mode="NUMBA")
    assert not _kernel_nodes(function)
    np.testing.assert_allclose(function(mu_value, log_sigma_value), elementwise_logp(mu_value, log_sigma_value, k, n, 7), rtol=0, atol=1e-10)


def test_kernel_rejects_mismatched_lengths():
    _, _, k, n = _random_patterns(seed=11, size=20)
    function, _ = _compile(k, n, 7, "python")
    with pytest.raises(ValueError, match="one entry per cell"):
        function(np.zeros(19), np.zeros(19))


def test_nutpie_model_matches_elementwise_graph(monkeypatch):
    nutpie = pytest.importorskip("nutpie")
    from robustscope.models.location_scale import build_model, prepare_data
    from robustscope.simulate import simulate_location_scale
    from robustscope.specs import load_spec

    ds, _ = simulate_location_scale(models=3, tasks=3, perturbations=6, n_examples=40, seed=3)
    data = prepare_data(ds)
    spec = load_spec("location-scale")
    compiled = {}
    for fused in (False, True):
        monkeypatch.setattr(quadrature, "FUSED_KERNEL", fused)
        compiled[fused] = nutpie.compile_pymc_model(build_model(data, spec))
    point = compiled[False].initial_point_func(0) + np.random.default_rng(1).normal(0.0, 0.3, compiled[False].n_dim)
    logp_elementwise, gradient_elementwise = compiled[False].logp_func(point)
    logp_fused, gradient_fused = compiled[True].logp_func(point)
    assert _kernel_nodes(compiled[True].logp_func)
    assert not _kernel_nodes(compiled[False].logp_func)
    assert logp_fused == pytest.approx(float(logp_elementwise), rel=1e-12)
    np.testing.assert_allclose(gradient_fused, gradient_elementwise, rtol=1e-9, atol=1e-9)


def test_kernel_exp_and_log1p_match_numpy():
    import numba

    from robustscope.models.quadrature import _exp, _log1p_unit

    @numba.njit
    def apply_exp(values, out):
        for i in range(values.shape[0]):
            out[i] = _exp(values[i])

    @numba.njit
    def apply_log1p(values, out):
        for i in range(values.shape[0]):
            out[i] = _log1p_unit(values[i])

    rng = np.random.default_rng(12)
    # Relative error of at most 4 machine epsilons (measured: about 1 for exp and 2 for log1p).
    tolerance = 4 * np.finfo(float).eps

    arguments = np.concatenate([rng.uniform(-708.0, 709.0, 200_000), rng.uniform(-2.0, 2.0, 200_000)])
    result = np.empty_like(arguments)
    apply_exp(arguments, result)
    assert np.max(np.abs(result / np.exp(arguments) - 1.0)) <= tolerance

    special = np.array([np.nan, np.inf, -np.inf, 710.0, -746.0, -745.0, -740.0, 0.0])
    result = np.empty_like(special)
    apply_exp(special, result)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(result, np.exp(special))

    arguments = np.concatenate([rng.uniform(0.0, 1.0, 200_000), np.logspace(-300, 0, 10_000), [np.sqrt(2.0) - 1.0]])
    result = np.empty_like(arguments)
    apply_log1p(arguments, result)
    assert np.max(np.abs(result / np.log1p(arguments) - 1.0)) <= tolerance
    apply_log1p(np.zeros(1), result[:1])
    assert result[0] == 0.0


def test_numpy_path_matches_elementwise_form_over_draws():
    mu, log_sigma, k, n = _random_patterns(seed=12, size=300)
    rng = np.random.default_rng(12)
    draws_mu = mu + rng.normal(0.0, 0.5, (4, 3, 300))
    draws_log_sigma = log_sigma + rng.normal(0.0, 0.5, (4, 3, 300))
    value = marginal_logp(draws_mu, draws_log_sigma, k, n, 7)
    assert value.shape == (4, 3, 300)
    np.testing.assert_allclose(value, elementwise_logp(draws_mu, draws_log_sigma, k, n, 7), rtol=0, atol=1e-10)
