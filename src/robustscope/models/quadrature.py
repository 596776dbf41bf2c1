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

With NumPy arrays :func:`marginal_logp` computes the value directly (for the
post-hoc pointwise log likelihood). With PyTensor tensors it builds one
:class:`MarginalLogpOp` node, a compiled kernel that returns the value and
its gradient in one pass over the cells. The kernel has a Numba
implementation for PyTensor's Numba backend (which nutpie uses), and its
``perform`` method calls the same jitted function. ``FUSED_KERNEL = False``
builds the elementwise PyTensor graph of the same computation instead.
"""

from __future__ import annotations

import hashlib
import inspect
import math
from typing import Any

import numba
import numpy as np
import pytensor.tensor as pt
from llvmlite import ir as llvm_ir
from numba import types
from numba.extending import intrinsic
from pytensor.gradient import DisconnectedType, disconnected_type, grad_not_implemented
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op
from pytensor.graph.rewriting.basic import node_rewriter
from pytensor.link.numba.dispatch.basic import register_funcify_default_op_cache_key
from pytensor.tensor.rewriting.basic import register_specialize
from pytensor.tensor.type import TensorType
from scipy.special import gammaln

NEWTON_STEPS = 3
# Longest Newton step on the logit scale. The log integrand is concave, so a
# clipped step still moves towards the mode and cannot oscillate.
MAX_STEP = 2.0

# With PyTensor tensors, build one MarginalLogpOp node (True) or the
# elementwise graph (False). Both give the same value and gradient up to
# rounding error.
FUSED_KERNEL = True


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

    With PyTensor tensors the result is one :class:`MarginalLogpOp` node when
    ``mu`` and ``log_sigma`` are scalars or vectors of one value per cell,
    and the elementwise graph otherwise (leading batch axes), or when
    ``FUSED_KERNEL`` is False.
    """
    if xp is np and FUSED_KERNEL:
        return _kernel_marginal_logp_numpy(mu, log_sigma, k, n, nodes)
    if xp is not np and FUSED_KERNEL:
        fused = _fused_marginal_logp(mu, log_sigma, k, n, nodes)
        if fused is not None:
            return fused
    return _marginal_logp_elementwise(mu, log_sigma, k, n, nodes, xp)


def _kernel_marginal_logp_numpy(mu: Any, log_sigma: Any, k: np.ndarray, n: np.ndarray, nodes: int) -> np.ndarray:
    """Return :func:`marginal_logp` for NumPy inputs, one kernel call per row of the leading (draw) axes.

    Counts with more than one axis (different cells per row) go to the
    elementwise NumPy code.
    """
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    if k.ndim > 1 or n.ndim > 1:
        return _marginal_logp_elementwise(mu, log_sigma, k, n, nodes, np)
    mu, log_sigma, k, n = np.broadcast_arrays(np.asarray(mu, dtype=float), np.asarray(log_sigma, dtype=float), k, n)
    shape = mu.shape
    rows_mu = np.ascontiguousarray(mu.reshape(-1, shape[-1]))
    rows_log_sigma = np.ascontiguousarray(log_sigma.reshape(-1, shape[-1]))
    cells = kernel_cell_table(k.reshape(-1, shape[-1])[0], n.reshape(-1, shape[-1])[0])
    x, log_w = hermite_rule(nodes)
    out = np.empty_like(rows_mu)
    for row in range(rows_mu.shape[0]):
        out[row] = marginal_logp_kernel(rows_mu[row], rows_log_sigma[row], cells, x, log_w)
    return out.reshape(shape)


def _marginal_logp_elementwise(mu: Any, log_sigma: Any, k: np.ndarray, n: np.ndarray, nodes: int, xp: Any) -> Any:
    """Return :func:`marginal_logp` built from elementwise array operations (NumPy, or a PyTensor graph)."""
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


# ---------------------------------------------------------------------------
# Fused kernel
#
# The Numba functions below compute, for each cell, the same Newton steps and
# Gauss-Hermite sum as _marginal_logp_elementwise, and optionally the
# gradient with respect to mu and log_sigma. Cells are processed in blocks
# of _BLOCK, one stage at a time, and each stage is a loop over the cells of
# the block without calls to the C math library, which LLVM compiles to SIMD
# instructions. For that, exp and log1p are computed here from polynomials
# (_exp and _log1p_unit, which the tests hold to a relative error of 4
# machine epsilons against NumPy), and the Newton steps are written out in
# full. The only fastmath freedom allowed is fusing a multiply and an add
# ("contract").
# Whether LLVM vectorizes a loop depends on its heuristics and the CPU, and
# the results agree up to rounding either way.

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_SQRT2 = math.sqrt(2.0)
_LN2 = math.log(2.0)
_LOG2E = 1.0 / math.log(2.0)
# ln 2 split into a head with 21 trailing zero bits in its significand, so
# that n * _LN2_HI is exact for |n| < 2**21, and the remainder (Cody-Waite
# range reduction).
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_SQRT2_MINUS_1 = math.sqrt(2.0) - 1.0

_KERNEL_FLAGS = {"cache": True, "nogil": True, "error_model": "numpy", "fastmath": {"contract"}}

# Cells per block: the block's scratch arrays (27 KiB for 7 nodes) fit in a 32 KiB L1 data cache.
_BLOCK = 128

# Rows of the per-cell table that the kernel reads (see kernel_cell_table).
_CORRECT, _TRIALS, _LOG_COEFFICIENT, _EMPIRICAL_LOGIT, _BINOMIAL_PRECISION = range(5)

# Rows of the kernel's per-block scratch array.
_ETA, _SCALE, _INV_VAR, _ETA_D_MU, _ETA_D_LOG_SD, _LOG_SCALE_D_MU, _LOG_SCALE_D_LOG_SD = range(7)
_TOP, _TOTAL, _FIRST, _SECOND, _SHIFT, _STRETCH = range(7, 13)
_STATE_ROWS = 13


def kernel_cell_table(k: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Return the per-cell constants the kernel reads: a float64 array with one column per cell.

    Rows: ``k``, ``n``, ``log C(n, k)``, the empirical logit
    ``log((k + 0.5) / (n - k + 0.5))`` and the binomial precision
    ``(k + 0.5) (n - k + 0.5) / (n + 1)`` on the logit scale, which start
    the Newton steps.
    """
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    table = np.empty((5, k.shape[0]))
    table[_CORRECT] = k
    table[_TRIALS] = n
    table[_LOG_COEFFICIENT] = log_binomial_coefficient(n, k)
    table[_EMPIRICAL_LOGIT] = np.log((k + 0.5) / (n - k + 0.5))
    table[_BINOMIAL_PRECISION] = (k + 0.5) * (n - k + 0.5) / (n + 1.0)
    return table


@intrinsic
def _float_from_bits(typingctx: Any, bits: Any) -> Any:
    """Reinterpret the bits of an int64 as a float64."""
    signature = types.float64(types.int64)

    def codegen(context: Any, builder: Any, signature: Any, arguments: Any) -> Any:
        return builder.bitcast(arguments[0], llvm_ir.DoubleType())

    return signature, codegen


@numba.njit(inline="always", **_KERNEL_FLAGS)
def _exp(value):
    """Return exp(value), with the C library's results for NaN, infinities, overflow and underflow."""
    # Clamp (and map NaN to 0) first, so that the integer conversion below stays in range.
    clamped = value if value > -746.0 else -746.0
    clamped = clamped if clamped < 710.0 else 710.0
    clamped = clamped if clamped == clamped else 0.0

    # exp(value) = 2**n * exp(r) with |r| <= ln(2) / 2, and exp(r) by its Taylor
    # polynomial of degree 13 (truncation error below 1e-17).
    n = math.floor(clamped * _LOG2E + 0.5)
    r = (clamped - n * _LN2_HI) - n * _LN2_LO
    poly = 1.0 / 6227020800.0
    poly = poly * r + 1.0 / 479001600.0
    poly = poly * r + 1.0 / 39916800.0
    poly = poly * r + 1.0 / 3628800.0
    poly = poly * r + 1.0 / 362880.0
    poly = poly * r + 1.0 / 40320.0
    poly = poly * r + 1.0 / 5040.0
    poly = poly * r + 1.0 / 720.0
    poly = poly * r + 1.0 / 120.0
    poly = poly * r + 1.0 / 24.0
    poly = poly * r + 1.0 / 6.0
    poly = poly * r + 0.5
    poly = poly * r + 1.0
    poly = poly * r + 1.0

    # 2**n as two normal powers of two, so that results in the subnormal
    # range and up to the largest double are formed without overflow.
    exponent = np.int64(n)
    half = exponent >> 1
    result = poly * _float_from_bits((half + 1023) << 52) * _float_from_bits((exponent - half + 1023) << 52)

    result = result if value < 709.8 else math.inf
    result = result if value > -745.2 else 0.0
    return result if value == value else value


@numba.njit(inline="always", **_KERNEL_FLAGS)
def _log1p_unit(t):
    """Return log(1 + t) for 0 <= t <= 1."""
    # log(y) = 2 atanh((y - 1) / (y + 1)) with y = 1 + t, or y = (1 + t) / 2
    # and ln 2 added when 1 + t > sqrt(2), so that |s| <= 0.172 and the
    # series s + s**3 / 3 + ... up to s**21 is accurate to about 1e-17.
    large = t > _SQRT2_MINUS_1
    s = (t - 1.0) / (t + 3.0) if large else t / (t + 2.0)
    z = s * s
    series = 1.0 / 21.0
    series = series * z + 1.0 / 19.0
    series = series * z + 1.0 / 17.0
    series = series * z + 1.0 / 15.0
    series = series * z + 1.0 / 13.0
    series = series * z + 1.0 / 11.0
    series = series * z + 1.0 / 9.0
    series = series * z + 1.0 / 7.0
    series = series * z + 1.0 / 5.0
    series = series * z + 1.0 / 3.0
    series = series * z + 1.0
    return 2.0 * s * series + (_LN2 if large else 0.0)


@numba.njit(inline="always", **_KERNEL_FLAGS)
def _newton_step(eta, eta_d_mu, eta_d_log_sd, location, inv_var, correct, trials):
    """Take one clipped Newton step towards the mode and return the new ``eta`` and its derivatives with respect to mu and log_sigma."""
    p = 1.0 / (1.0 + _exp(-eta))
    curvature = trials * p * (1.0 - p)
    inv_denominator = 1.0 / (inv_var + curvature)
    raw_step = (-(eta - location) * inv_var + correct - trials * p) * inv_denominator
    # The comparisons keep a NaN step NaN, as np.clip does. A clipped step does not depend on mu or sigma.
    free = raw_step <= MAX_STEP and raw_step >= -MAX_STEP
    step = raw_step
    if raw_step > MAX_STEP:
        step = MAX_STEP
    if raw_step < -MAX_STEP:
        step = -MAX_STEP

    # Derivatives of the numerator and the denominator of the step (d inv_var / d log_sigma = -2 inv_var).
    curvature_slope = curvature * (1.0 - 2.0 * p)
    numerator_d_mu = -(eta_d_mu - 1.0) * inv_var - curvature * eta_d_mu
    numerator_d_log_sd = -eta_d_log_sd * inv_var + 2.0 * (eta - location) * inv_var - curvature * eta_d_log_sd
    denominator_d_mu = curvature_slope * eta_d_mu
    denominator_d_log_sd = -2.0 * inv_var + curvature_slope * eta_d_log_sd
    step_d_mu = (numerator_d_mu - raw_step * denominator_d_mu) * inv_denominator if free else 0.0
    step_d_log_sd = (numerator_d_log_sd - raw_step * denominator_d_log_sd) * inv_denominator if free else 0.0
    return eta + step, eta_d_mu + step_d_mu, eta_d_log_sd + step_d_log_sd


@numba.njit(**_KERNEL_FLAGS)
def _centre_rules(mu, log_sigma, cells, start, count, state):
    """Find the centre and scale of the rule of each cell in the block, with their derivatives."""
    # LLVM vectorizes the loop only with one-dimensional views, which need few enough run-time alias checks.
    correct_row = cells[_CORRECT]
    trials_row = cells[_TRIALS]
    empirical_row = cells[_EMPIRICAL_LOGIT]
    precision_row = cells[_BINOMIAL_PRECISION]
    eta_row = state[_ETA]
    scale_row = state[_SCALE]
    inv_var_row = state[_INV_VAR]
    eta_d_mu_row = state[_ETA_D_MU]
    eta_d_log_sd_row = state[_ETA_D_LOG_SD]
    log_scale_d_mu_row = state[_LOG_SCALE_D_MU]
    log_scale_d_log_sd_row = state[_LOG_SCALE_D_LOG_SD]
    for j in range(count):
        cell = start + j
        location = mu[cell]
        correct = correct_row[cell]
        trials = trials_row[cell]
        binomial_precision = precision_row[cell]
        empirical = empirical_row[cell]
        inv_var = _exp(-2.0 * log_sigma[cell])

        # Start from the normal approximation, as the elementwise graph does.
        inv_pooled = 1.0 / (inv_var + binomial_precision)
        eta = (location * inv_var + empirical * binomial_precision) * inv_pooled
        eta_d_mu = inv_var * inv_pooled
        eta_d_log_sd = -2.0 * inv_var * binomial_precision * (location - empirical) * inv_pooled * inv_pooled

        # The NEWTON_STEPS steps are written out because LLVM vectorizes this
        # loop over cells only when it has no inner loop. The module checks that NEWTON_STEPS is 3.
        eta, eta_d_mu, eta_d_log_sd = _newton_step(eta, eta_d_mu, eta_d_log_sd, location, inv_var, correct, trials)
        eta, eta_d_mu, eta_d_log_sd = _newton_step(eta, eta_d_mu, eta_d_log_sd, location, inv_var, correct, trials)
        eta, eta_d_mu, eta_d_log_sd = _newton_step(eta, eta_d_mu, eta_d_log_sd, location, inv_var, correct, trials)

        p = 1.0 / (1.0 + _exp(-eta))
        curvature = trials * p * (1.0 - p)
        inv_laplace_precision = 1.0 / (inv_var + curvature)
        curvature_slope = curvature * (1.0 - 2.0 * p)
        eta_row[j] = eta
        scale_row[j] = _SQRT2 * math.sqrt(inv_laplace_precision)
        inv_var_row[j] = inv_var
        eta_d_mu_row[j] = eta_d_mu
        eta_d_log_sd_row[j] = eta_d_log_sd
        log_scale_d_mu_row[j] = -0.5 * curvature_slope * eta_d_mu * inv_laplace_precision
        log_scale_d_log_sd_row[j] = -0.5 * (-2.0 * inv_var + curvature_slope * eta_d_log_sd) * inv_laplace_precision


@numba.njit(**_KERNEL_FLAGS)
def _node_terms(mu, cells, start, count, state, node_x, node_log_w, terms, slopes):
    """Write the log integrand at one node (up to terms common to all nodes) and its slope d/d node, for each cell."""
    correct_row = cells[_CORRECT]
    trials_row = cells[_TRIALS]
    eta_row = state[_ETA]
    scale_row = state[_SCALE]
    inv_var_row = state[_INV_VAR]
    top_row = state[_TOP]
    for j in range(count):
        cell = start + j
        correct = correct_row[cell]
        trials = trials_row[cell]
        inv_var = inv_var_row[j]
        node = eta_row[j] + scale_row[j] * node_x
        positive = node > 0.0
        tail = _exp(-node if positive else node)
        softplus = (node if positive else 0.0) + _log1p_unit(tail)
        sigmoid = (1.0 if positive else tail) / (1.0 + tail)
        deviation = node - mu[cell]
        # k * softplus(-node) + (n - k) * softplus(node) == n * softplus(node) - k * node.
        term = node_log_w - 0.5 * deviation * deviation * inv_var - (trials * softplus - correct * node)
        terms[j] = term
        slopes[j] = -deviation * inv_var - (trials * sigmoid - correct)
        top = top_row[j]
        top_row[j] = term if term > top else top


@numba.njit(**_KERNEL_FLAGS)
def _node_weights(count, state, terms):
    """Replace the terms of one node by exp(term - max over nodes) and add them to the cells' totals."""
    top_row = state[_TOP]
    total_row = state[_TOTAL]
    for j in range(count):
        weight = _exp(terms[j] - top_row[j])
        terms[j] = weight
        total_row[j] += weight


@numba.njit(**_KERNEL_FLAGS)
def _node_gradient_sums(mu, start, count, state, node_x, weights, slopes):
    """Add one node's weighted deviation, squared deviation and slopes to the gradient sums of each cell."""
    eta_row = state[_ETA]
    scale_row = state[_SCALE]
    first_row = state[_FIRST]
    second_row = state[_SECOND]
    shift_row = state[_SHIFT]
    stretch_row = state[_STRETCH]
    for j in range(count):
        weight = weights[j]
        deviation = eta_row[j] + scale_row[j] * node_x - mu[start + j]
        slope = weight * slopes[j]
        first_row[j] += weight * deviation
        second_row[j] += weight * deviation * deviation
        shift_row[j] += slope
        stretch_row[j] += slope * node_x


@numba.njit(**_KERNEL_FLAGS)
def _evaluate_cells(mu, log_sigma, cells, x, log_w, logp, d_mu, d_log_sigma, with_gradient):
    """Write ``log p`` per cell into ``logp`` and, if ``with_gradient``, its derivatives into ``d_mu`` and ``d_log_sigma``.

    ``cells`` is the table of :func:`kernel_cell_table`. The gradient is the
    derivative of the returned value, the quadrature sum
    ``S = sum_i w_i f(node_i)`` with ``node_i = eta* + scale* x_i``. It has
    two parts:

    * with the nodes held fixed, ``sum_i p_i (node_i - mu) / sigma^2`` for
      ``mu`` and ``sum_i p_i ((node_i - mu)^2 / sigma^2 - 1)`` for
      ``log_sigma``, with the normalised weights ``p_i = w_i f(node_i) / S``;
    * the change of the rule's centre ``eta*`` and scale ``scale*``, which
      follow ``mu`` and ``sigma`` through the Newton steps. The derivatives
      of ``eta*`` and ``scale*`` are carried through the steps in forward
      mode, and they multiply the derivatives of ``log S`` with respect to
      the centre and the scale.

    The exact integral does not depend on where the rule is centred, so the
    second part is the derivative of the quadrature error alone. It is kept
    because it is not negligible: with 7 nodes, leaving it out changes the
    gradient by up to about 1e-2 for a cell with sigma = 2 logits and every
    answer wrong or right. With it, the gradient equals the one that
    PyTensor derives from the elementwise graph.
    """
    size = mu.shape[0]
    if log_sigma.shape[0] != size or cells.shape[1] != size or cells.shape[0] != 5:
        raise ValueError("marginal_logp kernel: mu, log_sigma and the 5-row cell table must have one entry per cell")
    nodes = x.shape[0]
    state = np.zeros((_STATE_ROWS, _BLOCK))
    terms = np.empty((nodes, _BLOCK))
    slopes = np.empty((nodes, _BLOCK))
    log_coefficient = cells[_LOG_COEFFICIENT]
    for start in range(0, size, _BLOCK):
        count = min(_BLOCK, size - start)
        _centre_rules(mu, log_sigma, cells, start, count, state)
        state[_TOP, :] = -math.inf
        state[_TOTAL, :] = 0.0
        for i in range(nodes):
            _node_terms(mu, cells, start, count, state, x[i], log_w[i], terms[i], slopes[i])
        for i in range(nodes):
            _node_weights(count, state, terms[i])
        for j in range(count):
            cell = start + j
            # log S = top + log(total) + log(scale), because the rule's weights carry the factor scale.
            log_sum = state[_TOP, j] + math.log(state[_TOTAL, j] * state[_SCALE, j])
            logp[cell] = log_sum - log_sigma[cell] - _HALF_LOG_2PI + log_coefficient[cell]
        if not with_gradient:
            continue

        state[_FIRST:, :] = 0.0
        for i in range(nodes):
            _node_gradient_sums(mu, start, count, state, x[i], terms[i], slopes[i])
        for j in range(count):
            total = state[_TOTAL, j]
            # d log S / d centre and d log S / d log scale. When the scale
            # changes, the nodes move by scale * x_i and the factor scale of S changes too.
            centre_sensitivity = state[_SHIFT, j] / total
            scale_sensitivity = state[_SCALE, j] * state[_STRETCH, j] / total + 1.0
            inv_var = state[_INV_VAR, j]
            d_mu[start + j] = (
                state[_FIRST, j] * inv_var / total
                + state[_ETA_D_MU, j] * centre_sensitivity
                + state[_LOG_SCALE_D_MU, j] * scale_sensitivity
            )
            d_log_sigma[start + j] = (
                state[_SECOND, j] * inv_var / total
                - 1.0
                + state[_ETA_D_LOG_SD, j] * centre_sensitivity
                + state[_LOG_SCALE_D_LOG_SD, j] * scale_sensitivity
            )


# _centre_rules writes the Newton steps out, so it must change with NEWTON_STEPS.
if NEWTON_STEPS != 3:
    raise ImportError(f"_centre_rules takes 3 Newton steps, but NEWTON_STEPS is {NEWTON_STEPS}")


@numba.njit(**_KERNEL_FLAGS)
def marginal_logp_kernel(mu, log_sigma, cells, x, log_w):
    """Return ``log p(k | mu, sigma)`` per cell (the fused kernel's value)."""
    logp = np.empty(mu.shape[0])
    unused = np.empty(0)
    _evaluate_cells(mu, log_sigma, cells, x, log_w, logp, unused, unused, False)
    return logp


@numba.njit(**_KERNEL_FLAGS)
def marginal_logp_gradient_kernel(mu, log_sigma, cells, x, log_w):
    """Return ``log p`` per cell and its derivatives with respect to ``mu`` and ``log_sigma``."""
    size = mu.shape[0]
    logp = np.empty(size)
    d_mu = np.empty(size)
    d_log_sigma = np.empty(size)
    _evaluate_cells(mu, log_sigma, cells, x, log_w, logp, d_mu, d_log_sigma, True)
    return logp, d_mu, d_log_sigma


def _kernel_version() -> int:
    """Return a number that changes with the kernel's source, so PyTensor's Numba cache never serves an old kernel."""
    functions = (_float_from_bits, _exp, _log1p_unit, _newton_step, _centre_rules, _node_terms, _node_weights, _node_gradient_sums, _evaluate_cells)
    sources = [inspect.getsource(getattr(function, "py_func", getattr(function, "_defn", function))) for function in functions]
    sources.append(repr((NEWTON_STEPS, MAX_STEP, _BLOCK)))
    return int(hashlib.sha256("\n".join(sources).encode()).hexdigest()[:15], 16)


_KERNEL_VERSION = _kernel_version()

# Names of the data inputs of MarginalLogpOp, which follow mu and log_sigma.
_DATA_INPUTS = ("cells", "x", "log_w")


class MarginalLogpOp(Op):
    """PyTensor Op for :func:`marginal_logp` on one vector of cells, computed by a fused Numba kernel.

    Inputs: ``mu`` and ``log_sigma`` (float64 vectors, one value per cell),
    then the data: ``cells``, the float64 matrix of
    :func:`kernel_cell_table` (one column per cell), and the Gauss-Hermite ``x``
    and ``log_w`` of :func:`hermite_rule` (float64 vectors).
    :func:`marginal_logp` passes the data as graph constants, which the
    Numba backend embeds once in the compiled function.

    With ``with_gradient=True`` the node has three outputs: ``logp``,
    ``d logp / d mu`` and ``d logp / d log_sigma``. The pullback reads the
    last two, so a function that needs the value and the gradient runs the
    kernel once. A rewrite replaces the node with the value-only Op
    (``with_gradient=False``) when nothing uses the derivatives.

    The derivatives are those of the returned value (see
    ``_evaluate_cells``), so they equal the gradient that PyTensor derives
    from the elementwise graph up to rounding error. Derivatives of the
    derivative outputs (second derivatives) are not implemented.
    """

    __props__ = ("with_gradient",)

    def __init__(self, with_gradient: bool = True):
        self.with_gradient = bool(with_gradient)
        super().__init__()

    def make_node(self, mu: Any, log_sigma: Any, cells: Any, x: Any, log_w: Any) -> Apply:
        inputs = [pt.as_tensor_variable(value) for value in (mu, log_sigma, cells, x, log_w)]
        names = ("mu", "log_sigma", *_DATA_INPUTS)
        for name, value in zip(names, inputs, strict=True):
            ndim = 2 if name == "cells" else 1
            if value.ndim != ndim or value.dtype != "float64":
                raise TypeError(f"MarginalLogpOp: {name} must be a float64 tensor with {ndim} axes, got {value.type}")
        if inputs[2].type.shape[0] not in (None, 5):
            raise TypeError(f"MarginalLogpOp: cells must have the 5 rows of kernel_cell_table, got {inputs[2].type}")
        lengths = (inputs[0].type.shape[0], inputs[1].type.shape[0], inputs[2].type.shape[1])
        known_lengths = [length for length in lengths if length is not None]
        output_type = TensorType("float64", shape=(known_lengths[0] if known_lengths else None,))
        n_outputs = 3 if self.with_gradient else 1
        return Apply(self, inputs, [output_type() for _ in range(n_outputs)])

    def perform(self, node: Apply, inputs: list[np.ndarray], output_storage: list[list[Any]]) -> None:
        if self.with_gradient:
            results = marginal_logp_gradient_kernel(*inputs)
        else:
            results = (marginal_logp_kernel(*inputs),)
        for storage, result in zip(output_storage, results, strict=True):
            storage[0] = result

    def infer_shape(self, node: Apply, input_shapes: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return [input_shapes[0]] * len(node.outputs)

    def connection_pattern(self, node: Apply) -> list[list[bool]]:
        n_outputs = len(node.outputs)
        parameters = [[True] * n_outputs, [True] * n_outputs]
        return parameters + [[False] * n_outputs for _ in _DATA_INPUTS]

    def pullback(self, inputs: list[Any], outputs: list[Any], cotangents: list[Any]) -> list[Any]:
        mu, log_sigma = inputs[:2]
        for position, cotangent in enumerate(cotangents[1:], start=1):
            if not isinstance(cotangent.type, DisconnectedType):
                message = f"second derivatives of marginal_logp are not implemented (output {position} of {self} is differentiated)"
                return [grad_not_implemented(self, 0, mu, message), grad_not_implemented(self, 1, log_sigma, message)] + [
                    disconnected_type() for _ in _DATA_INPUTS
                ]
        if self.with_gradient:
            d_mu, d_log_sigma = outputs[1], outputs[2]
        else:
            _, d_mu, d_log_sigma = MarginalLogpOp(with_gradient=True)(*inputs)
        output_gradient = cotangents[0]
        return [output_gradient * d_mu, output_gradient * d_log_sigma] + [disconnected_type() for _ in _DATA_INPUTS]


@register_funcify_default_op_cache_key(MarginalLogpOp)
def _numba_funcify_marginal_logp(op: MarginalLogpOp, node: Apply | None = None, **kwargs: Any) -> tuple[Any, int]:
    """Return the Numba kernel of ``op`` for PyTensor's Numba backend, with a cache version from its source."""
    kernel = marginal_logp_gradient_kernel if op.with_gradient else marginal_logp_kernel
    return kernel, _KERNEL_VERSION


@register_specialize
@node_rewriter([MarginalLogpOp])
def drop_unused_marginal_logp_gradient(fgraph: Any, node: Apply) -> dict[Any, Any] | None:
    """Replace a value-and-gradient MarginalLogpOp whose derivatives nothing uses with the value-only Op."""
    if not node.op.with_gradient:
        return None
    if fgraph.clients[node.outputs[1]] or fgraph.clients[node.outputs[2]]:
        return None
    return {node.outputs[0]: MarginalLogpOp(with_gradient=False)(*node.inputs)}


def _fused_marginal_logp(mu: Any, log_sigma: Any, k: np.ndarray, n: np.ndarray, nodes: int) -> Any:
    """Return :func:`marginal_logp` as one MarginalLogpOp node, or None where the Op does not apply.

    The Op takes one value per cell. Scalars and length-1 vectors are
    broadcast to the number of cells. Inputs with more than one axis (leading
    batch axes), vectors whose static length is neither 1 nor the number of
    cells, and non-numeric dtypes return None, and :func:`marginal_logp`
    builds the elementwise graph, which broadcasts them. A vector of unknown
    static length must have one value per cell when the function runs: the
    kernel raises ValueError otherwise.
    """
    mu = pt.as_tensor_variable(mu)
    log_sigma = pt.as_tensor_variable(log_sigma)
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    if k.ndim != 1 or k.shape != n.shape:
        return None
    cells = k.shape[0]
    parameters = []
    for value in (mu, log_sigma):
        if value.ndim > 1 or not value.dtype.startswith(("float", "int", "uint")):
            return None
        length = value.type.shape[0] if value.ndim == 1 else 1
        if length not in (None, 1, cells):
            return None
        value = pt.cast(value, "float64")
        if value.ndim == 0 or length == 1:
            value = pt.broadcast_to(value.reshape((-1,)), (cells,))
        parameters.append(value)
    x, log_w = hermite_rule(nodes)
    constants = [pt.constant(array) for array in (kernel_cell_table(k, n), x, log_w)]
    return MarginalLogpOp(with_gradient=True)(*parameters, *constants)[0]
