"""Convergence and model checks for every fit.

Each check returns a status of ``passed``, ``failed``, ``warning`` or
``not applicable`` with its value and threshold. A fit passes when every
check whose failure invalidates the posterior (R-hat, ESS, divergences,
BFMI) passes. The Pareto k and posterior predictive checks report
``warning`` rather than ``failed``: they question the model, not the
sampler.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

import arviz as az
import numpy as np
import pandas as pd
import xarray as xr

from ._logging import get_logger
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


def ppc_outside_share(trace: xr.DataTree, prob: float = 0.89) -> float:
    """Return the share of pairs whose observed spread lies outside the central ``prob`` predictive interval."""
    replicated = trace["posterior_predictive"]["spread"]
    observed = trace["observed_data"]["spread"].values
    tail = (1.0 - prob) / 2.0
    stacked = replicated.stack(sample=("chain", "draw")).transpose("pair", "sample").values
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

    try:
        r_hat, r_hat_name = _worst(az.rhat(posterior[names]), largest=True)
        status = "passed" if r_hat <= thresholds.r_hat_max else "failed"
    except ValueError as error:
        r_hat, r_hat_name, status = None, f"R-hat could not be computed: {error}", "failed"
    rows.append(_row("r_hat_max", r_hat, f"<= {thresholds.r_hat_max}", status, r_hat_name))
    for method in ("bulk", "tail"):
        try:
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
    if "log_likelihood" in trace.children:
        try:
            with warnings.catch_warnings():
                # The Pareto k values are reported below, with the threshold for this sample size.
                warnings.simplefilter("ignore", UserWarning)
                result = az.loo(trace, var_name=LOGLIK_VARIABLE, pointwise=True)
        except ValueError as error:
            rows.append(_row("pareto_k_max", None, "<= 0.7", "warning", f"PSIS-LOO could not be computed: {error}"))
    if result is not None:
        pareto_k = np.asarray(result.pareto_k)
        good_k = float(result.good_k)
        high = int(np.sum(pareto_k > good_k))
        worst = int(np.argmax(pareto_k))
        pair = str(trace["log_likelihood"][LOGLIK_VARIABLE]["pair"].values[worst])
        rows.append(
            _row(
                "pareto_k_max",
                float(pareto_k.max()),
                f"<= {good_k:.2f} (sample-size dependent)",
                "passed" if high == 0 else "warning",
                f"{high} of {pareto_k.size} pairs above the threshold; worst: {pair}",
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
