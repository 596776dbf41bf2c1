"""Parameter recovery of the consistency model from per-example data simulated with known values.

Real PyMC and nutpie sampling on small simulated tensors (6 models x 6
tasks x 5 perturbations x 80 examples) with short chains. The null case
(``gamma1 = 0``) is fitted with the trivial-baseline offset, so one fit
checks both the null and the offset variant. An 89% interval misses a fixed
truth in about 11% of simulated data sets, so the seeds are fixed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytensor
import pytensor.tensor as pt
import pytest
import xarray as xr
from scipy import stats

from robustscope import tensor as _tensor
from robustscope.errors import RobustscopeError
from robustscope.fit import LOGLIK_VARIABLE, fit
from robustscope.metrics import per_example
from robustscope.models import consistency
from robustscope.specs import load_spec

SHARES = ("competence", "model", "task", "residual")
SHAPE = {"n_models": 6, "n_tasks": 6, "n_perturbations": 5, "n_examples": 80}
SAMPLER = {"chains": 2, "draws": 300, "tune": 400, "progress": False}


def _interval(values, prob=0.89):
    tail = (1 - prob) / 2
    flat = np.asarray(values).ravel()
    return np.quantile(flat, tail), np.quantile(flat, 1 - tail)


@pytest.fixture(scope="module")
def recovered():
    truth = consistency.ConsistencyTruth(gamma1=0.6)
    ds, realised = consistency.simulate(truth, rng=4, **SHAPE)
    trace = fit(ds, "consistency", seed=5, **SAMPLER)
    return ds, trace, realised


@pytest.fixture(scope="module")
def null_recovered():
    truth = consistency.ConsistencyTruth(gamma1=0.0, gamma0=0.8)
    ds, realised = consistency.simulate(truth, offset="trivial-baseline", rng=6, **SHAPE)
    trace = fit(ds, "consistency-baseline", seed=6, **SAMPLER)
    return ds, trace, realised


def test_simulated_consistency_matches_rho():
    ds, realised = consistency.simulate(consistency.ConsistencyTruth(), rng=1, **{**SHAPE, "n_examples": 400})
    share = per_example.output_consistency(ds)["consistency"].transpose("model", "task").values
    # Binomial standard error with 400 examples is at most 0.025.
    assert np.abs(share - realised["rho"]).max() < 0.1
    assert np.corrcoef(share.ravel(), realised["rho"].ravel())[0, 1] > 0.95


def test_simulated_accuracy_tracks_competence():
    ds, realised = consistency.simulate(consistency.ConsistencyTruth(sd_cell=0.0), rng=2, **{**SHAPE, "n_examples": 400})
    accuracy = (ds["n_correct"].sum("perturbation") / ds["n_total"].sum("perturbation")).transpose("model", "task").values
    expected = 1.0 / (1.0 + np.exp(-realised["mu"]))
    assert np.abs(accuracy - expected).max() < 0.06


def test_prepare_data_counts_examples():
    ds, realised = consistency.simulate(consistency.ConsistencyTruth(), rng=3, **SHAPE)
    data = consistency.prepare_data(ds)
    share = per_example.output_consistency(ds)["consistency"].transpose("model", "task").values
    assert data.n_pairs == 36
    assert np.all(data.pair_examples == 80)
    assert np.all(data.pair_perturbations == 5)
    assert np.array_equal(data.pair_consistent, np.rint(share.ravel() * 80).astype(int))
    assert len(data.cell_pair) == 36 * 5
    assert data.unique_count.sum() == 36 * 5


def test_count_simulator_follows_the_likelihood():
    spec = load_spec("consistency")
    data, truth = consistency.simulate_counts_from_prior(spec, np.random.default_rng(7), n_models=4, n_tasks=5, n_perturbations=6, n_examples=4000)
    assert data.n_pairs == 20
    assert data.unique_count.sum() == len(data.cell_pair) == 20 * 6
    # The consistent count is binomial with the pair's rho: within 4.5 standard errors everywhere.
    se = np.sqrt(truth["rho"] * (1 - truth["rho"]) / 4000) + 1e-3
    assert np.all(np.abs(data.pair_consistent / 4000 - truth["rho"]) < 4.5 * se)
    # The competence centre is the mean empirical logit of the simulated counts, as prepare_data computes it.
    pooled = np.bincount(data.cell_pair, weights=data.cell_correct)
    expected = np.mean(np.log((pooled + 0.5) / (4000 * 6 - pooled + 0.5)))
    assert truth["competence_center"] == pytest.approx(expected, abs=1e-3)


@pytest.mark.slow
def test_gamma1_interval_covers_truth(recovered):
    _, trace, realised = recovered
    lower, upper = _interval(trace["posterior"]["gamma1"])
    assert lower <= realised["gamma1"] <= upper
    assert lower > 0


@pytest.mark.slow
def test_shares_cover_realised_shares(recovered):
    _, trace, realised = recovered
    posterior = trace["posterior"].to_dataset()
    for name in SHARES:
        lower, upper = _interval(posterior[f"share_{name}"])
        assert lower <= realised[f"share_{name}"] <= upper, name


@pytest.mark.slow
def test_shares_sum_to_one_per_draw(recovered):
    _, trace, _ = recovered
    posterior = trace["posterior"].to_dataset()
    total = sum(posterior[f"share_{name}"] for name in SHARES)
    assert np.allclose(total.values, 1.0)
    for name in SHARES:
        values = posterior[f"share_{name}"].values
        assert values.min() >= 0.0
        assert values.max() <= 1.0
    assert np.allclose(posterior["bayes_r2"].values, 1.0 - posterior["share_residual"].values)


@pytest.mark.slow
def test_rho_tracks_truth(recovered):
    _, trace, realised = recovered
    estimated = trace["posterior"]["rho"].mean(("chain", "draw")).values
    assert np.corrcoef(estimated, realised["rho"].ravel())[0, 1] > 0.9


@pytest.mark.slow
def test_trace_groups_follow_contract(recovered):
    ds, trace, _ = recovered
    posterior = trace["posterior"].to_dataset()
    for name in ("gamma0", "gamma1", "sd_u", "sd_v", "sd_e", "sd_cell", "u_model", "v_task", "mu", "rho"):
        assert name in posterior, name
    assert posterior["rho"].dims == ("chain", "draw", "pair")
    assert str(posterior["pair"].values[0]) == "model0 | task0"
    loglik = trace["log_likelihood"][LOGLIK_VARIABLE]
    assert loglik.dims == ("chain", "draw", "pair")
    assert np.isfinite(loglik.values).all()
    observed = trace["observed_data"][consistency.OBSERVED_VARIABLE].values
    replicated = trace["posterior_predictive"][consistency.OBSERVED_VARIABLE].values
    assert observed.shape == (36,)
    assert replicated.shape[-1] == 36
    assert replicated.max() <= 80
    constant = trace["constant_data"].to_dataset()
    assert list(constant["model"].values) == list(ds["model"].values)
    assert list(constant["task"].values) == list(ds["task"].values)
    assert constant["pair_model"].dims == ("pair",)
    assert trace.attrs["family"] == "consistency"


@pytest.mark.parametrize("spec_name", ["consistency", "consistency-baseline"])
def test_numpy_loglik_matches_graph(spec_name):
    """The post-hoc log likelihood (NumPy) equals the one the sampler uses (PyTensor)."""
    ds, realised = consistency.simulate(consistency.ConsistencyTruth(), rng=8, n_models=3, n_tasks=3, n_perturbations=4, n_examples=30)
    data = consistency.prepare_data(ds)
    spec = load_spec(spec_name)
    mu = realised["mu"].ravel()
    eta = realised["eta"].ravel()
    log_sd = np.log(0.4)

    mu_var = pt.dvector("mu")
    eta_var = pt.dvector("eta")
    logit_rho = eta_var
    if spec.offset == "trivial-baseline":
        logit_rho = eta_var + consistency.trivial_baseline_logit(mu_var, data.pair_perturbations, xp=pt)
    graph = pt.sum(consistency.competence_loglik(mu_var, pt.constant(log_sd), data, spec, xp=pt)) + pt.sum(consistency.consistency_loglik(logit_rho, data, xp=pt))
    from_graph = pytensor.function([mu_var, eta_var], graph)(mu, eta)

    numpy_logit_rho = eta + (consistency.trivial_baseline_logit(mu, data.pair_perturbations) if spec.offset == "trivial-baseline" else 0.0)
    per_pair = consistency.pair_loglik(mu[None], np.array([log_sd]), numpy_logit_rho[None], data, spec)
    assert per_pair.shape == (1, data.n_pairs)
    assert per_pair.sum() == pytest.approx(float(from_graph), rel=1e-9)


def test_consistency_loglik_is_binomial():
    ds, realised = consistency.simulate(consistency.ConsistencyTruth(), rng=9, n_models=2, n_tasks=3, n_perturbations=3, n_examples=25)
    data = consistency.prepare_data(ds)
    logit_rho = np.linspace(-3.0, 3.0, data.n_pairs)
    expected = stats.binom.logpmf(data.pair_consistent, data.pair_examples, 1.0 / (1.0 + np.exp(-logit_rho)))
    assert np.allclose(consistency.consistency_loglik(logit_rho, data), expected)


def test_trivial_baseline_logit_is_logit_of_power():
    mu = np.array([-4.0, -1.0, 0.0, 2.0, 8.0])
    perturbations = np.array([2, 3, 5, 10, 40])
    p_all = (1.0 / (1.0 + np.exp(-mu))) ** perturbations
    assert np.allclose(consistency.trivial_baseline_logit(mu, perturbations), np.log(p_all / (1.0 - p_all)))


@pytest.mark.slow
def test_null_gamma1_interval_covers_zero(null_recovered):
    _, trace, _ = null_recovered
    lower, upper = _interval(trace["posterior"]["gamma1"])
    assert lower <= 0.0 <= upper


@pytest.mark.slow
def test_baseline_offset_recovers_gamma0(null_recovered):
    _, trace, realised = null_recovered
    lower, upper = _interval(trace["posterior"]["gamma0"])
    assert lower <= realised["gamma0"] <= upper
    baseline = trace["posterior"]["trivial_baseline"].mean(("chain", "draw")).values
    expected = (1.0 / (1.0 + np.exp(-realised["mu"].ravel()))) ** 5
    assert np.abs(baseline - expected).max() < 0.15


def test_aggregated_tensor_is_rejected():
    records = {
        "model": ["m1", "m1", "m2", "m2"],
        "task": ["t1", "t2", "t1", "t2"],
        "perturbation": ["p0"] * 4,
        "n_correct": [3, 4, 5, 6],
        "n_total": [10] * 4,
    }
    ds = _tensor.from_counts(pd.DataFrame(records), dataset="counts-only")
    with pytest.raises(RobustscopeError, match="no 'example' dimension"):
        consistency.prepare_data(ds)
    with pytest.raises(RobustscopeError, match="location-scale family"):
        fit(ds, "consistency", progress=False)


def test_tensor_without_predictions_is_rejected():
    ds, _ = consistency.simulate(consistency.ConsistencyTruth(), rng=0, n_models=2, n_tasks=2, n_perturbations=2, n_examples=5)
    scores_only = ds.drop_vars(["prediction", "prediction_label", "prediction_code"])
    with pytest.raises(RobustscopeError, match="'prediction' codes"):
        consistency.prepare_data(scores_only)


def test_too_few_pairs_are_rejected():
    ds, _ = consistency.simulate(consistency.ConsistencyTruth(), rng=0, n_models=1, n_tasks=3, n_perturbations=3, n_examples=5)
    with pytest.raises(RobustscopeError, match="at least two models and two tasks"):
        consistency.prepare_data(ds)


def test_single_perturbation_pairs_are_excluded():
    ds, _ = consistency.simulate(consistency.ConsistencyTruth(), rng=0, n_models=3, n_tasks=3, n_perturbations=3, n_examples=5)
    observed = ds["observed"].copy()
    observed.loc[{"model": "model0", "task": "task0", "perturbation": ["p1", "p2"]}] = False
    reduced = ds.copy()
    reduced["observed"] = observed
    for name in ("n_correct", "n_total"):
        reduced[name] = ds[name].where(observed, _tensor.MISSING_COUNT)
    reduced["score"] = ds["score"].where(observed)
    reduced["prediction"] = ds["prediction"].where(observed, _tensor.MISSING_CODE)
    data = consistency.prepare_data(_tensor.validate(reduced))
    assert data.n_pairs == 8
    assert "model0 | task0" in data.excluded_pairs


def test_simulate_from_prior_draws_spec_parameters():
    spec = load_spec("consistency-baseline")
    ds, realised = consistency.simulate_from_prior(spec, np.random.default_rng(7), n_models=3, n_tasks=2, n_perturbations=3, n_examples=10)
    assert isinstance(ds, xr.Dataset)
    assert ds.sizes["example"] == 10
    assert realised["offset"] == "trivial-baseline"
    assert sum(realised[f"share_{name}"] for name in SHARES) == pytest.approx(1.0)
    assert realised["sd_cell"] >= 0.0


@pytest.mark.slow
def test_report_of_a_consistency_fit_states_its_findings(recovered, tmp_path):
    from robustscope.diagnostics import check_fit
    from robustscope.report.render import write_report

    ds, trace, _ = recovered
    checks = check_fit(trace)
    assert set(checks["status"]) <= {"passed", "failed", "warning", "not applicable"}
    summary = write_report(trace, tmp_path, tensor=ds)
    assert summary["family"] == "consistency"
    assert summary["quantity"] == "logit consistency"
    assert any(line.startswith("Competence raises output consistency") for line in summary["findings"])
    html = (tmp_path / "report.html").read_text()
    assert "Variance shares of logit consistency" in html
    assert (tmp_path / "figures" / "consistency_competence.png").stat().st_size > 0
