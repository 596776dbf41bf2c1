"""Benchmark: robustscope's default location-scale fit against bambi, plain PyMC and NumPyro.

The model (``models/location-scale.yaml``)::

    n_correct[m,t,c] ~ Binomial(n, inv_logit(mu[m,t] + sigma[m,t] z[m,t,c])),  z ~ Normal(0, 1)
    mu[m,t]          = alpha + a[m] + b[t] + ab[m,t]
    log sigma[m,t]   = gamma0 + gamma1 (mu[m,t] - c0) + u[m] + v[t] + e[m,t]

is fitted four ways, one after the other in the same run, each in a fresh
Python process:

* ``robustscope``: ``robustscope.fit.fit`` with the default specification
  (``z`` integrated out by adaptive Gauss-Hermite quadrature, centred
  parameters, nutpie). Its wall time includes the pointwise log likelihood
  and the posterior predictive check that ``fit`` always computes.
* ``bambi``: a distributional model as bambi's documentation writes one,
  ``y ~ 1 + (1|model) + (1|task) + (1|model:task)`` with
  ``sigma ~ 1 + competence + (1|model) + (1|task) + (1|model:task)``, fitted
  with ``Model.fit`` (PyMC's NUTS). bambi has no binomial family with a
  latent per-perturbation effect whose spread has its own formula, so the
  closest faithful version differs in three ways. First, the response ``y``
  is the empirical logit ``log((k + 0.5) / (n - k + 0.5))`` of each cell
  with a normal likelihood, so ``sigma`` also contains the binomial sampling
  noise. Second, the competence covariate is each pair's observed mean
  empirical logit minus ``c0``, a fixed number rather than the latent
  ``mu``, so its uncertainty does not reach ``gamma1``. Third, bambi's group
  effects are ordinary normal effects rather than zero-sum ones, so the
  intercepts are not grand means. Its variance shares use the observed
  covariate in place of ``mu``, which is the decomposition that model makes.
* ``pymc``: the same model as robustscope in plain PyMC, non-centred, with
  an explicit latent ``z`` per cell and a ``Binomial`` likelihood, sampled
  with ``pm.sample`` and its default NUTS. With nutpie installed, PyMC 6.4
  hands that to nutpie (its log reads ``NUTS[nutpie]``).
* ``pymc-nuts``: the same, with ``pm.sample(nuts_sampler="pymc")``, PyMC's
  own NUTS.
* ``numpyro``: the same explicit-latent, non-centred model in NumPyro,
  sampled with its NUTS, chains in parallel on CPU devices.

For each fit it records the wall time and the convergence checks of
``robustscope.diagnostics``: R-hat at most 1.01, bulk and tail ESS at least
400, no divergences and BFMI at least 0.3. The checks cover the model-level
parameters that all four fits share, so the per-cell ``z`` of the
explicit-latent fits are left out. It also records the bulk ESS per second
of wall time of ``gamma1`` and of the four variance shares, which
``robustscope.decompose`` computes from each fit's own posterior. A fit that passes the wall-time cap is killed and recorded as
"did not finish". A fit that finishes but fails a check is run again at the
next ``--target-accept`` value; every attempt is recorded.

Usage::

    python benchmarks/bench_alternatives.py --quick
    python benchmarks/bench_alternatives.py [--tasks 5] [--cap-minutes 20] [--target-accept 0.8 0.95]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

ALTERNATIVES = ("robustscope", "bambi", "pymc", "pymc-nuts", "numpyro")
DESCRIPTIONS = {
    "robustscope": "robustscope default (z integrated out, nutpie)",
    "bambi": "bambi distributional model (normal on empirical logits, PyMC NUTS)",
    "pymc": "plain PyMC, non-centred, explicit z (pm.sample defaults: nutpie's NUTS)",
    "pymc-nuts": "plain PyMC, non-centred, explicit z (pm.sample, PyMC's own NUTS)",
    "numpyro": "NumPyro, non-centred, explicit z (NUTS)",
}

# Model-level parameters whose R-hat and ESS every fit is checked on.
COMPARED = (
    "alpha",
    "sd_model",
    "sd_task",
    "sd_model_task",
    "a_model",
    "b_task",
    "mu",
    "gamma0",
    "gamma1",
    "sd_u",
    "sd_v",
    "sd_e",
    "u_model",
    "v_task",
    "log_sigma",
)

# bambi's names for the parameters in COMPARED (bambi 0.21).
BAMBI_NAMES = {
    "alpha": "Intercept",
    "sd_model": "1|model_sigma",
    "sd_task": "1|task_sigma",
    "sd_model_task": "1|model:task_sigma",
    "a_model": "1|model",
    "b_task": "1|task",
    "gamma0": "sigma_Intercept",
    "gamma1": "sigma_competence",
    "sd_u": "sigma_1|model_sigma",
    "sd_v": "sigma_1|task_sigma",
    "sd_e": "sigma_1|model:task_sigma",
    "u_model": "sigma_1|model",
    "v_task": "sigma_1|task",
}

QUICK_SIZE = {"models": 4, "tasks": 5, "perturbations": 8, "n_examples": 40}
QUICK_SAMPLER = {"chains": 2, "tune": 150, "draws": 150}
QUICK_CAP_MINUTES = 1.5


# ---------------------------------------------------------------- data


def select_tasks(ds: Any, tasks: str | None) -> Any:
    """Return the tensor restricted to the first N tasks (``tasks`` a whole number) or to the named, comma-separated tasks."""
    if tasks is None:
        return ds
    available = [str(t) for t in ds["task"].values]
    if tasks.isdigit():
        chosen = available[: int(tasks)]
    else:
        chosen = [name.strip() for name in tasks.split(",") if name.strip()]
        unknown = [name for name in chosen if name not in available]
        if unknown:
            raise SystemExit(f"invalid --tasks: {unknown} not found in the tensor. Available tasks: {available}")
    if len(chosen) < 2:
        raise SystemExit(f"invalid --tasks: the model needs at least two tasks, got {chosen}")
    return ds.sel(task=chosen)


def build_tensor(args: argparse.Namespace) -> tuple[Any, str]:
    """Return the tensor to fit and a sentence describing it."""
    if args.quick:
        from robustscope.simulate import simulate_location_scale

        ds, _ = simulate_location_scale(**QUICK_SIZE, seed=args.seed)
        size = QUICK_SIZE
        return ds, (
            f"simulated with `robustscope.simulate.simulate_location_scale`: {size['models']} models x {size['tasks']} tasks "
            f"x {size['perturbations']} perturbations, {size['n_examples']} examples per cell"
        )

    from robustscope.ingest import ingest

    ds = ingest(str(args.data), "multi-prompt")
    ds = select_tasks(ds, args.tasks)
    subset = f", tasks {args.tasks}" if args.tasks else ""
    return ds, f"the shipped multi-prompt tensor (`{args.data.relative_to(_common.ROOT) if args.data.is_relative_to(_common.ROOT) else args.data}`{subset})"


# ---------------------------------------------------------------- fits (run in the child process)


def _pymc_prior(pm: Any, spec: Any, name: str, **kwargs: Any) -> Any:
    prior = spec.prior(name)
    if prior.dist == "normal":
        return pm.Normal(name, mu=prior.mu, sigma=prior.sigma, **kwargs)
    if prior.dist == "halfnormal":
        return pm.HalfNormal(name, sigma=prior.sigma, **kwargs)
    if prior.dist == "exponential":
        return pm.Exponential(name, lam=prior.lam, **kwargs)
    raise ValueError(f"unsupported prior {prior.dist!r} for {name!r}")


def _numpyro_prior(spec: Any, name: str) -> Any:
    import numpyro
    import numpyro.distributions as dist

    prior = spec.prior(name)
    if prior.dist == "normal":
        return numpyro.sample(name, dist.Normal(prior.mu, prior.sigma))
    if prior.dist == "halfnormal":
        return numpyro.sample(name, dist.HalfNormal(prior.sigma))
    if prior.dist == "exponential":
        return numpyro.sample(name, dist.Exponential(prior.lam))
    raise ValueError(f"unsupported prior {prior.dist!r} for {name!r}")


def fit_robustscope(ds: Any, data: Any, spec: Any, settings: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """Fit with ``robustscope.fit.fit`` and return its posterior, sampler statistics and timings."""
    from robustscope.fit import fit

    trace = fit(ds, spec, progress=False)
    timings = json.loads(trace.attrs["timings"])
    return trace["posterior"].to_dataset(), trace["sample_stats"].to_dataset(), {"sampling_seconds": timings.get("sampling_seconds"), "timings": timings}


def fit_bambi(ds: Any, data: Any, spec: Any, settings: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """Fit the bambi distributional model and return its posterior under robustscope's names."""
    import bambi as bmb
    import pandas as pd
    import xarray as xr

    models = np.asarray(data.models)[data.pair_model]
    tasks = np.asarray(data.tasks)[data.pair_task]
    covariate = data.pair_empirical_logit - data.competence_center
    cells = pd.DataFrame(
        {
            "y": np.log((data.cell_k + 0.5) / (data.cell_n - data.cell_k + 0.5)),
            "model": models[data.cell_pair],
            "task": tasks[data.cell_pair],
            "competence": covariate[data.cell_pair],
        }
    )
    formula = bmb.Formula(
        "y ~ 1 + (1|model) + (1|task) + (1|model:task)",
        "sigma ~ 1 + competence + (1|model) + (1|task) + (1|model:task)",
    )
    model = bmb.Model(formula, cells, family="gaussian")
    start = time.perf_counter()
    idata = model.fit(
        draws=settings["draws"],
        tune=settings["tune"],
        chains=settings["chains"],
        cores=settings["cores"],
        random_seed=settings["seed"],
        nuts={"target_accept": settings["target_accept"]},
        progressbar=False,
    )
    sampling_seconds = time.perf_counter() - start
    raw = idata["posterior"].to_dataset()

    renamed = {}
    for ours, theirs in BAMBI_NAMES.items():
        if theirs in raw:
            renamed[ours] = raw[theirs]
    posterior = xr.Dataset(renamed).rename({"model__factor_dim": "model", "task__factor_dim": "task"})
    posterior = posterior.drop_vars([name for name in ("model", "task") if name in posterior.coords])
    pair_labels = [f"{m}:{t}" for m, t in zip(models, tasks, strict=True)]
    pair_model = xr.DataArray(data.pair_model, dims="pair")
    pair_task = xr.DataArray(data.pair_task, dims="pair")
    ab = raw["1|model:task"].sel({"model:task__factor_dim": pair_labels}).rename({"model:task__factor_dim": "pair"}).drop_vars("pair")
    e = raw["sigma_1|model:task"].sel({"model:task__factor_dim": pair_labels}).rename({"model:task__factor_dim": "pair"}).drop_vars("pair")
    model_index = {str(label): i for i, label in enumerate(raw["model__factor_dim"].values)}
    task_index = {str(label): i for i, label in enumerate(raw["task__factor_dim"].values)}
    order_model = xr.DataArray([model_index[m] for m in data.models], dims="model")
    order_task = xr.DataArray([task_index[t] for t in data.tasks], dims="task")
    for name in ("a_model", "u_model"):
        posterior[name] = posterior[name].isel(model=order_model)
    for name in ("b_task", "v_task"):
        posterior[name] = posterior[name].isel(task=order_task)

    mu = posterior["alpha"] + posterior["a_model"].isel(model=pair_model) + posterior["b_task"].isel(task=pair_task) + ab
    competence = xr.DataArray(covariate, dims="pair")
    log_sigma = posterior["gamma0"] + posterior["gamma1"] * competence + posterior["u_model"].isel(model=pair_model) + posterior["v_task"].isel(task=pair_task) + e
    posterior["mu"] = mu.transpose("chain", "draw", "pair")
    posterior["log_sigma"] = log_sigma.transpose("chain", "draw", "pair")
    posterior = posterior.assign_coords(model=data.models, task=data.tasks, pair=data.pair_labels)

    # The scale formula uses the observed competence, so its decomposition does too.
    observed = xr.DataArray(data.pair_empirical_logit, dims="pair", coords={"pair": data.pair_labels}).broadcast_like(posterior["log_sigma"])
    share_input = posterior.assign(mu=observed)
    stats = idata["sample_stats"].to_dataset()
    return posterior, stats, {"sampling_seconds": sampling_seconds, "share_input": share_input}


def fit_pymc(ds: Any, data: Any, spec: Any, settings: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """Fit the explicit-latent, non-centred model with ``pm.sample`` and return its posterior."""
    import pymc as pm

    coords = {"model": data.models, "task": data.tasks, "pair": data.pair_labels, "cell": np.arange(len(data.cell_k))}
    with pm.Model(coords=coords) as model:
        alpha = _pymc_prior(pm, spec, "alpha")
        sd_model = _pymc_prior(pm, spec, "sd_model")
        sd_task = _pymc_prior(pm, spec, "sd_task")
        sd_model_task = _pymc_prior(pm, spec, "sd_model_task")
        a_model = pm.Deterministic("a_model", sd_model * pm.ZeroSumNormal("a_model_raw", sigma=1.0, dims="model"), dims="model")
        b_task = pm.Deterministic("b_task", sd_task * pm.ZeroSumNormal("b_task_raw", sigma=1.0, dims="task"), dims="task")
        ab = sd_model_task * pm.Normal("mu_raw", 0.0, 1.0, dims="pair")
        mu = pm.Deterministic("mu", alpha + a_model[data.pair_model] + b_task[data.pair_task] + ab, dims="pair")

        gamma0 = _pymc_prior(pm, spec, "gamma0")
        gamma1 = _pymc_prior(pm, spec, "gamma1")
        sd_u = _pymc_prior(pm, spec, "sd_u")
        sd_v = _pymc_prior(pm, spec, "sd_v")
        sd_e = _pymc_prior(pm, spec, "sd_e")
        u_model = pm.Deterministic("u_model", sd_u * pm.ZeroSumNormal("u_model_raw", sigma=1.0, dims="model"), dims="model")
        v_task = pm.Deterministic("v_task", sd_v * pm.ZeroSumNormal("v_task_raw", sigma=1.0, dims="task"), dims="task")
        e = sd_e * pm.Normal("log_sigma_raw", 0.0, 1.0, dims="pair")
        log_sigma = pm.Deterministic(
            "log_sigma",
            gamma0 + gamma1 * (mu - data.competence_center) + u_model[data.pair_model] + v_task[data.pair_task] + e,
            dims="pair",
        )

        z = pm.Normal("z", 0.0, 1.0, dims="cell")
        logit_p = mu[data.cell_pair] + pm.math.exp(log_sigma)[data.cell_pair] * z
        pm.Binomial("n_correct", n=data.cell_n, logit_p=logit_p, observed=data.cell_k, dims="cell")

        # The per-cell z are not stored because they would take draws x cells x 8 bytes.
        stored = [name for name in model.named_vars if name not in ("z", "n_correct")]
        start = time.perf_counter()
        trace = pm.sample(
            draws=settings["draws"],
            tune=settings["tune"],
            chains=settings["chains"],
            cores=settings["cores"],
            random_seed=settings["seed"],
            target_accept=settings["target_accept"],
            progressbar=False,
            compute_convergence_checks=False,
            var_names=stored,
            **({"nuts_sampler": "pymc"} if settings.get("pymc_own_nuts") else {}),
        )
        sampling_seconds = time.perf_counter() - start
    return trace["posterior"].to_dataset(), trace["sample_stats"].to_dataset(), {"sampling_seconds": sampling_seconds}


def fit_numpyro(ds: Any, data: Any, spec: Any, settings: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """Fit the explicit-latent, non-centred model with NumPyro's NUTS and return its posterior."""
    import numpyro

    # Both settings must come before JAX creates its devices.
    # NOTE: one CPU device per chain, so with more chains than cores the chains share the cores.
    numpyro.set_host_device_count(settings["chains"])
    numpyro.enable_x64(settings["numpyro_x64"])

    import jax
    import jax.numpy as jnp
    import numpyro.distributions as dist
    import xarray as xr
    from numpyro.infer import MCMC, NUTS

    n_models, n_tasks, n_pairs = len(data.models), len(data.tasks), data.n_pairs
    pair_model = jnp.asarray(data.pair_model)
    pair_task = jnp.asarray(data.pair_task)
    cell_pair = jnp.asarray(data.cell_pair)
    cell_n = jnp.asarray(data.cell_n)
    cell_k = jnp.asarray(data.cell_k)
    center = data.competence_center

    def model() -> None:
        alpha = _numpyro_prior(spec, "alpha")
        sd_model = _numpyro_prior(spec, "sd_model")
        sd_task = _numpyro_prior(spec, "sd_task")
        sd_model_task = _numpyro_prior(spec, "sd_model_task")
        a_model = numpyro.deterministic("a_model", sd_model * numpyro.sample("a_model_raw", dist.ZeroSumNormal(1.0, event_shape=(n_models,))))
        b_task = numpyro.deterministic("b_task", sd_task * numpyro.sample("b_task_raw", dist.ZeroSumNormal(1.0, event_shape=(n_tasks,))))
        with numpyro.plate("pair", n_pairs):
            ab = sd_model_task * numpyro.sample("mu_raw", dist.Normal(0.0, 1.0))
        mu = numpyro.deterministic("mu", alpha + a_model[pair_model] + b_task[pair_task] + ab)

        gamma0 = _numpyro_prior(spec, "gamma0")
        gamma1 = _numpyro_prior(spec, "gamma1")
        sd_u = _numpyro_prior(spec, "sd_u")
        sd_v = _numpyro_prior(spec, "sd_v")
        sd_e = _numpyro_prior(spec, "sd_e")
        u_model = numpyro.deterministic("u_model", sd_u * numpyro.sample("u_model_raw", dist.ZeroSumNormal(1.0, event_shape=(n_models,))))
        v_task = numpyro.deterministic("v_task", sd_v * numpyro.sample("v_task_raw", dist.ZeroSumNormal(1.0, event_shape=(n_tasks,))))
        with numpyro.plate("pair", n_pairs):
            e = sd_e * numpyro.sample("log_sigma_raw", dist.Normal(0.0, 1.0))
        log_sigma = numpyro.deterministic("log_sigma", gamma0 + gamma1 * (mu - center) + u_model[pair_model] + v_task[pair_task] + e)

        with numpyro.plate("cell", len(data.cell_k)):
            z = numpyro.sample("z", dist.Normal(0.0, 1.0))
            logits = mu[cell_pair] + jnp.exp(log_sigma)[cell_pair] * z
            numpyro.sample("n_correct", dist.Binomial(total_count=cell_n, logits=logits), obs=cell_k)

    kernel = NUTS(model, target_accept_prob=settings["target_accept"])
    mcmc = MCMC(
        kernel,
        num_warmup=settings["tune"],
        num_samples=settings["draws"],
        num_chains=settings["chains"],
        chain_method="parallel",
        progress_bar=False,
    )
    start = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(settings["seed"]), extra_fields=("diverging", "energy"))
    samples = mcmc.get_samples(group_by_chain=True)
    extra = mcmc.get_extra_fields(group_by_chain=True)
    jax.block_until_ready(samples)
    sampling_seconds = time.perf_counter() - start

    dims = {"a_model": ("model",), "u_model": ("model",), "b_task": ("task",), "v_task": ("task",), "mu": ("pair",), "log_sigma": ("pair",)}
    variables = {}
    for name in COMPARED:
        values = np.asarray(samples[name], dtype=float)
        variables[name] = (("chain", "draw", *dims.get(name, ())), values)
    posterior = xr.Dataset(variables, coords={"model": data.models, "task": data.tasks, "pair": data.pair_labels})
    stats = xr.Dataset({name: (("chain", "draw"), np.asarray(extra[name])) for name in ("diverging", "energy")})
    return posterior, stats, {"sampling_seconds": sampling_seconds}


def fit_pymc_own_nuts(ds: Any, data: Any, spec: Any, settings: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """Fit the explicit-latent model as :func:`fit_pymc` does, with PyMC's own NUTS in place of the default."""
    return fit_pymc(ds, data, spec, {**settings, "pymc_own_nuts": True})


FITS = {"robustscope": fit_robustscope, "bambi": fit_bambi, "pymc": fit_pymc, "pymc-nuts": fit_pymc_own_nuts, "numpyro": fit_numpyro}


def child_main(name: str, tensor_path: str, settings: dict[str, Any]) -> None:
    """Fit one alternative and print one JSON line with its timings, checks and ESS."""
    import logging

    from robustscope import decompose
    from robustscope import tensor as _tensor
    from robustscope.models.location_scale import prepare_data
    from robustscope.specs import load_spec

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    ds = _tensor.load(tensor_path)
    data = prepare_data(ds)
    spec = load_spec("location-scale").with_sampler(
        chains=settings["chains"],
        tune=settings["tune"],
        draws=settings["draws"],
        seed=settings["seed"],
        target_accept=settings["target_accept"],
        cores=settings["cores"],
    )

    start = time.perf_counter()
    posterior, stats, extra = FITS[name](ds, data, spec, settings)
    share_input = extra.pop("share_input", posterior)
    components = decompose.scale_components(share_input, data.pair_model, data.pair_task, data.competence_center)
    shares = decompose.variance_shares(components)
    posterior = posterior.assign(shares.data_vars)
    fit_seconds = time.perf_counter() - start

    checked = [variable for variable in COMPARED if variable in posterior]
    summary = _common.check_posterior(posterior[checked], stats)
    ess = _common.bulk_ess(posterior)
    means = {variable: float(posterior[variable].mean()) for variable in _common.ESS_QUANTITIES}
    result = {
        "fit_seconds": fit_seconds,
        "sampling_seconds": extra.get("sampling_seconds"),
        "robustscope_timings": extra.get("timings"),
        "checked_parameters": checked,
        "missing_parameters": [variable for variable in COMPARED if variable not in posterior],
        "diagnostics": summary,
        "ess_bulk": ess,
        "ess_per_second": {key: (value / fit_seconds if value is not None else None) for key, value in ess.items()},
        "posterior_mean": means,
        "gamma1_sd": float(posterior["gamma1"].std()),
        "pairs": int(data.n_pairs),
        "cells": int(len(data.cell_k)),
        "peak_memory_mib": _common.peak_memory_mib(),
    }
    print(json.dumps(result, default=float))


# ---------------------------------------------------------------- parent


def run_alternative(name: str, tensor_path: Path, args: argparse.Namespace, sampler: dict[str, Any]) -> list[dict[str, Any]]:
    """Run ``name`` at each target acceptance rate in turn until one attempt passes; return every attempt."""
    attempts = []
    spent = 0.0
    for target_accept in args.target_accept:
        remaining = args.budget_minutes * 60 - spent
        if remaining <= 0:
            print(f"{name}: the budget of {args.budget_minutes:g} min per alternative is spent; no attempt at target_accept {target_accept}", flush=True)
            break
        settings = {
            **sampler,
            "target_accept": target_accept,
            "seed": args.seed,
            "cores": min(sampler["chains"], os.cpu_count() or 1),
            "numpyro_x64": not args.numpyro_float32,
        }
        print(f"{name}: {settings['chains']} chains x ({settings['tune']} tuning + {settings['draws']} draws), target_accept {target_accept}", flush=True)
        outcome = _common.run_child(
            [__file__, "--child", name, "--tensor", str(tensor_path), "--settings", json.dumps(settings)],
            timeout=min(args.cap_minutes * 60, remaining),
            memory_limit_gib=args.memory_limit_gb,
        )
        spent += outcome["wall_seconds"]
        record = {"alternative": name, "settings": settings, **outcome}
        if outcome["status"] == "timed out":
            record["status"] = "did not finish"
        attempts.append(record)
        passed = outcome["result"] is not None and outcome["result"]["diagnostics"]["passed"]
        print(f"{name}: {record['status']} in {outcome['wall_seconds']:.0f} s, checks passed: {passed}", flush=True)
        if outcome["status"] == "failed":
            print(outcome["stderr_tail"], file=sys.stderr)
        # A higher target acceptance rate only lengthens a fit that ran out of time or crashed.
        if passed or outcome["status"] != "finished":
            break
    return attempts


def time_to_pass(records: list[dict[str, Any]], name: str) -> tuple[float, bool]:
    """Return the process wall time ``name`` spent until its first passing attempt, and whether one passed.

    A user who sees a fit fail its checks reruns it at the next setting, so
    the attempts before the passing one count. Without a passing attempt the
    time is everything spent, a lower bound on the time to a passing fit.
    """
    spent = 0.0
    for record in records:
        if record["alternative"] != name:
            continue
        spent += record["wall_seconds"]
        result = record["result"]
        if result is not None and result["diagnostics"]["passed"]:
            return spent, True
    return spent, False


def time_to_pass_lines(records: list[dict[str, Any]]) -> list[str]:
    """Return a Markdown table: each alternative's time to a passing fit and its ratio to robustscope's."""
    names = list(dict.fromkeys(record["alternative"] for record in records))
    if not names:
        return []
    reference, reference_passed = time_to_pass(records, "robustscope") if "robustscope" in names else (None, False)
    lines = [
        "| fit | time to a fit that passes the checks (s) | ratio to robustscope |",
        "|---|---|---|",
    ]
    for name in names:
        seconds, passed = time_to_pass(records, name)
        time_text = f"{seconds:.0f}" if passed else f"more than {seconds:.0f} (no attempt passed)"
        if reference is None or not reference_passed or name == "robustscope":
            ratio_text = "—" if name != "robustscope" or not reference_passed else "1"
        else:
            ratio_text = f"{seconds / reference:.1f}" if passed else f"more than {seconds / reference:.1f}"
        lines.append(f"| {DESCRIPTIONS[name]} | {time_text} | {ratio_text} |")
    lines += [
        "",
        "Time to a passing fit is the process wall time summed over an alternative's attempts up to the first one that passes "
        "every check, since a user reruns a failed fit at the next setting.",
    ]
    return lines


def markdown_report(records: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """Return the Markdown fragment: a heading, the setup, the table and its notes."""
    label = " (quick mode: tiny simulated data, short chains; not a result)" if meta["quick"] else ""
    lines = [
        f"# The location-scale fit: robustscope against the alternatives{label}",
        "",
        f"Script: `python benchmarks/bench_alternatives.py {meta['command_line']}`.",
        f"Data: {meta['data']}; {meta['pairs']} (model, task) pairs, {meta['cells']:,} cells.",
        f"Wall-time cap per fit: {meta['cap_minutes']:.1f} min; per alternative over all its attempts: {meta['budget_minutes']:.1f} min"
        + (f" ({meta['cap_ratio']:g} times robustscope's time to a passing fit). " if meta.get("cap_ratio") else ". ")
        + f"Target acceptance rates tried in order: {', '.join(map(str, meta['target_accept']))}.",
        "",
        *_common.machine_lines(meta["machine"]),
        "",
        "| fit | chains x (tune + draws), target_accept | status | fit wall time (s) | process wall time (s) | peak memory (MiB) "
        "| max R-hat | min bulk / tail ESS | divergences | checks passed | gamma1 mean (sd) "
        "| ESS/s gamma1 | ESS/s competence share | ESS/s model share | ESS/s task share | ESS/s residual share |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for record in records:
        settings = record["settings"]
        setting_text = f"{settings['chains']} x ({settings['tune']} + {settings['draws']}), {settings['target_accept']}"
        result = record["result"]
        head = f"| {DESCRIPTIONS[record['alternative']]} | {setting_text} | {record['status']} "
        if result is None:
            lines.append(head + f"| — | {record['wall_seconds']:.0f} | {record['peak_tree_rss_mib']:,.0f} |" + " — |" * 10)
            continue
        diagnostics = result["diagnostics"]
        ess = result["ess_per_second"]
        bulk = _common.format_number(diagnostics["ess_bulk_min"], 0)
        tail = _common.format_number(diagnostics["ess_tail_min"], 0)
        lines.append(
            head
            + f"| {result['fit_seconds']:.1f} | {record['wall_seconds']:.1f} | {record['peak_tree_rss_mib']:,.0f} "
            + f"| {_common.format_number(diagnostics['r_hat_max'], 3)} | {bulk} / {tail} | {_common.format_number(diagnostics['divergences'], 0)} "
            + f"| {'yes' if diagnostics['passed'] else 'no: ' + ', '.join(diagnostics['failed_checks'])} "
            + f"| {result['posterior_mean']['gamma1']:.3f} ({result['gamma1_sd']:.3f}) "
            + " ".join(f"| {_common.format_number(ess[name], 2)}" for name in _common.ESS_QUANTITIES)
            + " |"
        )
    lines += ["", *time_to_pass_lines(records)]
    lines += [
        "",
        "Fit wall time runs from the loaded tensor to the posterior with its variance shares (model building, "
        "compilation and sampling; for robustscope also the pointwise log likelihood and the posterior predictive check). "
        "Process wall time adds interpreter start, imports and reading the tensor. Peak memory is the largest sampled "
        "resident memory of the fit's process tree. ESS per second is bulk ESS divided by the fit wall time. "
        "R-hat and ESS are taken over the model-level parameters (hyperparameters, group effects, `mu` and `log_sigma` per pair), "
        "not over the per-cell `z` of the explicit-latent fits. "
        "bambi's model differs from the others: a normal likelihood on empirical logits and the observed, not the latent, "
        "competence as the covariate of `log sigma` (see the script's docstring).",
    ]
    return "\n".join(lines)


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny simulated data and short chains, to check that the script works (seconds per fit)")
    parser.add_argument("--data", type=Path, default=_common.ROOT / "data" / "multi-prompt-eval", help="multi-prompt data folder (full mode)")
    parser.add_argument("--tasks", help="fit only the first N tasks (a whole number) or the named tasks (comma-separated)")
    parser.add_argument("--alternatives", nargs="+", choices=ALTERNATIVES, default=list(ALTERNATIVES), help="fits to run, in this order")
    parser.add_argument("--chains", type=int, help="chains per fit (default: the specification's 4; quick: 2)")
    parser.add_argument("--tune", type=int, help="tuning iterations per chain (default: the specification's 1000; quick: 150)")
    parser.add_argument("--draws", type=int, help="draws per chain (default: the specification's 800; quick: 150)")
    parser.add_argument("--target-accept", type=float, nargs="+", default=None, help="target acceptance rates tried in order until the checks pass (default: 0.8 0.95; quick: 0.8)")
    parser.add_argument("--seed", type=int, default=20260204, help="random seed of every fit")
    parser.add_argument("--cap-minutes", type=float, default=None, help="wall-time cap per fit in minutes, after which it is recorded as not finished (default 20; quick 1.5)")
    parser.add_argument("--cap-ratio", type=float, default=None, help="after robustscope passes, cap every later alternative at this multiple of robustscope's time to a passing fit, over all its attempts (default: no such cap)")
    parser.add_argument("--budget-minutes", type=float, default=None, help="wall time per alternative over all its attempts, after which no further target acceptance rate is tried (default: no budget beyond the per-fit cap)")
    parser.add_argument("--memory-limit-gb", type=float, default=None, help="kill a fit whose process tree passes this resident memory in GiB (default: no limit)")
    parser.add_argument("--numpyro-float32", action="store_true", help="run NumPyro in JAX's default 32-bit floats instead of 64-bit")
    parser.add_argument("--output-dir", type=Path, default=_common.DOCS_DIR, help="folder for alternatives.md and alternatives.json")
    parser.add_argument("--child", choices=ALTERNATIVES, help=argparse.SUPPRESS)
    parser.add_argument("--tensor", help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_arguments()
    if args.child:
        child_main(args.child, args.tensor, json.loads(args.settings))
        return

    from robustscope import tensor as _tensor
    from robustscope.models.location_scale import prepare_data
    from robustscope.specs import load_spec

    spec_sampler = load_spec("location-scale").sampler
    defaults = QUICK_SAMPLER if args.quick else {"chains": spec_sampler.chains, "tune": spec_sampler.tune, "draws": spec_sampler.draws}
    sampler = {key: getattr(args, key) or defaults[key] for key in ("chains", "tune", "draws")}
    if args.target_accept is None:
        args.target_accept = [0.8] if args.quick else [0.8, 0.95]
    if args.cap_minutes is None:
        args.cap_minutes = QUICK_CAP_MINUTES if args.quick else 20.0
    if args.budget_minutes is None:
        args.budget_minutes = args.cap_minutes * len(args.target_accept)

    machine = _common.machine_info()
    ds, description = build_tensor(args)
    data = prepare_data(ds)
    with tempfile.TemporaryDirectory(prefix="robustscope-bench-") as folder:
        tensor_path = Path(folder) / "tensor.nc"
        _tensor.save(ds, tensor_path)
        records = []
        for name in args.alternatives:
            records.extend(run_alternative(name, tensor_path, args, sampler))
            if name == "robustscope" and args.cap_ratio is not None:
                seconds, passed = time_to_pass(records, "robustscope")
                if passed:
                    # Enough time to show whether an alternative comes within the ratio; no more.
                    args.cap_minutes = args.budget_minutes = args.cap_ratio * seconds / 60
                    print(f"cap per alternative: {args.cap_ratio:g} x {seconds:.0f} s = {args.cap_minutes:.1f} min", flush=True)

    meta = {
        "quick": args.quick,
        "command_line": " ".join(sys.argv[1:]),
        "data": description,
        "pairs": int(data.n_pairs),
        "cells": int(len(data.cell_k)),
        "cap_minutes": args.cap_minutes,
        "budget_minutes": args.budget_minutes,
        "cap_ratio": args.cap_ratio,
        "target_accept": args.target_accept,
        "sampler": sampler,
        "machine": machine,
    }
    markdown = markdown_report(records, meta)
    for record in records:
        if record["status"] == "finished":
            del record["stderr_tail"]
    markdown_path, json_path = _common.write_outputs(args.output_dir, "alternatives", markdown, {**meta, "records": records})
    print(markdown)
    print(f"wrote {markdown_path} and {json_path}")


if __name__ == "__main__":
    main()
