"""Convergence and model checks for every fit.

Each check returns a status of ``passed``, ``failed``, ``warning`` or
``not applicable`` with its value and threshold. A fit passes when every
check whose failure invalidates the posterior (R-hat, ESS, divergences,
BFMI) passes. The Pareto k and posterior predictive checks report
``warning`` rather than ``failed``: they question the model, not the
sampler.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from types import SimpleNamespace
from typing import Any

import arviz as az
import numpy as np
import pandas as pd
import xarray as xr
from arviz_stats.validate import validate_ci_prob
from scipy.fft import next_fast_len
from scipy.special import ndtri
from scipy.stats import rankdata

from . import loo as _loo
from ._logging import get_logger
from .errors import RobustscopeError
from .fit import LOGLIK_VARIABLE

log = get_logger("diagnostics")


@dataclass(frozen=True)
class Thresholds:
    """Thresholds a fit must meet.

    ``r_hat_max`` applies to rank-normalised split R-hat, ``ess_min`` to the
    bulk and tail effective sample sizes, ``bfmi_min`` to the Bayesian
    fraction of missing information of every chain. ``ppc_outside_max`` is
    the largest acceptable share of (model, task) pairs whose observed spread
    falls outside the 89% posterior predictive interval (11% is expected for
    a calibrated model).
    """

    r_hat_max: float = 1.01
    ess_min: float = 400.0
    divergences_max: int = 0
    bfmi_min: float = 0.3
    ppc_outside_max: float = 0.25
    ppc_prob: float = 0.89


DEFAULT_THRESHOLDS = Thresholds()
# Variables left out of R-hat and ESS: helper draws whose values are fixed
# functions of others and carry no extra information.
_SKIPPED_PREFIXES = ("share_", "bayes_r2")


def _parameter_names(posterior: xr.Dataset) -> list[str]:
    return [name for name in posterior.data_vars if not name.startswith(_SKIPPED_PREFIXES)]


def _row(check: str, value: float | None, threshold: str, status: str, detail: str = "") -> dict[str, Any]:
    return {"check": check, "value": value, "threshold": threshold, "status": status, "detail": detail}


def _worst(stat: xr.Dataset, largest: bool) -> tuple[float, str]:
    """Return the largest (or smallest) finite value over all variables of ``stat`` and the variable that contains it."""
    worst_value = -np.inf if largest else np.inf
    worst_name = ""
    for name, values in stat.data_vars.items():
        array = np.asarray(values, dtype=float)
        array = array[np.isfinite(array)]
        if array.size == 0:
            continue
        candidate = array.max() if largest else array.min()
        if (largest and candidate > worst_value) or (not largest and candidate < worst_value):
            worst_value, worst_name = float(candidate), str(name)
    return worst_value, worst_name


# Screening of R-hat and ESS.
#
# ArviZ computes R-hat and ESS one element at a time in Python, which takes
# minutes for the hundreds of thousands of pair parameters of a large fit.
# check_fit reports only the worst element, so it first screens every element
# with the vectorised formulas below (the same statistics, computed for many
# elements at once) and then recomputes with ArviZ only the elements that can
# be the worst. The reported value and variable are therefore ArviZ's own.

# Draws held in one block of elements while screening (bounds memory to a few hundred MB).
_SCREEN_BLOCK_VALUES = 2_000_000
# Elements whose screened value lies within this relative margin of the
# screened extreme are recomputed with ArviZ. The vectorised formulas agree
# with ArviZ to about 1e-12 relative (tests/test_diagnostics.py checks
# that), so the margin leaves a wide safety factor.
_SCREEN_MARGIN = 1e-6
# An autocorrelation pair sum this close to zero can end Geyer's sequence at
# a different lag after rounding, so such elements are recomputed with ArviZ.
_GEYER_TIE = 1e-8


def _element_draws(values: xr.DataArray) -> np.ndarray:
    """Return draws as a contiguous (element, chain, draw) array, elements in C order of the extra dimensions."""
    array = np.asarray(values.transpose("chain", "draw", ...).values, dtype=float)
    chains, draws = array.shape[:2]
    return np.ascontiguousarray(np.moveaxis(array.reshape(chains, draws, -1), 2, 0))


def _split_chains(x: np.ndarray) -> np.ndarray:
    """Split every chain of (element, chain, draw) draws into halves, as ArviZ does (an odd middle draw is dropped)."""
    half = x.shape[2] // 2
    return np.concatenate([x[:, :, :half], x[:, :, x.shape[2] - half :]], axis=1)


def _z_scale(x: np.ndarray) -> np.ndarray:
    """Rank-normalise each element over all its draws: Blom's (rank - 3/8) / (n + 1/4) mapped through the normal quantile."""
    flat = x.reshape(x.shape[0], -1)
    ranks = rankdata(flat, axis=1, method="average")
    return ndtri((ranks - 0.375) / (flat.shape[1] + 0.25)).reshape(x.shape)


def _rhat_basic(x: np.ndarray) -> np.ndarray:
    """Potential scale reduction of (element, chain, draw) draws, per element."""
    length = x.shape[2]
    between = length * x.mean(axis=2).var(axis=1, ddof=1)
    within = x.var(axis=2, ddof=1).mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt((between / within + length - 1) / length)


def _screen_rhat(x: np.ndarray) -> np.ndarray:
    """Rank-normalised split R-hat per element: the larger of the bulk and the folded value."""
    split = _split_chains(x)
    bulk = _rhat_basic(_z_scale(split))
    folded = np.abs(split - np.median(split.reshape(split.shape[0], -1), axis=1)[:, None, None])
    tail = _rhat_basic(_z_scale(folded))
    # Python's max(bulk, tail), as ArviZ uses: NaN in bulk wins, NaN in tail does not.
    return np.where(tail > bulk, tail, bulk)


def _ess_geyer(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Effective sample size of (element, chain, draw) draws with Geyer's initial monotone sequence.

    Returns the ESS per element and a mask of elements whose truncation lag
    is within rounding of changing (recomputed with ArviZ).
    """
    elements, chains, length = x.shape
    total = chains * length
    spread = x.max(axis=(1, 2)) - x.min(axis=(1, 2))
    constant = spread < np.finfo(float).resolution
    near_constant = spread < 10 * np.finfo(float).resolution

    centred = x - x.mean(axis=2, keepdims=True)
    size = next_fast_len(2 * length)
    spectrum = np.fft.rfft(centred, n=size, axis=2)
    acov = np.fft.irfft(spectrum * np.conjugate(spectrum), n=size, axis=2)[:, :, :length] / length
    mean_var = acov[:, :, 0].mean(axis=1) * length / (length - 1.0)
    var_plus = mean_var * (length - 1.0) / length
    if chains > 1:
        var_plus = var_plus + x.mean(axis=2).var(axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = 1.0 - (mean_var[:, None] - acov.mean(axis=1)) / var_plus[:, None]

    # Geyer's initial positive sequence: pair k contains lags 2k+2 and 2k+3 and
    # is reached while the previous pair sum is positive and 2k+1 < length-3.
    steps = max(0, -(-(length - 4) // 2))
    pair_sums = rho[:, 2 : 2 + 2 * steps : 2] + rho[:, 3 : 3 + 2 * steps : 2]
    previous = np.concatenate([(1.0 + rho[:, 1])[:, None], pair_sums[:, :-1]], axis=1) if steps else np.empty((elements, 0))
    iterations = np.cumprod(previous > 0, axis=1).sum(axis=1) if steps else np.zeros(elements, dtype=int)

    # Geyer's initial monotone sequence: each pair sum is capped by the one before.
    first_pair = (1.0 + rho[:, 1])[:, None]
    capped = np.minimum.accumulate(np.concatenate([first_pair, pair_sums], axis=1), axis=1)
    used = np.arange(capped.shape[1])[None, :] < iterations[:, None]
    lag_sum = np.where(used, capped, 0.0).sum(axis=1)

    index = np.arange(elements)
    last_pair = np.clip(iterations - 1, 0, max(steps - 1, 0))
    last_sum = pair_sums[index, last_pair] if steps else np.zeros(elements)
    even = rho[index, np.minimum(2 * iterations, length - 1)]
    last = np.where(iterations == 0, 1.0, np.where((last_sum >= 0) | (even > 0), even, 0.0))
    tau = -1.0 + 2.0 * lag_sum + last
    tau = np.maximum(tau, 1.0 / np.log10(total))
    with np.errstate(divide="ignore", invalid="ignore"):
        ess = total / tau
    ess = np.where(constant, float(total), ess)

    reached = np.arange(steps)[None, :] <= iterations[:, None]
    near_zero = np.abs(np.concatenate([previous, pair_sums], axis=1)) if steps else np.zeros((elements, 0))
    mask = np.concatenate([reached, reached], axis=1) if steps else np.zeros((elements, 0), dtype=bool)
    uncertain = (near_constant & ~constant) | ((near_zero < _GEYER_TIE) & mask).any(axis=1) | ~np.isfinite(ess)
    return ess, uncertain


def _screen_ess(x: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Bulk or tail ESS per element of (element, chain, draw) draws, with the mask of uncertain elements."""
    if method == "bulk":
        return _ess_geyer(_z_scale(_split_chains(x)))
    prob = validate_ci_prob(None)
    low, high = sorted((prob, 1.0 - prob))
    values, uncertain = [], []
    for quantile in (low, high):
        cut = np.quantile(x.reshape(x.shape[0], -1), quantile, axis=1)
        ess, unsure = _ess_geyer(_split_chains((x <= cut[:, None, None]).astype(float)))
        values.append(ess)
        uncertain.append(unsure)
    return np.minimum(values[0], values[1]), uncertain[0] | uncertain[1]


def _arviz_statistic(values: xr.DataArray, statistic: str) -> np.ndarray:
    """Compute ``r_hat``, ``ess_bulk`` or ``ess_tail`` with ArviZ, one value per element (C order)."""
    dataset = xr.Dataset({"values": values})
    if statistic == "r_hat":
        result = az.rhat(dataset)
    else:
        result = az.ess(dataset, method=statistic.removeprefix("ess_"))
    return np.asarray(result["values"].values, dtype=float).reshape(-1)


def _exact_elements(values: xr.DataArray, elements: np.ndarray, statistic: str) -> np.ndarray:
    """Recompute ``statistic`` with ArviZ for the elements at the given C-order positions."""
    values = values.transpose("chain", "draw", ...)
    extra = values.dims[2:]
    if not extra:
        return _arviz_statistic(values, statistic)
    positions = np.unravel_index(elements, values.shape[2:])
    indexers = {dim: xr.DataArray(position, dims="_element") for dim, position in zip(extra, positions, strict=True)}
    return _arviz_statistic(values.drop_vars(list(extra), errors="ignore").isel(indexers), statistic)


def _screened_worst(posterior: xr.Dataset, names: list[str], statistic: str) -> tuple[float, str]:
    """Return the worst ``r_hat`` (largest) or ``ess_bulk``/``ess_tail`` (smallest) over ``names``, as :func:`_worst` of ArviZ's values.

    Every element is screened with the vectorised statistic; ArviZ then
    recomputes the elements near the screened extreme and those the screen
    marks uncertain (non-finite draws or results, constant chains, Geyer
    truncation near a tie).
    """
    largest = statistic == "r_hat"
    screened: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in names:
        draws = _element_draws(posterior[name])
        block = max(1, _SCREEN_BLOCK_VALUES // max(1, draws.shape[1] * draws.shape[2]))
        values, uncertain = [], []
        for start in range(0, draws.shape[0], block):
            chunk = draws[start : start + block]
            degenerate = ~np.isfinite(chunk).all(axis=(1, 2)) | (chunk.max(axis=2) == chunk.min(axis=2)).any(axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                if largest:
                    value, unsure = _screen_rhat(chunk), np.zeros(len(chunk), dtype=bool)
                else:
                    value, unsure = _screen_ess(chunk, statistic.removeprefix("ess_"))
            values.append(value)
            uncertain.append(unsure | degenerate | ~np.isfinite(value))
        screened[name] = (np.concatenate(values), np.concatenate(uncertain))

    finite = [values[np.isfinite(values) & ~unsure] for values, unsure in screened.values()]
    finite = [values for values in finite if values.size]
    extreme = None
    if finite:
        extreme = max(v.max() for v in finite) if largest else min(v.min() for v in finite)
    worst_value = -np.inf if largest else np.inf
    worst_name = ""
    for name, (values, unsure) in screened.items():
        candidates = unsure.copy()
        if extreme is not None:
            margin = _SCREEN_MARGIN * max(abs(extreme), 1.0)
            candidates |= (values >= extreme - margin) if largest else (values <= extreme + margin)
        if not candidates.any():
            continue
        exact = _exact_elements(posterior[name], np.flatnonzero(candidates), statistic)
        exact = exact[np.isfinite(exact)]
        if exact.size == 0:
            continue
        candidate = exact.max() if largest else exact.min()
        if (largest and candidate > worst_value) or (not largest and candidate < worst_value):
            worst_value, worst_name = float(candidate), str(name)
    return worst_value, worst_name


def _can_screen(posterior: xr.Dataset) -> bool:
    """Return whether the screen applies: at least two chains and four draws, as ArviZ's R-hat needs."""
    return posterior.sizes.get("chain", 0) >= 2 and posterior.sizes.get("draw", 0) >= 4


def ppc_outside_share(trace: xr.DataTree, prob: float = 0.89) -> float:
    """Return the share of units whose observed value lies outside the central ``prob`` predictive interval.

    The checked quantity is the observed-data variable of the fit: the spread
    of accuracy across perturbations for location-scale fits, the number of
    consistent examples for consistency fits.
    """
    name = "spread" if "spread" in trace["observed_data"].data_vars else next(iter(trace["observed_data"].data_vars))
    replicated = trace["posterior_predictive"][name]
    observed = trace["observed_data"][name].values
    tail = (1.0 - prob) / 2.0
    stacked = replicated.stack(sample=("chain", "draw")).transpose(..., "sample").values.reshape(-1, replicated.sizes["chain"] * replicated.sizes["draw"])
    observed = np.asarray(observed).reshape(-1)
    lower = np.quantile(stacked, tail, axis=1)
    upper = np.quantile(stacked, 1.0 - tail, axis=1)
    return float(np.mean((observed < lower) | (observed > upper)))


def check_fit(trace: xr.DataTree, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> pd.DataFrame:
    """Run every check on a fitted DataTree and return one row per check.

    Columns: ``check``, ``value``, ``threshold``, ``status`` and ``detail``
    (which parameter or observation is worst).
    """
    posterior = trace["posterior"].to_dataset()
    names = _parameter_names(posterior)
    rows = []

    screen = _can_screen(posterior)
    try:
        if screen:
            r_hat, r_hat_name = _screened_worst(posterior, names, "r_hat")
        else:
            r_hat, r_hat_name = _worst(az.rhat(posterior[names]), largest=True)
        status = "passed" if r_hat <= thresholds.r_hat_max else "failed"
    except ValueError as error:
        r_hat, r_hat_name, status = None, f"R-hat could not be computed: {error}", "failed"
    rows.append(_row("r_hat_max", r_hat, f"<= {thresholds.r_hat_max}", status, r_hat_name))
    for method in ("bulk", "tail"):
        try:
            if screen:
                ess, ess_name = _screened_worst(posterior, names, f"ess_{method}")
            else:
                ess, ess_name = _worst(az.ess(posterior[names], method=method), largest=False)
            status = "passed" if ess >= thresholds.ess_min else "failed"
        except ValueError as error:
            # ArviZ raises on degenerate draws (for example constant tails of a stuck chain).
            ess, ess_name, status = None, f"ESS could not be computed: {error}", "failed"
        rows.append(_row(f"ess_{method}_min", ess, f">= {thresholds.ess_min:.0f}", status, ess_name))

    stats = trace["sample_stats"].to_dataset() if "sample_stats" in trace.children else xr.Dataset()
    if "diverging" in stats:
        divergences = int(np.asarray(stats["diverging"]).sum())
        status = "passed" if divergences <= thresholds.divergences_max else "failed"
        rows.append(_row("divergences", divergences, f"<= {thresholds.divergences_max}", status))
    else:
        rows.append(_row("divergences", None, f"<= {thresholds.divergences_max}", "not applicable", "no sample_stats"))
    if "energy" in stats:
        bfmi = float(np.min(np.asarray(az.bfmi(stats["energy"]))))
        rows.append(_row("bfmi_min", bfmi, f">= {thresholds.bfmi_min}", "passed" if bfmi >= thresholds.bfmi_min else "failed"))
    else:
        rows.append(_row("bfmi_min", None, f">= {thresholds.bfmi_min}", "not applicable", "no energy in sample_stats"))

    result = None
    stored = trace["loo"].to_dataset() if "loo" in trace.children else None
    if stored is not None and "pareto_k" in stored and "loo_good_k" in trace.attrs:
        # The fit stored its PSIS-LOO results (robustscope.loo.add_pointwise_elpd), so they are not computed again.
        result = SimpleNamespace(pareto_k=stored["pareto_k"].values, good_k=float(trace.attrs["loo_good_k"]))
    elif "log_likelihood" in trace.children:
        # NOTE: arviz.loo smooths one pair at a time in Python, so this is the
        # slowest check on fits with many pairs (about 49 s at 20,000 pairs).
        try:
            # The integrated log likelihood where the fit has one (robustscope.loo.loo_likelihood).
            result = _loo._loo(trace)
        except (ValueError, RobustscopeError) as error:
            rows.append(_row("pareto_k_max", None, "<= 0.7", "warning", f"PSIS-LOO could not be computed: {error}"))
    if result is not None:
        pareto_k = np.asarray(result.pareto_k)
        good_k = float(result.good_k)
        # A Pareto k that could not be estimated (NaN) counts as unreliable.
        high = int(np.sum(~(pareto_k <= good_k)))
        worst = int(np.argmax(np.where(np.isnan(pareto_k), np.inf, pareto_k)))
        pair = str(stored["pair"].values[worst]) if stored is not None and "pair" in stored.coords else str(trace["log_likelihood"][LOGLIK_VARIABLE]["pair"].values[worst])
        detail = f"{high} of {pareto_k.size} pairs above the threshold; worst: {pair}"
        if "integrated_loglik_skipped" in trace.attrs:
            detail += " (conditional log likelihood: the integrated form was not computed)"
        rows.append(
            _row(
                "pareto_k_max",
                float(np.nanmax(pareto_k)) if np.any(np.isfinite(pareto_k)) else None,
                f"<= {good_k:.2f} (sample-size dependent)",
                "passed" if high == 0 else "warning",
                detail,
            )
        )
    elif "log_likelihood" not in trace.children:
        rows.append(_row("pareto_k_max", None, "<= 0.7", "not applicable", "no log_likelihood group"))

    if "posterior_predictive" in trace.children and "observed_data" in trace.children:
        outside = ppc_outside_share(trace, thresholds.ppc_prob)
        rows.append(
            _row(
                "ppc_spread_outside",
                outside,
                f"<= {thresholds.ppc_outside_max} (about {1 - thresholds.ppc_prob:.2f} expected)",
                "passed" if outside <= thresholds.ppc_outside_max else "warning",
                f"share of pairs whose observed accuracy spread is outside the {thresholds.ppc_prob:.0%} predictive interval",
            )
        )
    return pd.DataFrame(rows)


def summarize(checks: pd.DataFrame) -> dict[str, Any]:
    """Return the diagnostics dictionary written to ``summary.json``."""
    by_name = checks.set_index("check")

    def value(name: str) -> Any:
        if name not in by_name.index:
            return None
        item = by_name.loc[name, "value"]
        return None if item is None or (isinstance(item, float) and np.isnan(item)) else item

    failed = checks.loc[checks["status"] == "failed", "check"].tolist()
    warnings = checks.loc[checks["status"] == "warning", "check"].tolist()
    return {
        "r_hat_max": value("r_hat_max"),
        "ess_bulk_min": value("ess_bulk_min"),
        "ess_tail_min": value("ess_tail_min"),
        "divergences": value("divergences"),
        "bfmi_min": value("bfmi_min"),
        "pareto_k_max": value("pareto_k_max"),
        "ppc_spread_outside": value("ppc_spread_outside"),
        "passed": not failed,
        "failed_checks": failed,
        "warnings": warnings,
        "thresholds": asdict(DEFAULT_THRESHOLDS),
    }


def log_checks(checks: pd.DataFrame) -> None:
    """Log each check; failures at error level so they are seen."""
    for row in checks.itertuples():
        message = "%s = %s (threshold %s): %s %s"
        args = (row.check, row.value, row.threshold, row.status.upper(), row.detail)
        if row.status == "failed":
            log.error(message, *args)
        elif row.status == "warning":
            log.warning(message, *args)
        else:
            log.info(message, *args)
