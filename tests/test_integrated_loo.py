"""PSIS-LOO with each pair's latent competence and spread integrated out.

The integral is checked against a dense grid computed independently, its
node count is checked to be enough, and PSIS-LOO on it is checked to be
reliable where the conditional form is not.
"""

from __future__ import annotations

import dataclasses
import importlib
import warnings

import arviz_stats as azs
import numpy as np
import pytest
import xarray as xr
from scipy.special import logsumexp

from robustscope.fit import fit
from robustscope.loo import INTEGRATED_GROUP, _loo, loo_likelihood
from robustscope.models.location_scale import competence_term, integrated_pair_loglik, pair_loglik, prepare_data
from robustscope.simulate import LocationScaleTruth, simulate_location_scale
from robustscope.specs import load_spec

# The module, not the function of the same name that the package exports.
fit_module = importlib.import_module("robustscope.fit")


@pytest.fixture(scope="module")
def fitted():
    truth = LocationScaleTruth(gamma1=-0.4, sd_u=0.4, sd_v=0.3, sd_e=0.3)
    ds, _ = simulate_location_scale(models=8, tasks=6, perturbations=8, n_examples=60, truth=truth, seed=3)
    spec = load_spec("location-scale").with_sampler(chains=2, tune=300, draws=300, seed=5)
    trace = fit(ds, spec, progress=False)
    return ds, spec, trace


def _log_prior(post, data, spec, draw, pair, mu, ls):
    """log N(mu | loc, sd_model_task) + log N(ls | scale(mu), sd_e) for one draw and pair, written out directly."""
    m, t = data.pair_model[pair], data.pair_task[pair]
    value = lambda name: np.asarray(post[name]).reshape(-1, *post[name].shape[2:])[draw]  # noqa: E731
    loc = value("alpha") + value("a_model")[m] + value("b_task")[t]
    scale = value("gamma0") + competence_term(mu, value("gamma1"), None, np.zeros(0), 1.0, data.competence_center) + value("u_model")[m] + value("v_task")[t]
    out = np.zeros(np.broadcast(mu, ls).shape)
    if "model:task" in spec.location_terms:
        sd = value("sd_model_task")
        out = out - np.log(sd * np.sqrt(2 * np.pi)) - 0.5 * ((mu - loc) / sd) ** 2
    if "residual" in spec.scale_terms:
        sd = value("sd_e")
        out = out - np.log(sd * np.sqrt(2 * np.pi)) - 0.5 * ((ls - scale) / sd) ** 2
    return out, loc, scale


def _dense_grid(post, data, spec, draw, pair):
    """The integral on a 401 x 401 (or 2001-point) grid spanning 10 posterior sd either side."""
    mu_draws = np.asarray(post["mu"]).reshape(-1, data.n_pairs)[:, pair]
    ls_draws = np.asarray(post["log_sigma"]).reshape(-1, data.n_pairs)[:, pair]
    # The pair's own count patterns as a one-pair data set, so that the grid
    # evaluates only this pair's likelihood.
    own = data.unique_pair == pair
    one_pair = dataclasses.replace(
        data,
        pair_model=data.pair_model[[pair]],
        pair_task=data.pair_task[[pair]],
        unique_pair=np.zeros(int(own.sum()), dtype=np.int64),
        unique_k=data.unique_k[own],
        unique_n=data.unique_n[own],
        unique_count=data.unique_count[own],
    )

    def likelihood(mu, ls):
        return pair_loglik(mu[..., None], ls[..., None], one_pair, spec)[..., 0]

    integrate_mu = "model:task" in spec.location_terms
    integrate_ls = "residual" in spec.scale_terms
    if integrate_mu and integrate_ls:
        mu = np.linspace(mu_draws.mean() - 10 * mu_draws.std(), mu_draws.mean() + 10 * mu_draws.std(), 401)
        ls = np.linspace(ls_draws.mean() - 10 * ls_draws.std(), ls_draws.mean() + 10 * ls_draws.std(), 401)
        grid_mu, grid_ls = np.meshgrid(mu, ls, indexing="ij")
        log_prior, _, _ = _log_prior(post, data, spec, draw, pair, grid_mu, grid_ls)
        terms = likelihood(grid_mu, grid_ls) + log_prior
        return logsumexp(terms) + np.log(mu[1] - mu[0]) + np.log(ls[1] - ls[0])
    # Only mu integrated: log_sigma follows from mu.
    mu = np.linspace(mu_draws.mean() - 10 * mu_draws.std(), mu_draws.mean() + 10 * mu_draws.std(), 2001)
    log_prior, _, scale = _log_prior(post, data, spec, draw, pair, mu, np.zeros_like(mu))
    terms = likelihood(mu, scale) + log_prior
    return logsumexp(terms) + np.log(mu[1] - mu[0])


def test_fit_stores_the_integrated_log_likelihood(fitted):
    _, _, trace = fitted
    assert INTEGRATED_GROUP in trace.children
    assert loo_likelihood(trace) == "integrated"
    assert trace.attrs["loo_likelihood"] == "integrated"
    integrated = trace[INTEGRATED_GROUP].to_dataset()["n_correct"]
    conditional = trace["log_likelihood"].to_dataset()["n_correct"]
    assert integrated.dims == conditional.dims
    assert np.all(np.isfinite(integrated.values))
    # Integrating the latent values out spreads the prediction, so a pair is
    # predicted less well on average than given its own fitted latent values.
    assert float(integrated.mean()) < float(conditional.mean())


@pytest.mark.parametrize("scale_terms", [("competence", "model", "task", "residual"), ("competence", "model", "task")])
def test_integral_matches_a_dense_grid(fitted, scale_terms):
    # A fine rule against an independent dense grid: the rule's algebra (centre,
    # Cholesky scale, weights, the conditional prior of log sigma) is right.
    ds, spec, trace = fitted
    spec = dataclasses.replace(spec, scale_terms=scale_terms)
    data = prepare_data(ds)
    post = trace["posterior"].to_dataset()
    integrated = integrated_pair_loglik(post, data, spec, nodes=(41, 81)).reshape(-1, data.n_pairs)
    rng = np.random.default_rng(0)
    for draw, pair in zip(rng.integers(0, integrated.shape[0], 4), rng.integers(0, data.n_pairs, 4), strict=True):
        assert integrated[draw, pair] == pytest.approx(_dense_grid(post, data, spec, draw, pair), abs=2e-3)


def _pointwise_elpd(post, loglik):
    tree = xr.DataTree.from_dict({"posterior": post[["gamma0"]], "log_likelihood": xr.Dataset({"y": (("chain", "draw", "pair"), loglik)})})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(azs.loo(tree, var_name="y", pointwise=True).elpd_i)


def test_default_nodes_give_the_fine_rules_pointwise_elpd(fitted):
    # Single draws of a weakly informed pair need many log-sigma nodes. PSIS-LOO
    # uses each pair's elpd, which must match the fine rule well below the
    # standard errors a comparison reads (of order 1).
    ds, spec, trace = fitted
    data = prepare_data(ds)
    post = trace["posterior"].to_dataset()
    default = _pointwise_elpd(post, integrated_pair_loglik(post, data, spec))
    fine = _pointwise_elpd(post, integrated_pair_loglik(post, data, spec, nodes=(41, 81)))
    assert np.max(np.abs(default - fine)) < 0.05
    assert abs(float(np.sum(default - fine))) < 0.1


def test_integrated_form_lowers_pareto_k(fitted):
    _, _, trace = fitted
    integrated = _loo(trace)
    conditional_tree = trace.copy()
    del conditional_tree[INTEGRATED_GROUP]
    conditional = _loo(conditional_tree)
    share_integrated = float(np.mean(np.asarray(integrated.pareto_k) > integrated.good_k))
    share_conditional = float(np.mean(np.asarray(conditional.pareto_k) > conditional.good_k))
    assert share_integrated < 0.5 * share_conditional
    assert share_integrated <= 0.15


def test_chunked_loglik_matches_one_chunk(fitted, monkeypatch):
    # Memory bound: one draw per chunk must give the same pointwise log likelihood.
    ds, spec, trace = fitted
    data = prepare_data(ds)
    post = trace["posterior"].to_dataset()
    whole = fit_module.pointwise_loglik(post, data, spec)
    monkeypatch.setattr(fit_module, "CHUNK_ELEMENTS", 1)
    chunked = fit_module.pointwise_loglik(post, data, spec)
    np.testing.assert_array_equal(chunked.values, whole.values)


def test_chunked_ppc_keeps_spread_distribution(fitted, monkeypatch):
    # The chunked predictive check draws another random stream, so compare its distribution.
    ds, spec, trace = fitted
    data = prepare_data(ds)
    post = trace["posterior"].to_dataset()
    whole = fit_module.posterior_predictive_spread(post, data, seed=1)
    monkeypatch.setattr(fit_module, "CHUNK_ELEMENTS", len(data.cell_pair) * 7)
    chunked = fit_module.posterior_predictive_spread(post, data, seed=1)
    assert chunked.shape == whole.shape
    assert np.isfinite(chunked.values).all()
    np.testing.assert_allclose(chunked.mean(("chain", "draw")).values, whole.mean(("chain", "draw")).values, atol=0.01)


def test_narrow_hierarchical_sd_is_flagged(fitted):
    _, spec, trace = fitted
    posterior = trace["posterior"].to_dataset()
    location_scale = importlib.import_module("robustscope.models.location_scale")
    assert location_scale.integration_unresolved(posterior, spec).max() <= location_scale.MAX_UNRESOLVED_SHARE
    spread = float(posterior["log_sigma"].std(("chain", "draw")).min())
    narrow = posterior.assign(sd_e=posterior["sd_e"] * 0 + 0.01 * spread)
    assert np.all(location_scale.integration_unresolved(narrow, spec) == 1.0)
    # Without the residual term there is no sd_e to check.
    no_residual = dataclasses.replace(spec, scale_terms=("competence", "model", "task"))
    assert np.all(location_scale.integration_unresolved(narrow, no_residual) == 0.0)


def test_unresolved_fit_uses_conditional_loo(fitted, monkeypatch):
    ds, spec, _ = fitted
    location_scale = importlib.import_module("robustscope.models.location_scale")
    # Demand a prior far wider than any posterior, so that every pair is flagged.
    monkeypatch.setattr(location_scale, "MIN_PRIOR_TO_POSTERIOR_SD", 1e9)
    trace = fit(ds, spec.with_sampler(tune=100, draws=100), progress=False)
    assert INTEGRATED_GROUP not in trace.children
    assert loo_likelihood(trace) == "conditional"
    assert "sd_e or sd_model_task" in trace.attrs["integrated_loglik_skipped"]
    checks = importlib.import_module("robustscope.diagnostics").check_fit(trace).set_index("check")
    assert "integrated form was not computed" in checks.loc["pareto_k_max", "detail"]


@pytest.mark.parametrize("scale_terms", [("competence", "model", "task", "residual"), ("competence", "model", "task")])
def test_grid_chunks_match_one_piece(fitted, scale_terms):
    ds, spec, trace = fitted
    spec = dataclasses.replace(spec, scale_terms=scale_terms)
    data = prepare_data(ds)
    post = trace["posterior"].to_dataset().isel(draw=slice(0, 20))
    whole = integrated_pair_loglik(post, data, spec, chunk_elements=10**9)
    # Small enough that each chunk contains one or two grid points, or one draw.
    pieces = integrated_pair_loglik(post, data, spec, chunk_elements=2 * len(data.unique_k) * spec.quadrature_nodes)
    np.testing.assert_allclose(pieces, whole, rtol=1e-12, atol=1e-9)
