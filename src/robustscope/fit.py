"""Fit a model specification to a tensor and return the posterior as a DataTree.

The returned :class:`xarray.DataTree` has the groups ``posterior`` (model
parameters plus the variance shares of :mod:`robustscope.decompose`),
``sample_stats``, ``log_likelihood`` (variable ``n_correct``: one value per
(model, task) pair and draw, given the pair's latent competence and spread), ``log_likelihood_integrated``
(the same with those two latent values integrated out; PSIS-LOO uses it when
present), ``posterior_predictive`` (the replicated spread of each
pair's accuracy across perturbations), ``observed_data`` (the observed
spread) and ``constant_data`` (pair indices). Its attributes record the
tensor hash, the specification, the sampler, the seed, package versions and
wall times, so a fit can be traced back and reproduced.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from . import decompose
from . import tensor as _tensor
from ._io import atomic_path
from ._logging import get_logger
from .errors import InputError, RobustscopeError
from .loo import INTEGRATED_GROUP, add_pointwise_elpd
from .models import family_module
from .models.location_scale import (
    MAX_UNRESOLVED_SHARE,
    MIN_PRIOR_TO_POSTERIOR_SD,
    LocationScaleData,
    build_model,
    initial_point,
    integrated_pair_loglik,
    integration_unresolved,
    pair_loglik,
    prepare_data,
    spline_basis,
    spline_detrend,
)
from .specs import ModelSpec, load_spec

log = get_logger("fit")

DEFAULT_SPEC = "location-scale"
# Posterior predictive checks use at most this many draws (thinned evenly).
PPC_DRAWS = 1000
# Name of the pointwise log likelihood in the log_likelihood group: the counts
# of correct answers, summed within each (model, task) pair.
LOGLIK_VARIABLE = "n_correct"
# Pointwise log likelihood is computed in chunks of this many draws.
LOGLIK_CHUNK = 100
# Largest number of float64 values one chunk of the pointwise log likelihood
# (draws x count patterns x quadrature nodes) or of the posterior predictive
# check (draws x cells) holds: about 128 MB per array.
CHUNK_ELEMENTS = 16_000_000
VERSION_PACKAGES = ("robustscope", "pymc", "pytensor", "nutpie", "arviz", "arviz-stats", "numpy", "xarray")


def package_versions() -> dict[str, str]:
    """Return the installed versions of the packages that determine a fit."""
    versions = {"python": platform.python_version()}
    for name in VERSION_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _as_tensor(tensor: xr.Dataset | str | Path) -> xr.Dataset:
    if isinstance(tensor, xr.Dataset):
        return _tensor.validate(tensor)
    return _tensor.load(tensor)


def sample_model(
    model: Any, spec: ModelSpec, *, progress: bool = True, initial_points: dict[str, np.ndarray] | None = None
) -> tuple[xr.DataTree, dict[str, float]]:
    """Draw from ``model`` with the sampler the specification names; return the trace and timings.

    ``initial_points`` maps free variable names to starting values (on the
    variables' own scale); the sampler jitters them per chain. Variables not
    named start at their prior's support point.
    """
    settings = spec.sampler
    cores = settings.cores or min(settings.chains, os.cpu_count() or 1)
    timings: dict[str, float] = {}
    if settings.name == "nutpie":
        import nutpie

        start = time.perf_counter()
        compiled = nutpie.compile_pymc_model(model, initial_points=initial_points or None)
        timings["compile_seconds"] = time.perf_counter() - start
        log.info(
            "sampling with nutpie: %d chains x (%d tuning + %d draws), seed %d, %d cores, %s mass matrix",
            settings.chains,
            settings.tune,
            settings.draws,
            settings.seed,
            cores,
            settings.mass_matrix,
        )
        start = time.perf_counter()
        trace = nutpie.sample(
            compiled,
            draws=settings.draws,
            tune=settings.tune,
            chains=settings.chains,
            cores=cores,
            seed=settings.seed,
            target_accept=settings.target_accept,
            adaptation="low_rank" if settings.mass_matrix == "low-rank" else "diag",
            progress_bar=progress,
            save_warmup=False,
        )
        timings["sampling_seconds"] = time.perf_counter() - start
    else:
        import pymc as pm

        if settings.mass_matrix != "diagonal":
            raise RobustscopeError(
                f"mass_matrix {settings.mass_matrix!r} needs the nutpie sampler; "
                "sample with nutpie or set sampler.mass_matrix to 'diagonal' in the specification"
            )
        start = time.perf_counter()
        with model:
            trace = pm.sample(
                draws=settings.draws,
                tune=settings.tune,
                chains=settings.chains,
                cores=cores,
                random_seed=settings.seed,
                target_accept=settings.target_accept,
                progressbar=progress,
                nuts_sampler="pymc",
                initvals=initial_points or None,
                compute_convergence_checks=False,
            )
        timings["compile_seconds"] = 0.0
        timings["sampling_seconds"] = time.perf_counter() - start
    if not isinstance(trace, xr.DataTree):
        raise RobustscopeError(f"the sampler returned {type(trace).__name__}, expected an xarray.DataTree")
    return trace, timings


def pointwise_loglik(posterior: xr.Dataset, data: LocationScaleData, spec: ModelSpec) -> xr.DataArray:
    """Return the log likelihood of each (model, task) pair per draw, on (chain, draw, pair)."""
    mu = posterior["mu"].transpose("chain", "draw", "pair").values
    log_sigma = posterior["log_sigma"].transpose("chain", "draw", "pair").values
    chains, draws, pairs = mu.shape
    flat_mu = mu.reshape(chains * draws, pairs)
    flat_ls = log_sigma.reshape(chains * draws, pairs)
    out = np.empty((chains * draws, pairs))
    chunk = max(1, min(LOGLIK_CHUNK, CHUNK_ELEMENTS // (len(data.unique_k) * spec.quadrature_nodes)))
    for start in range(0, chains * draws, chunk):
        stop = start + chunk
        out[start:stop] = pair_loglik(flat_mu[start:stop], flat_ls[start:stop], data, spec, xp=np)
    return xr.DataArray(
        out.reshape(chains, draws, pairs),
        dims=("chain", "draw", "pair"),
        coords={"chain": posterior["chain"], "draw": posterior["draw"], "pair": posterior["pair"]},
        name=LOGLIK_VARIABLE,
    )


def pair_spread(k: np.ndarray, n: np.ndarray, cell_pair: np.ndarray, n_pairs: int) -> np.ndarray:
    """Return the standard deviation (ddof=1) of accuracy across perturbations per pair, on the probability scale.

    ``k`` may carry leading draw axes; ``cell_pair`` indexes the last axis.
    """
    accuracy = k / n
    counts = np.bincount(cell_pair, minlength=n_pairs)
    lead = accuracy.shape[:-1]
    flat = accuracy.reshape(-1, accuracy.shape[-1])
    sums = np.zeros((flat.shape[0], n_pairs))
    squares = np.zeros((flat.shape[0], n_pairs))
    for row in range(flat.shape[0]):
        sums[row] = np.bincount(cell_pair, weights=flat[row], minlength=n_pairs)
        squares[row] = np.bincount(cell_pair, weights=flat[row] ** 2, minlength=n_pairs)
    mean = sums / counts
    variance = (squares - counts * mean**2) / np.maximum(counts - 1, 1)
    return np.sqrt(np.clip(variance, 0.0, None)).reshape(lead + (n_pairs,))


def posterior_predictive_spread(posterior: xr.Dataset, data: LocationScaleData, seed: int) -> xr.DataArray:
    """Simulate each pair's accuracy spread across perturbations from the posterior.

    Draws new perturbation effects ``z`` and binomial counts for every
    observed cell, using at most ``PPC_DRAWS`` evenly thinned draws.
    """
    rng = np.random.default_rng(seed)
    stacked = posterior[["mu", "log_sigma"]].stack(sample=("chain", "draw")).transpose("sample", "pair")
    total = stacked.sizes["sample"]
    keep = np.unique(np.linspace(0, total - 1, min(PPC_DRAWS, total)).astype(int))
    mu = stacked["mu"].values[keep]
    sigma = np.exp(stacked["log_sigma"].values[keep])
    # Simulate in chunks of draws so that no array exceeds CHUNK_ELEMENTS
    # values; data small enough for one chunk get the same stream as unchunked.
    n_cells = len(data.cell_pair)
    chunk = max(1, CHUNK_ELEMENTS // n_cells)
    spread = np.empty((len(keep), data.n_pairs))
    for start in range(0, len(keep), chunk):
        rows = slice(start, start + chunk)
        noise = rng.standard_normal((len(mu[rows]), n_cells))
        eta = mu[rows][:, data.cell_pair] + sigma[rows][:, data.cell_pair] * noise
        k = rng.binomial(data.cell_n, 1.0 / (1.0 + np.exp(-eta)))
        spread[rows] = pair_spread(k, data.cell_n, data.cell_pair, data.n_pairs)
    return xr.DataArray(spread[None], dims=("chain", "draw", "pair"), coords={"chain": [0], "draw": np.arange(len(keep)), "pair": posterior["pair"].values})


def fit(
    tensor: xr.Dataset | str | Path,
    spec: str | Path | ModelSpec = DEFAULT_SPEC,
    *,
    chains: int | None = None,
    draws: int | None = None,
    tune: int | None = None,
    seed: int | None = None,
    sampler: str | None = None,
    output: str | Path | None = None,
    progress: bool = True,
) -> xr.DataTree:
    """Fit the model ``spec`` to ``tensor`` and return the posterior.

    Parameters
    ----------
    tensor
        A tensor (``xarray.Dataset``) or the path of one saved by ``ingest``.
    spec
        A specification name from ``models/``, a YAML path or a ``ModelSpec``.
    chains, draws, tune, seed, sampler
        Override the specification's sampler settings.
    output
        If given, write the posterior there as NetCDF, atomically.
    progress
        Show the sampler's progress bar.

    Returns
    -------
    xarray.DataTree
        The posterior with diagnostics inputs and provenance attributes.

    Raises
    ------
    RobustscopeError
        When the tensor does not fit the model (for example a continuous metric).
    """
    started = time.perf_counter()
    ds = _as_tensor(tensor)
    model_spec = load_spec(spec).with_sampler(chains=chains, draws=draws, tune=tune, seed=seed, name=sampler)
    if model_spec.family == "location-scale":
        trace, timings, extra = _fit_location_scale(ds, model_spec, progress=progress)
    else:
        trace, timings, extra = family_module(model_spec.family).fit_family(ds, model_spec, progress=progress)
    timings["total_seconds"] = time.perf_counter() - started
    trace.attrs.update(
        {
            "dataset": str(ds.attrs.get("dataset")),
            "metric": str(ds.attrs.get("metric")),
            "tensor_hash": _tensor.tensor_hash(ds),
            "family": model_spec.family,
            "spec_name": model_spec.name,
            "spec": model_spec.to_json(),
            "sampler": model_spec.sampler.name,
            "seed": int(model_spec.sampler.seed),
            "chains": int(model_spec.sampler.chains),
            "draws": int(model_spec.sampler.draws),
            "tune": int(model_spec.sampler.tune),
            "versions": json.dumps(package_versions()),
            "timings": json.dumps(timings),
            "manifest": json.dumps(ds.attrs.get("manifest", {}), default=str),
            "caveat": str(ds.attrs.get("caveat", "")),
            **extra,
        }
    )
    add_pointwise_elpd(trace)
    log.info(
        "fit finished in %.0f s (compile %.0f s, sampling %.0f s)",
        timings["total_seconds"],
        timings.get("compile_seconds", 0.0),
        timings["sampling_seconds"],
    )
    if output is not None:
        save_posterior(trace, output)
    return trace



def _fit_location_scale(ds: xr.Dataset, model_spec: ModelSpec, *, progress: bool) -> tuple[xr.DataTree, dict[str, float], dict[str, Any]]:
    """Fit the location-scale family; return the trace, timings and extra attributes."""
    data = prepare_data(ds)
    log.info(
        "fitting %s to %s: %d pairs, %d cells (%d distinct count patterns)",
        model_spec.name,
        ds.attrs.get("dataset"),
        data.n_pairs,
        len(data.cell_k),
        len(data.unique_k),
    )
    model = build_model(data, model_spec)
    trace, timings = sample_model(model, model_spec, progress=progress, initial_points=initial_point(data, model_spec, model))

    posterior = trace["posterior"].to_dataset()
    components = decompose.scale_components(posterior, data.pair_model, data.pair_task, data.competence_center)
    shares = decompose.variance_shares(components)
    posterior = posterior.assign(shares.data_vars)
    trace["posterior"] = xr.DataTree(posterior)

    start = time.perf_counter()
    loglik = pointwise_loglik(posterior, data, model_spec)
    timings["loglik_seconds"] = time.perf_counter() - start
    trace["log_likelihood"] = xr.DataTree(xr.Dataset({LOGLIK_VARIABLE: loglik}))
    unresolved = integration_unresolved(posterior, model_spec)
    if np.any(unresolved > MAX_UNRESOLVED_SHARE):
        # A wrong integral is worse than none: PSIS-LOO falls back to the
        # conditional log likelihood, whose Pareto k then flags the pairs.
        reason = (
            f"the integrated log likelihood was not computed: in up to {unresolved.max():.0%} of the draws of "
            f"{int(np.sum(unresolved > MAX_UNRESOLVED_SHARE))} of {data.n_pairs} pairs a hierarchical SD (sd_e or sd_model_task) "
            f"is narrower than {MIN_PRIOR_TO_POSTERIOR_SD:g} times the pair's posterior SD, which its quadrature grid cannot resolve; "
            "PSIS-LOO uses the conditional log likelihood"
        )
        log.warning("%s", reason)
        trace.attrs["integrated_loglik_skipped"] = reason
    else:
        start = time.perf_counter()
        integrated = integrated_pair_loglik(posterior, data, model_spec)
        timings["integrated_loglik_seconds"] = time.perf_counter() - start
        trace[INTEGRATED_GROUP] = xr.DataTree(xr.Dataset({LOGLIK_VARIABLE: loglik.copy(data=integrated)}))
    trace["posterior_predictive"] = xr.DataTree(xr.Dataset({"spread": posterior_predictive_spread(posterior, data, model_spec.sampler.seed)}))
    observed_spread = pair_spread(data.cell_k.astype(float), data.cell_n, data.cell_pair, data.n_pairs)
    pair_coord = {"pair": posterior["pair"].values}
    trace["observed_data"] = xr.DataTree(xr.Dataset({"spread": ("pair", observed_spread)}, coords=pair_coord))
    accuracy = np.bincount(data.cell_pair, weights=data.cell_k / data.cell_n) / data.pair_perturbations
    trace["constant_data"] = xr.DataTree(
        xr.Dataset(
            {
                "pair_model": ("pair", data.pair_model),
                "pair_task": ("pair", data.pair_task),
                "pair_perturbations": ("pair", data.pair_perturbations),
                "pair_accuracy": ("pair", accuracy),
                "pair_empirical_logit": ("pair", data.pair_empirical_logit),
            },
            coords={**pair_coord, "model": data.models, "task": data.tasks},
        )
    )
    knots, width = spline_basis(data, model_spec)
    offsets, slopes = spline_detrend(data, knots, width)
    extra = {
        "competence_center": float(data.competence_center),
        "spline_knots": json.dumps([float(k) for k in knots]),
        "spline_width": float(width),
        "spline_offsets": json.dumps([float(v) for v in offsets]),
        "spline_slopes": json.dumps([float(v) for v in slopes]),
        "excluded_pairs": json.dumps(data.extras.get("excluded_pairs", [])),
    }
    return trace, timings, extra


def save_posterior(trace: xr.DataTree, path: str | Path) -> Path:
    """Write a fitted DataTree to NetCDF atomically and return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        trace.to_netcdf(tmp, engine="h5netcdf")
    log.info("wrote posterior %s", path)
    return path


def load_posterior(path: str | Path) -> xr.DataTree:
    """Read a posterior written by :func:`save_posterior`.

    Raises
    ------
    InputError
        When the file is missing or not a robustscope posterior.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("posterior file not found", path=path, hint="run `robustscope fit` first or check the path")
    try:
        tree = xr.open_datatree(path, engine="h5netcdf").load()
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read the file as a NetCDF DataTree: {error}", path=path) from error
    if "posterior" not in tree.children or "spec" not in tree.attrs:
        raise InputError("not a robustscope posterior (no posterior group or specification attribute)", path=path)
    return tree


def pair_table(trace: xr.DataTree) -> pd.DataFrame:
    """Return per-pair posterior means of competence and spread with the observed summaries."""
    posterior = trace["posterior"].to_dataset()
    constant = trace["constant_data"].to_dataset()
    models = constant["model"].values
    tasks = constant["task"].values
    frame = pd.DataFrame(
        {
            "model": models[constant["pair_model"].values],
            "task": tasks[constant["pair_task"].values],
            "accuracy": constant["pair_accuracy"].values,
            "observed_spread": trace["observed_data"]["spread"].values,
            "mu_mean": posterior["mu"].mean(("chain", "draw")).values,
            "log_sigma_mean": posterior["log_sigma"].mean(("chain", "draw")).values,
        }
    )
    return frame
