"""The perturbation-factors model: factor selection, likelihood bookkeeping and parameter recovery.

The recovery tests sample with PyMC and nutpie on a small simulated crossed
tensor with short chains. The other tests use the real DOVE fixture, the
shipped multi-prompt data and tensors built with ``from_counts``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from robustscope import tensor as _tensor
from robustscope.errors import RobustscopeError
from robustscope.fit import LOGLIK_VARIABLE, fit
from robustscope.ingest import ingest
from robustscope.models import factors
from robustscope.models.quadrature import marginal_logp
from robustscope.simulate import simulate_location_scale
from robustscope.specs import load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]
DOVE_LITE = ROOT / "tests" / "data" / "dove" / "lite"
MULTI_PROMPT = ROOT / "data" / "multi-prompt-eval"


def _spec(**keys):
    return parse_spec({"name": "factors-test", "family": "perturbation-factors", **keys})


def _interval(values, prob=0.95):
    tail = (1 - prob) / 2
    flat = np.asarray(values).ravel()
    return np.quantile(flat, tail), np.quantile(flat, 1 - tail)


def _count_records(levels_by_perturbation: dict[str, str], tasks=("t1", "t2"), models=("m1", "m2")) -> pd.DataFrame:
    rows = []
    for model in models:
        for task in tasks:
            for index, perturbation in enumerate(levels_by_perturbation):
                rows.append({"model": model, "task": task, "perturbation": perturbation, "n_correct": 20 + index % 5, "n_total": 50})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------
# Factor selection and errors


def test_dove_factors_skip_single_level():
    ds = ingest(DOVE_LITE, "dove")
    data = factors.prepare_data(ds, _spec())
    assert data.factors == ["enumerator", "separator", "instruction_phrasing", "shots"]
    assert data.factor_levels[3] == ["0", "2"]


def test_single_level_factor_raises():
    ds = ingest(DOVE_LITE, "dove")
    with pytest.raises(RobustscopeError, match=r"'choices_order'.*one level \('none'\)") as caught:
        factors.prepare_data(ds, _spec(factors=["enumerator", "choices_order"]))
    assert "enumerator (2 levels)" in str(caught.value)


def test_missing_factor_names_working_coordinates():
    ds = ingest(DOVE_LITE, "dove")
    with pytest.raises(RobustscopeError, match=r"factor 'temperature' is not a coordinate") as caught:
        factors.prepare_data(ds, _spec(factors=["temperature"]))
    message = str(caught.value)
    for name in ("enumerator (2 levels)", "separator (2 levels)", "shots (2 levels)"):
        assert name in message


def test_task_coordinate_is_not_a_factor():
    ds = ingest(MULTI_PROMPT, "multi-prompt")
    with pytest.raises(RobustscopeError, match=r"'benchmark' is not a per-perturbation coordinate") as caught:
        factors.prepare_data(ds, _spec(factors=["benchmark"]))
    assert "generation_method (4 levels)" in str(caught.value)


def test_tensor_without_factors_rejected():
    ds, _ = simulate_location_scale(models=2, tasks=2, perturbations=3, seed=1)
    with pytest.raises(RobustscopeError, match="needs factor coordinates") as caught:
        factors.prepare_data(ds, _spec())
    message = str(caught.value)
    assert "coordinates found: none" in message
    assert "per-perturbation coordinate (on perturbation) with 2 to 50 levels" in message


def test_unusable_coordinates_listed_with_reasons():
    labels = [f"p{i}" for i in range(52)]
    levels = dict.fromkeys(labels, "same")
    info = pd.DataFrame({"template": ["same"] * 52, "prompt_id": [f"id-{i}" for i in range(52)]}, index=labels)
    ds = _tensor.from_counts(_count_records(levels), dataset="no-factors", perturbation_info=info)
    with pytest.raises(RobustscopeError, match="needs factor coordinates") as caught:
        factors.prepare_data(ds, _spec())
    message = str(caught.value)
    assert "template: one level ('same')" in message
    assert "prompt_id: 52 levels, more than 50" in message


def test_nested_levels_confined_to_tasks_raise():
    records = _count_records({"p1": "", "p2": "", "p3": ""})
    info = pd.DataFrame(
        {"wording": ["t1-a", "t1-b", "t1-c", "t2-a", "t2-b", "t2-c"]},
        index=pd.MultiIndex.from_product([["t1", "t2"], ["p1", "p2", "p3"]]),
    )
    ds = _tensor.from_counts(records, dataset="nested", structure="nested", perturbation_info=info)
    with pytest.raises(RobustscopeError, match="every level occurs in one task only"):
        factors.prepare_data(ds, _spec(factors=["wording"]))


def test_continuous_metric_rejected():
    records = _count_records({"p1": "a", "p2": "b"}).drop(columns=["n_correct", "n_total"]).assign(score=0.5)
    ds = _tensor.from_scores(records, dataset="bleu", metric="bleu")
    with pytest.raises(RobustscopeError, match="needs counts of correct answers"):
        factors.prepare_data(ds, _spec())


def test_multi_prompt_default_factors():
    ds = ingest(MULTI_PROMPT, "multi-prompt")
    data = factors.prepare_data(ds, load_spec("perturbation-factors"))
    assert data.factors == ["generation_method", "prompt_format"]
    assert data.factor_levels == [["cot", "default", "gradual", "rephrase"], ["Q&A", "SEP_VARS", "other"]]
    assert sum(data.unknown_cells.values()) == 0
    assert data.unique_count.sum() == len(data.cell_k) == int(ds["observed"].sum())


def test_auto_parameterization_follows_cells_per_effect():
    spec = load_spec("perturbation-factors")
    assert spec.parameterization == "auto"
    # HELM classic: one cell per (model, task, variant), so a variant-by-model
    # effect rests on a handful of cells and a variant effect on hundreds.
    helm = factors.prepare_data(ingest(ROOT / "data" / "helm-classic", "every-eval-ever", metric_kind="binary"), spec)
    assert helm.factors == ["variant"]
    assert factors._cells_per_effect(helm, 0, "model") < factors.AUTO_MIN_CELLS <= factors._cells_per_effect(helm, 0, None)
    blocks = factors.noncentered_blocks(helm, spec)
    assert blocks[("model", 0)] is True
    assert not any(value for key, value in blocks.items() if key != ("model", 0))
    # Multi-prompt: about a thousand cells behind every factor-by-model effect.
    multi = factors.prepare_data(ingest(MULTI_PROMPT, "multi-prompt"), spec)
    assert not any(factors.noncentered_blocks(multi, spec).values())
    # The fixed choices apply to every block.
    assert all(factors.noncentered_blocks(helm, _spec(parameterization="noncentered")).values())
    assert not any(factors.noncentered_blocks(helm, _spec(parameterization="centered")).values())


def test_pair_location_centred_and_data_started():
    ds = ingest(MULTI_PROMPT, "multi-prompt", tasks=["navigate", "snarks"])
    spec = load_spec("perturbation-factors")
    data = factors.prepare_data(ds, spec)
    model = factors.build_model(data, spec)
    free = {rv.name for rv in model.free_RVs}
    assert "mu_pair" in free
    assert "ab_pair" not in free
    assert "ab_pair" in {var.name for var in model.deterministics}
    start = factors.initial_point(data, model)
    assert set(start) == {"alpha", "mu_pair"}
    per_pair = pd.DataFrame({"pair": data.cell_pair, "logit": np.log((data.cell_k + 0.5) / (data.cell_n - data.cell_k + 0.5))})
    np.testing.assert_allclose(start["mu_pair"], np.clip(per_pair.groupby("pair")["logit"].mean().to_numpy(), -6, 6))
    # The data-based start is far more probable than the prior's support point.
    logp = model.compile_logp()
    support = model.initial_point()
    informed = {**support, "alpha": start["alpha"], "mu_pair": start["mu_pair"]}
    assert logp(informed) > logp(support) + 100


# ---------------------------------------------------------------------------
# Likelihood bookkeeping


def _random_params(data, spec, rng, draws=3):
    names = factors.effect_names(data, spec)
    params = {
        "alpha": rng.normal(0, 1, draws),
        "sd_cell": np.abs(rng.normal(0.5, 0.1, draws)),
        "sd_factor": np.abs(rng.normal(0.5, 0.1, (draws, len(data.factors)))),
        "sd_factor_model": np.abs(rng.normal(0.3, 0.1, (draws, len(data.factors)))),
        "a_model": rng.normal(0, 1, (draws, len(data.models))),
        "b_task": rng.normal(0, 1, (draws, len(data.tasks))),
        "ab_pair": rng.normal(0, 0.5, (draws, data.n_pairs)),
    }
    for index, levels in enumerate(data.factor_levels):
        params[names["factor"][index]] = rng.normal(0, 0.5, (draws, len(levels)))
        params[names["model"][index]] = rng.normal(0, 0.3, (draws, len(levels), len(data.models)))
    return params


def test_pattern_loglik_matches_cell_sum():
    ds, _ = factors.simulate(n_models=3, n_tasks=2, n_perturbations=12, rng=4)
    spec = _spec()
    data = factors.prepare_data(ds, spec)
    params = _random_params(data, spec, np.random.default_rng(0))
    location, log_sd = factors.group_predictor(params, data, spec)
    grouped = factors.pattern_loglik(location, log_sd, data, spec).sum(axis=-1)
    per_cell = marginal_logp(location[:, data.cell_group], log_sd[:, data.cell_group], data.cell_k, data.cell_n, spec.quadrature_nodes)
    assert np.allclose(grouped, per_cell.sum(axis=-1))


def test_unknown_level_widens_residual():
    levels = {"p1": "a", "p2": "b", "p3": "", "p4": "a"}
    info = pd.DataFrame({"style": list(levels.values())}, index=list(levels))
    ds = _tensor.from_counts(_count_records(levels), dataset="unknown-level", perturbation_info=info)
    spec = _spec()
    data = factors.prepare_data(ds, spec)
    assert data.factor_levels == [["a", "b"]]
    assert data.unknown_cells == {"style": 4}

    params = _random_params(data, spec, np.random.default_rng(1), draws=1)
    _, log_sd = factors.group_predictor(params, data, spec)
    unknown = data.group_levels[:, 0] == factors.UNKNOWN
    widened = 0.5 * np.log(params["sd_cell"] ** 2 + params["sd_factor"][:, 0] ** 2 + params["sd_factor_model"][:, 0] ** 2)
    assert np.allclose(log_sd[0, unknown], widened)
    assert np.allclose(log_sd[0, ~unknown], np.log(params["sd_cell"]))


def test_simulate_from_prior_shapes():
    spec = _spec(factors=["enumerator", "shots"], factor_interactions=["model", "task"])
    ds, truth = factors.simulate_from_prior(spec, np.random.default_rng(2), n_models=3, n_tasks=2, n_perturbations=9)
    assert list(ds["enumerator"].dims) == ["perturbation"]
    assert len(truth["sd_factor"]) == 2
    shares = truth["share_factor"].sum() + truth["share_factor_model"].sum() + truth["share_factor_task"].sum() + truth["share_cell"]
    assert shares == pytest.approx(1.0)


# ---------------------------------------------------------------------------
# Recovery (real sampling)


TRUTH = factors.FactorTruth(sd_factor=(0.9, 0.25), sd_factor_model=(0.08, 0.5), sd_factor_task=(0.0, 0.0), sd_cell=0.2)


@pytest.fixture(scope="module")
def recovered():
    ds, realised = factors.simulate(TRUTH, n_models=6, n_tasks=4, n_perturbations=24, factor_levels={"enumerator": 5, "separator": 4}, rng=7)
    spec = _spec(parameterization="auto", quadrature_nodes=7)
    trace = fit(ds, spec, chains=2, draws=300, tune=300, seed=3, progress=False)
    return trace, realised


@pytest.mark.slow
def test_factor_sds_cover_truth(recovered):
    trace, realised = recovered
    posterior = trace["posterior"]
    for index in range(2):
        lower, upper = _interval(posterior["sd_factor"].isel(factor=index))
        assert lower <= TRUTH.sd_factor[index] <= upper, index
        lower, upper = _interval(posterior["sd_factor_model"].isel(factor=index))
        assert lower <= TRUTH.sd_factor_model[index] <= upper, index


@pytest.mark.slow
def test_finite_sds_cover_realised(recovered):
    trace, realised = recovered
    posterior = trace["posterior"]
    for kind in ("factor", "factor_model"):
        for index in range(2):
            lower, upper = _interval(posterior[f"finite_sd_{kind}"].isel(factor=index))
            assert lower <= realised[f"finite_sd_{kind}"][index] <= upper, (kind, index)


@pytest.mark.slow
def test_shares_rank_factors(recovered):
    trace, _ = recovered
    posterior = trace["posterior"]
    main = posterior["share_factor"]
    by_model = posterior["share_factor_model"]
    assert float((main.sel(factor="enumerator") > main.sel(factor="separator")).mean()) > 0.95
    assert float((by_model.sel(factor="separator") > by_model.sel(factor="enumerator")).mean()) > 0.95


@pytest.mark.slow
def test_shares_sum_to_one(recovered):
    trace, _ = recovered
    posterior = trace["posterior"]
    total = posterior["share_factor"].sum("factor") + posterior["share_factor_model"].sum("factor") + posterior["share_cell"]
    assert np.allclose(total.values, 1.0)
    for name in ("share_factor", "share_factor_model", "share_cell"):
        assert float(posterior[name].min()) >= 0.0
        assert float(posterior[name].max()) <= 1.0


@pytest.mark.slow
def test_trace_groups_per_pair(recovered):
    trace, _ = recovered
    loglik = trace["log_likelihood"][LOGLIK_VARIABLE]
    assert loglik.dims == ("chain", "draw", "pair")
    assert loglik.sizes["pair"] == 24
    assert np.isfinite(loglik.values).all()
    constant = trace["constant_data"].to_dataset()
    assert set(constant["pair_model"].values) == set(range(6))
    assert list(constant["task"].values) == ["task0", "task1", "task2", "task3"]
    assert trace["posterior_predictive"]["spread"].sizes["pair"] == 24
    assert isinstance(trace["observed_data"].to_dataset(), xr.Dataset)
    table = factors.component_table(trace["posterior"].to_dataset())
    assert list(table.index) == ["enumerator", "separator", "enumerator:model", "separator:model", "cell residual"]
