"""The perturbation-factors model: crossed random effects of prompt perturbation factors.

A perturbation is often a combination of a few design choices shared across
tasks (an enumerator, a separator, a generation method, a prompt format).
Each such choice is a *factor*: a per-perturbation coordinate of the tensor
whose *levels* recur across perturbations and tasks. For model ``m``, task
``t`` and perturbation ``c``::

    n_correct[m,t,c] ~ Binomial(n_total[m,t,c], inv_logit(eta[m,t,c] + r[m,t,c])),  r ~ Normal(0, sd_cell)
    eta[m,t,c]       = alpha + a[m] + b[t] + ab[m,t]
                       + sum over factors f of ( w_f[l] + w_fm[l, m] + w_ft[l, t] ),  l = level of f in c

with ``w_f ~ Normal(0, sd_factor[f])``, ``w_fm ~ Normal(0, sd_factor_model[f])``
and ``w_ft ~ Normal(0, sd_factor_task[f])``, all on the logit scale. The
factor-by-task terms are present only when ``factor_interactions`` lists
``task``, and the factor-by-model terms only when it lists ``model`` (the
default). The cell residual ``r`` absorbs what the factors do not explain.
It is integrated out of each cell by adaptive Gauss-Hermite quadrature
(:func:`robustscope.models.quadrature.marginal_logp`), which is exact up to
the quadrature error and leaves no per-cell latent variable. Cells with the
same (pair, factor levels, n_total, n_correct) have the same likelihood, so
each such count pattern is computed once and weighted by its multiplicity.

Every group effect is zero-sum (``ZeroSumNormal``), and an interaction sums
to zero along both of its axes. So ``alpha`` is the grand mean, each
factor's main effect is a deviation from it, and each interaction is what
remains after the main effects. The ``location`` terms of the specification
select ``a``, ``b`` and ``ab``. The ``scale`` keys of the location-scale
family do not apply here and are ignored.

Unknown levels: an empty label (or NaN for a numeric coordinate) means the
level of that cell is not recorded. Such a cell is not given a level of its
own, and it is not dropped. Its effect for that factor is treated as the
effect of an unseen level and integrated out with the residual: its logit
spread becomes ``sqrt(sd_cell^2 + sd_factor[f]^2 + sd_factor_model[f]^2
(+ sd_factor_task[f]^2))``. The count of such cells per factor is logged and
stored in the trace attributes.

Variance shares: for each posterior draw, the finite-population variance of
each component (a factor, a factor-by-model interaction, a factor-by-task
interaction) is taken over the observed cells whose level is known. The
residual contributes ``sd_cell^2``. Each share is a component's variance
divided by the sum of all of them, so the shares lie in [0, 1] and sum to 1
draw by draw. They answer which perturbation dimension moves scores most,
and whether that depends on the model. Covariance between components (from
unbalanced designs, where levels of two factors go together) is not
attributed to any of them, as in :mod:`robustscope.decompose`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
import xarray as xr

from .. import tensor as _tensor
from .._logging import get_logger
from ..errors import RobustscopeError
from ..fit import LOGLIK_VARIABLE, PPC_DRAWS, pair_spread, sample_model
from ..specs import ModelSpec
from .location_scale import _prior, empirical_logit
from ..simulate import draw_prior, zero_sum_normal
from .quadrature import marginal_logp

log = get_logger("models.factors")

# Scalar parameters the reports and diagnostics lead with.
KEY_PARAMETERS = ("sd_cell", "alpha", "sd_model", "sd_task", "sd_model_task")
# Standard deviations with one value per factor (on the ``factor`` dimension).
FACTOR_PARAMETERS = ("sd_factor", "sd_factor_model", "sd_factor_task")
# A per-perturbation coordinate with more levels than this is an identifier
# (a paraphrase text, a template id), not a factor with recurring levels.
MAX_FACTOR_LEVELS = 50
# Pointwise log likelihood is computed in chunks of this many draws.
LOGLIK_CHUNK = 50
UNKNOWN = -1


@dataclass
class FactorData:
    """Arrays the perturbation-factors model is built from.

    A *pair* is an observed (model, task) combination and a *cell* an
    observed (model, task, perturbation). A *group* is a pair together with
    one combination of factor levels. Its cells share the linear predictor.
    ``unique_*`` arrays hold each distinct (group, n_total, n_correct) once
    with its multiplicity. Level codes are ``-1`` where the level is unknown.
    """

    models: list[str]
    tasks: list[str]
    factors: list[str]
    factor_levels: list[list[str]]
    pair_model: np.ndarray
    pair_task: np.ndarray
    cell_pair: np.ndarray
    cell_group: np.ndarray
    cell_k: np.ndarray
    cell_n: np.ndarray
    group_pair: np.ndarray
    group_levels: np.ndarray
    group_cells: np.ndarray
    unique_group: np.ndarray
    unique_k: np.ndarray
    unique_n: np.ndarray
    unique_count: np.ndarray
    unknown_cells: dict[str, int] = field(default_factory=dict)

    @property
    def n_pairs(self) -> int:
        return len(self.pair_model)

    @property
    def pair_labels(self) -> list[str]:
        return [f"{self.models[m]} | {self.tasks[t]}" for m, t in zip(self.pair_model, self.pair_task, strict=True)]

    @property
    def pair_empirical_logit(self) -> np.ndarray:
        """Mean empirical logit of each pair's cells (half-count corrected)."""
        perturbations = np.bincount(self.cell_pair, minlength=self.n_pairs)
        sums = np.bincount(self.cell_pair, weights=empirical_logit(self.cell_k, self.cell_n), minlength=self.n_pairs)
        return sums / perturbations

    @property
    def group_model(self) -> np.ndarray:
        return self.pair_model[self.group_pair]

    @property
    def group_task(self) -> np.ndarray:
        return self.pair_task[self.group_pair]

    @property
    def level_dims(self) -> list[str]:
        """Dimension name of each factor's levels in the posterior."""
        return [f"{variable_stem(name)}_level" for name in self.factors]


# ---------------------------------------------------------------------------
# Factor coordinates


def variable_stem(factor: str) -> str:
    """Return ``factor`` as a variable-name fragment (letters, digits and underscores)."""
    return re.sub(r"\W+", "_", factor).strip("_") or "factor"


def _level_label(value: object) -> str:
    """Return the level label of a coordinate value; ``""`` marks an unknown level."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)):
        if np.isnan(value):
            return ""
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    return str(value)


def _cell_levels(ds: xr.Dataset, name: str, cells: pd.DataFrame) -> np.ndarray:
    """Return the level label of coordinate ``name`` for every observed cell."""
    coord = ds[name]
    perturbation_index = pd.Index(ds["perturbation"].values).get_indexer(cells["perturbation"])
    if coord.dims == ("perturbation",):
        values = coord.values[perturbation_index]
    else:
        values = coord.transpose("task", "perturbation").values
        task_index = pd.Index(ds["task"].values).get_indexer(cells["task"])
        values = values[task_index, perturbation_index]
    return np.array([_level_label(v) for v in values], dtype=object)


def _is_perturbation_coordinate(ds: xr.Dataset, name: str) -> bool:
    dims = ds[name].dims
    return name not in ds.dims and dims in (("perturbation",), ("task", "perturbation"), ("perturbation", "task"))


@dataclass(frozen=True)
class FactorCandidate:
    """A per-perturbation coordinate judged as a factor: its levels and why it qualifies or not."""

    name: str
    levels: tuple[str, ...]
    unknown_cells: int
    problem: str
    boolean: bool

    @property
    def usable(self) -> bool:
        return not self.problem

    def describe(self) -> str:
        """Return ``name (n levels)`` or ``name: problem`` for messages."""
        if self.usable:
            return f"{self.name} ({len(self.levels)} levels)"
        return f"{self.name}: {self.problem}"


def factor_candidates(ds: xr.Dataset, cells: pd.DataFrame | None = None) -> list[FactorCandidate]:
    """Judge every per-perturbation coordinate of ``ds`` as a factor, over the observed cells.

    A coordinate works as a factor when its known levels number from 2 to
    ``MAX_FACTOR_LEVELS`` and, in a nested tensor, at least one level occurs
    in two or more tasks (otherwise the factor only relabels tasks).
    """
    if cells is None:
        cells = _tensor.observed_cells(ds)
    candidates = []
    for name in ds.coords:
        name = str(name)
        if not _is_perturbation_coordinate(ds, name):
            continue
        labels = _cell_levels(ds, name, cells)
        known = labels != ""
        levels = tuple(sorted({str(v) for v in labels[known]}, key=_tensor.natural_key))
        problem = ""
        if len(levels) == 0:
            problem = "no known level among the observed cells"
        elif len(levels) == 1:
            problem = f"one level ({levels[0]!r}) among the observed cells, so it cannot move scores"
        elif len(levels) > MAX_FACTOR_LEVELS:
            problem = f"{len(levels)} levels, more than {MAX_FACTOR_LEVELS}: an identifier, not a factor with recurring levels"
        elif ds.attrs.get("perturbation_structure") == "nested":
            tasks_per_level = pd.Series(cells["task"].to_numpy()[known]).groupby(labels[known]).nunique()
            if tasks_per_level.max() < 2:
                problem = "every level occurs in one task only, so the factor cannot be told apart from the task"
        boolean = ds[name].dtype == bool
        candidates.append(FactorCandidate(name, levels, int((~known).sum()), problem, boolean))
    return candidates


def _no_factor_message(ds: xr.Dataset, candidates: Sequence[FactorCandidate]) -> str:
    name = ds.attrs.get("dataset")
    shape = "on (task, perturbation)" if ds.attrs.get("perturbation_structure") == "nested" else "on perturbation"
    judged = "; ".join(c.describe() for c in candidates) or "none"
    return (
        f"the perturbation-factors model needs factor coordinates, but tensor {name!r} has none that work. "
        f"A factor is a per-perturbation coordinate ({shape}) with 2 to {MAX_FACTOR_LEVELS} levels that recur across "
        f"perturbations and tasks, such as an enumerator, a separator or a prompt format. Per-perturbation coordinates "
        f"found: {judged}. Ingest the perturbation metadata (perturbation_info) or fit the location-scale family instead"
    )


def select_factors(ds: xr.Dataset, spec: ModelSpec, cells: pd.DataFrame) -> list[FactorCandidate]:
    """Return the factors the specification names, or every usable non-boolean factor coordinate.

    With ``factors: []`` boolean flags (such as a validity or default
    marker) are skipped because they mark single perturbations rather than
    dimensions. Name one in ``factors`` to use it.

    Raises
    ------
    RobustscopeError
        When a named factor is not a per-perturbation coordinate, has one
        level, too many levels or levels confined to single tasks, or when
        no coordinate works as a factor. The message lists the coordinates
        that would work.
    """
    candidates = factor_candidates(ds, cells)
    by_name = {c.name: c for c in candidates}
    usable = [c for c in candidates if c.usable]
    working = ", ".join(c.describe() for c in usable) or "none"
    dataset = ds.attrs.get("dataset")
    if not spec.factors:
        chosen = [c for c in usable if not c.boolean]
        if not chosen:
            raise RobustscopeError(_no_factor_message(ds, candidates))
        return chosen

    if len(set(spec.factors)) != len(spec.factors):
        repeated = sorted({f for f in spec.factors if spec.factors.count(f) > 1})
        raise RobustscopeError(f"factors lists {', '.join(map(repr, repeated))} more than once; name each factor once")
    chosen = []
    for name in spec.factors:
        if name not in ds.coords:
            raise RobustscopeError(
                f"factor {name!r} is not a coordinate of tensor {dataset!r}; coordinates that work as factors: {working}"
            )
        if name not in by_name:
            raise RobustscopeError(
                f"factor {name!r} is not a per-perturbation coordinate of tensor {dataset!r} (its dimensions are "
                f"{ds[name].dims}); coordinates that work as factors: {working}"
            )
        candidate = by_name[name]
        if not candidate.usable:
            raise RobustscopeError(
                f"factor {name!r} of tensor {dataset!r} cannot be used: {candidate.problem}. Remove it from factors. "
                f"Coordinates that work as factors: {working}"
            )
        chosen.append(candidate)
    return chosen


# ---------------------------------------------------------------------------
# Data


def prepare_data(ds: xr.Dataset, spec: ModelSpec) -> FactorData:
    """Collect the observed cells of a binary-metric tensor and their factor levels into model arrays.

    Raises
    ------
    RobustscopeError
        When the tensor contains a continuous metric, fewer than two models or
        tasks are observed, or the factors do not work (see
        :func:`select_factors`).
    """
    dataset = ds.attrs.get("dataset")
    if ds.attrs.get("metric_kind") != "binary" or "n_correct" not in ds:
        raise RobustscopeError(
            f"the perturbation-factors model needs counts of correct answers, but tensor {dataset!r} contains the "
            f"continuous metric {ds.attrs.get('metric')!r}; ingest counts or 0/1 per-example scores instead"
        )
    cells = _tensor.observed_cells(ds)
    chosen = select_factors(ds, spec, cells)

    # Build each set once: inside the comprehension it would be rebuilt per label.
    observed_models = set(cells["model"].unique())
    observed_tasks = set(cells["task"].unique())
    models = [m for m in ds["model"].values.tolist() if m in observed_models]
    tasks = [t for t in ds["task"].values.tolist() if t in observed_tasks]
    if len(models) < 2 or len(tasks) < 2:
        raise RobustscopeError(
            f"the perturbation-factors model needs at least two models and two tasks with observed cells; "
            f"tensor {dataset!r} has {len(models)} model(s) and {len(tasks)} task(s)"
        )

    model_code = pd.Categorical(cells["model"], categories=models).codes.astype(np.int64)
    task_code = pd.Categorical(cells["task"], categories=tasks).codes.astype(np.int64)
    pair_values, cell_pair = np.unique(model_code * len(tasks) + task_code, return_inverse=True)

    # Level codes per cell and factor; unknown levels get -1.
    level_codes = np.empty((len(cells), len(chosen)), dtype=np.int64)
    unknown_cells = {}
    for column, candidate in enumerate(chosen):
        labels = _cell_levels(ds, candidate.name, cells)
        level_codes[:, column] = pd.Index(candidate.levels).get_indexer(labels)
        unknown_cells[candidate.name] = int((level_codes[:, column] == UNKNOWN).sum())
        if unknown_cells[candidate.name]:
            log.warning(
                "factor %r: %d of %d cells have no recorded level; their effect is integrated out as that of an unseen level",
                candidate.name,
                unknown_cells[candidate.name],
                len(cells),
            )

    # Groups: one per (pair, level combination).
    group_key = np.column_stack([cell_pair, level_codes])
    group_rows, cell_group = np.unique(group_key, axis=0, return_inverse=True)
    cell_group = cell_group.ravel()
    cell_k = cells["n_correct"].to_numpy(np.int64)
    cell_n = cells["n_total"].to_numpy(np.int64)
    unique_rows, unique_count = np.unique(np.column_stack([cell_group, cell_n, cell_k]), axis=0, return_counts=True)
    return FactorData(
        models=models,
        tasks=tasks,
        factors=[c.name for c in chosen],
        factor_levels=[list(c.levels) for c in chosen],
        pair_model=(pair_values // len(tasks)).astype(np.int64),
        pair_task=(pair_values % len(tasks)).astype(np.int64),
        cell_pair=cell_pair.astype(np.int64),
        cell_group=cell_group.astype(np.int64),
        cell_k=cell_k,
        cell_n=cell_n,
        group_pair=group_rows[:, 0].astype(np.int64),
        group_levels=group_rows[:, 1:].astype(np.int64),
        group_cells=np.bincount(cell_group, minlength=len(group_rows)).astype(np.int64),
        unique_group=unique_rows[:, 0].astype(np.int64),
        unique_k=unique_rows[:, 2].astype(np.int64),
        unique_n=unique_rows[:, 1].astype(np.int64),
        unique_count=unique_count.astype(np.int64),
        unknown_cells=unknown_cells,
    )


# ---------------------------------------------------------------------------
# Model


def _check_spec(spec: ModelSpec) -> None:
    if spec.family != "perturbation-factors":
        raise RobustscopeError(f"specification {spec.name!r} is for the {spec.family!r} family, not 'perturbation-factors'")
    if spec.likelihood != "binomial-collapsed":
        raise RobustscopeError(
            f"the perturbation-factors model supports the likelihood 'binomial-collapsed' only, not {spec.likelihood!r}"
        )


def _effect(name: str, sd: Any, dims: tuple[str, ...], noncentered: bool) -> pt.TensorVariable:
    """Zero-sum effect on ``dims`` (zero sum along every axis) with scale ``sd``."""
    if noncentered:
        raw = pm.ZeroSumNormal(f"{name}_raw", sigma=1.0, dims=dims, n_zerosum_axes=len(dims))
        return pm.Deterministic(name, sd * raw, dims=dims)
    return pm.ZeroSumNormal(name, sigma=sd, dims=dims, n_zerosum_axes=len(dims))


def effect_names(data: FactorData, spec: ModelSpec) -> dict[str, list[str]]:
    """Return the posterior variable names of the effects: ``{"factor", "model", "task"}`` lists, one per factor."""
    stems = [variable_stem(f) for f in data.factors]
    names = {"factor": [f"effect_{s}" for s in stems]}
    names["model"] = [f"effect_{s}_model" for s in stems] if "model" in spec.factor_interactions else []
    names["task"] = [f"effect_{s}_task" for s in stems] if "task" in spec.factor_interactions else []
    return names


# Under ``parameterization: auto`` an effect block is non-centred when its
# effects are seen in fewer than this many cells each (median over the block).
AUTO_MIN_CELLS = 50


def _cells_per_effect(data: FactorData, index: int, group: str | None) -> float:
    """Return the median number of cells behind one effect of factor ``index`` (by level, or by level and ``group``)."""
    codes = data.group_levels[:, index]
    known = codes != UNKNOWN
    key = codes[known]
    if group == "model":
        key = key * len(data.models) + data.group_model[known]
    elif group == "task":
        key = key * len(data.tasks) + data.group_task[known]
    _, inverse = np.unique(key, return_inverse=True)
    counts = np.bincount(inverse.ravel(), weights=data.group_cells[known])
    return float(np.median(counts)) if len(counts) else 0.0


def noncentered_blocks(data: FactorData, spec: ModelSpec) -> dict[Any, bool]:
    """Return which effect blocks the model samples non-centred.

    Keys are ``"model"``, ``"task"``, ``"pair"`` and ``(kind, factor index)``
    with ``kind`` one of ``"factor"``, ``"model"`` (factor by model) and
    ``"task"`` (factor by task). ``centered`` and ``noncentered`` apply to
    every block. Under ``auto`` the model, task and pair effects are centred,
    and a factor or factor-by-group block is non-centred when the median
    number of cells behind one of its effects is below
    :data:`AUTO_MIN_CELLS`. Few cells per effect leave an effect close to its
    prior, and when the block's standard deviation is near zero the centred
    form is then a funnel. With many cells the data pin each effect down, and
    the non-centred form turns that into a narrow ridge. On HELM classic (6
    cells per perturbation type and model, 466 per type) the fully centred
    form gave R-hat 1.67 and BFMI 0.06, and the fully non-centred form
    R-hat 1.07 (both with the pair location as an offset). This rule passes
    there.
    """
    everything = spec.parameterization == "noncentered"
    blocks: dict[Any, bool] = {"model": everything, "task": everything, "pair": everything}
    for index in range(len(data.factors)):
        for kind, group in (("factor", None), ("model", "model"), ("task", "task")):
            if spec.parameterization == "auto":
                blocks[(kind, index)] = _cells_per_effect(data, index, group) < AUTO_MIN_CELLS
            else:
                blocks[(kind, index)] = everything
    return blocks


def build_model(data: FactorData, spec: ModelSpec) -> pm.Model:
    """Return the PyMC model for ``data`` as ``spec`` declares it (all effects on the logit scale)."""
    _check_spec(spec)
    stems = [variable_stem(f) for f in data.factors]
    if len(set(stems)) != len(stems):
        raise RobustscopeError(f"factor names {data.factors} map to the same variable name; rename the coordinates")
    coords: dict[str, Any] = {"model": data.models, "task": data.tasks, "pair": data.pair_labels, "factor": data.factors}
    for dim, levels in zip(data.level_dims, data.factor_levels, strict=True):
        coords[dim] = levels
    noncentered = noncentered_blocks(data, spec)
    names = effect_names(data, spec)
    with pm.Model(coords=coords) as model:
        params: dict[str, Any] = {"alpha": _prior("alpha", spec)}
        if "model" in spec.location_terms:
            params["a_model"] = _effect("a_model", _prior("sd_model", spec), ("model",), noncentered["model"])
        if "task" in spec.location_terms:
            params["b_task"] = _effect("b_task", _prior("sd_task", spec), ("task",), noncentered["task"])
        if "model:task" in spec.location_terms:
            sd_pair = _prior("sd_model_task", spec)
            if noncentered["pair"]:
                raw = pm.Normal("ab_pair_raw", 0.0, 1.0, dims="pair")
                params["ab_pair"] = pm.Deterministic("ab_pair", sd_pair * raw, dims="pair")
            else:
                # Centred on the pair's whole location, not on the offset ab,
                # because the cells pin down alpha + a + b + ab. Sampling the
                # offset left alpha, a and b in long valleys against the means
                # of ab (511 leapfrog steps per draw in warm-up on the
                # multi-prompt data).
                loc = params["alpha"] + pt.zeros(data.n_pairs)
                if "a_model" in params:
                    loc = loc + params["a_model"][data.pair_model]
                if "b_task" in params:
                    loc = loc + params["b_task"][data.pair_task]
                mu_pair = pm.Normal("mu_pair", loc, sd_pair, dims="pair")
                params["ab_pair"] = pm.Deterministic("ab_pair", mu_pair - loc, dims="pair")

        params["sd_factor"] = _prior("sd_factor", spec, dims="factor")
        if names["model"]:
            params["sd_factor_model"] = _prior("sd_factor_model", spec, dims="factor")
        if names["task"]:
            params["sd_factor_task"] = _prior("sd_factor_task", spec, dims="factor")
        for index, dim in enumerate(data.level_dims):
            params[names["factor"][index]] = _effect(names["factor"][index], params["sd_factor"][index], (dim,), noncentered[("factor", index)])
            if names["model"]:
                sd = params["sd_factor_model"][index]
                params[names["model"][index]] = _effect(names["model"][index], sd, (dim, "model"), noncentered[("model", index)])
            if names["task"]:
                sd = params["sd_factor_task"][index]
                params[names["task"][index]] = _effect(names["task"][index], sd, (dim, "task"), noncentered[("task", index)])
        params["sd_cell"] = _prior("sd_cell", spec)

        location, log_sd = group_predictor(params, data, spec, xp=pt)
        pm.Potential("likelihood", pt.sum(pattern_loglik(location, log_sd, data, spec, xp=pt)))
    return model


def initial_point(data: FactorData, model: pm.Model) -> dict[str, np.ndarray]:
    """Return starting values from the data: ``alpha`` at the mean empirical logit, each pair's location at its own.

    The other parameters start at their prior's support point, and the
    sampler jitters all of them per chain.
    """
    logits = np.clip(data.pair_empirical_logit, -6.0, 6.0)
    values = {"alpha": np.asarray(float(np.mean(logits))), "mu_pair": logits}
    free = {rv.name for rv in model.free_RVs}
    return {name: value for name, value in values.items() if name in free}


def group_predictor(params: Mapping[str, Any], data: FactorData, spec: ModelSpec, xp: Any = np) -> tuple[Any, Any]:
    """Return the linear predictor and the log residual spread of each group.

    ``params`` maps variable names to PyTensor tensors, or to NumPy arrays
    with leading draw axes (the parameter's own axes last). The spread of a
    group is ``sd_cell``, widened by the effect variances of the factors
    whose level is unknown in that group.
    """
    names = effect_names(data, spec)
    group_model = data.group_model
    group_task = data.group_task
    location = params["alpha"][..., None] + xp.zeros(len(data.group_pair))
    if "a_model" in params:
        location = location + params["a_model"][..., group_model]
    if "b_task" in params:
        location = location + params["b_task"][..., group_task]
    if "ab_pair" in params:
        location = location + params["ab_pair"][..., data.group_pair]

    variance = params["sd_cell"][..., None] ** 2 + xp.zeros(len(data.group_pair))
    for index in range(len(data.factors)):
        codes = data.group_levels[:, index]
        known = codes != UNKNOWN
        safe = np.where(known, codes, 0)
        effect = params[names["factor"][index]][..., safe]
        unseen = params["sd_factor"][..., index] ** 2
        if names["model"]:
            effect = effect + params[names["model"][index]][..., safe, group_model]
            unseen = unseen + params["sd_factor_model"][..., index] ** 2
        if names["task"]:
            effect = effect + params[names["task"][index]][..., safe, group_task]
            unseen = unseen + params["sd_factor_task"][..., index] ** 2
        location = location + effect * known.astype(float)
        if not known.all():
            variance = variance + unseen[..., None] * (~known)
    return location, 0.5 * xp.log(variance)


def pattern_loglik(location: Any, log_sd: Any, data: FactorData, spec: ModelSpec, xp: Any = np) -> Any:
    """Return the log likelihood of each distinct count pattern times its multiplicity (pattern axis last)."""
    per_pattern = marginal_logp(
        location[..., data.unique_group], log_sd[..., data.unique_group], data.unique_k, data.unique_n, spec.quadrature_nodes, xp
    )
    return per_pattern * data.unique_count


# ---------------------------------------------------------------------------
# Post-processing


def _draw_arrays(posterior: xr.Dataset, data: FactorData, spec: ModelSpec) -> dict[str, np.ndarray]:
    """Return the parameters :func:`group_predictor` reads, flattened to (sample, ...) NumPy arrays."""
    names = effect_names(data, spec)
    wanted = ["alpha", "sd_cell", "sd_factor", "a_model", "b_task", "ab_pair", "sd_factor_model", "sd_factor_task"]
    wanted += names["factor"] + names["model"] + names["task"]
    arrays = {}
    for name in wanted:
        if name in posterior:
            values = posterior[name].transpose("chain", "draw", ...).values
            arrays[name] = values.reshape((-1,) + values.shape[2:])
    return arrays


def pointwise_loglik(posterior: xr.Dataset, data: FactorData, spec: ModelSpec) -> xr.DataArray:
    """Return the log likelihood of each (model, task) pair per draw, summed over its cells, on (chain, draw, pair)."""
    arrays = _draw_arrays(posterior, data, spec)
    chains, draws = posterior.sizes["chain"], posterior.sizes["draw"]
    pattern_pair = data.group_pair[data.unique_group]
    out = np.empty((chains * draws, data.n_pairs))
    for start in range(0, chains * draws, LOGLIK_CHUNK):
        chunk = {name: values[start : start + LOGLIK_CHUNK] for name, values in arrays.items()}
        location, log_sd = group_predictor(chunk, data, spec, xp=np)
        per_pattern = pattern_loglik(location, log_sd, data, spec, xp=np)
        summed = np.zeros((per_pattern.shape[0], data.n_pairs))
        for row in range(per_pattern.shape[0]):
            summed[row] = np.bincount(pattern_pair, weights=per_pattern[row], minlength=data.n_pairs)
        out[start : start + LOGLIK_CHUNK] = summed
    return xr.DataArray(
        out.reshape(chains, draws, data.n_pairs),
        dims=("chain", "draw", "pair"),
        coords={"chain": posterior["chain"], "draw": posterior["draw"], "pair": posterior["pair"]},
        name=LOGLIK_VARIABLE,
    )


def posterior_predictive_spread(posterior: xr.Dataset, data: FactorData, spec: ModelSpec, seed: int) -> xr.DataArray:
    """Simulate each pair's accuracy spread across perturbations (probability scale) from the posterior.

    Keeps the fitted factor effects, draws new cell residuals and binomial
    counts for every observed cell, using at most ``PPC_DRAWS`` evenly
    thinned draws.
    """
    rng = np.random.default_rng(seed)
    arrays = _draw_arrays(posterior, data, spec)
    total = next(iter(arrays.values())).shape[0]
    keep = np.unique(np.linspace(0, total - 1, min(PPC_DRAWS, total)).astype(int))
    location, log_sd = group_predictor({name: values[keep] for name, values in arrays.items()}, data, spec, xp=np)
    cell_location = location[:, data.cell_group]
    cell_sd = np.exp(log_sd[:, data.cell_group])
    eta = cell_location + cell_sd * rng.standard_normal(cell_location.shape)
    k = rng.binomial(data.cell_n, 1.0 / (1.0 + np.exp(-eta)))
    spread = pair_spread(k, data.cell_n, data.cell_pair, data.n_pairs)
    return xr.DataArray(
        spread[None], dims=("chain", "draw", "pair"), coords={"chain": [0], "draw": np.arange(len(keep)), "pair": posterior["pair"].values}
    )


def _weighted_variance(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Variance over the last axis with non-negative weights (ddof 0)."""
    total = weights.sum()
    if total == 0:
        return np.zeros(values.shape[:-1])
    mean = (values * weights).sum(axis=-1) / total
    return ((values - mean[..., None]) ** 2 * weights).sum(axis=-1) / total


def variance_components(posterior: xr.Dataset, data: FactorData, spec: ModelSpec) -> xr.Dataset:
    """Return finite-population standard deviations and variance shares per draw.

    Output variables on (chain, draw[, factor]): ``finite_sd_factor``,
    ``finite_sd_factor_model`` and ``finite_sd_factor_task`` (the standard
    deviation over the observed cells with a known level, logit scale), and
    ``share_factor``, ``share_factor_model``, ``share_factor_task`` and
    ``share_cell``. The residual's variance is ``sd_cell ** 2``. The shares
    of every draw sum to 1.
    """
    # NOTE: the residuals are integrated out, so their finite-population
    # variance is replaced by sd_cell**2. With hundreds of cells or more the
    # two differ by a relative O(sqrt(2 / cells)).
    names = effect_names(data, spec)
    arrays = _draw_arrays(posterior, data, spec)
    chains, draws = posterior.sizes["chain"], posterior.sizes["draw"]
    group_model = data.group_model
    group_task = data.group_task
    kinds = {"factor": names["factor"], "factor_model": names["model"], "factor_task": names["task"]}
    variances: dict[str, np.ndarray] = {}
    for kind, variables in kinds.items():
        if not variables:
            continue
        per_factor = np.empty((chains * draws, len(data.factors)))
        for index, name in enumerate(variables):
            codes = data.group_levels[:, index]
            known = codes != UNKNOWN
            safe = np.where(known, codes, 0)
            if kind == "factor":
                values = arrays[name][:, safe]
            elif kind == "factor_model":
                values = arrays[name][:, safe, group_model]
            else:
                values = arrays[name][:, safe, group_task]
            per_factor[:, index] = _weighted_variance(values, data.group_cells * known)
        variances[kind] = per_factor
    cell_variance = arrays["sd_cell"] ** 2
    total = cell_variance + sum(v.sum(axis=1) for v in variances.values())
    total = np.where(total > 0, total, np.nan)

    factor_coord = {"factor": data.factors}
    out = {}
    for kind, per_factor in variances.items():
        out[f"finite_sd_{kind}"] = (("chain", "draw", "factor"), np.sqrt(per_factor).reshape(chains, draws, -1))
        out[f"share_{kind}"] = (("chain", "draw", "factor"), np.nan_to_num(per_factor / total[:, None]).reshape(chains, draws, -1))
    out["share_cell"] = (("chain", "draw"), np.nan_to_num(cell_variance / total).reshape(chains, draws))
    return xr.Dataset(out, coords={"chain": posterior["chain"], "draw": posterior["draw"], **factor_coord})


def component_table(posterior: xr.Dataset, prob: float = 0.89) -> pd.DataFrame:
    """Return one row per variance component with its standard deviation and share, means and equal-tailed intervals.

    Rows are ``<factor>``, ``<factor>:model``, ``<factor>:task`` (where
    fitted) and ``cell residual``. Columns: ``sd``, ``sd_lower``,
    ``sd_upper`` (superpopulation standard deviation, logit scale),
    ``finite_sd`` (mean finite-population standard deviation over the
    observed cells), ``share``, ``share_lower`` and ``share_upper``.
    """
    tail = (1.0 - prob) / 2.0

    def summary(values: xr.DataArray) -> tuple[float, float, float]:
        flat = np.asarray(values).ravel()
        return float(flat.mean()), float(np.quantile(flat, tail)), float(np.quantile(flat, 1.0 - tail))

    rows = []
    for kind, suffix in (("factor", ""), ("factor_model", ":model"), ("factor_task", ":task")):
        if f"share_{kind}" not in posterior:
            continue
        for factor in posterior["factor"].values:
            sd, sd_lower, sd_upper = summary(posterior[f"sd_{kind}"].sel(factor=factor))
            share, share_lower, share_upper = summary(posterior[f"share_{kind}"].sel(factor=factor))
            finite = float(posterior[f"finite_sd_{kind}"].sel(factor=factor).mean())
            rows.append((f"{factor}{suffix}", sd, sd_lower, sd_upper, finite, share, share_lower, share_upper))
    sd, sd_lower, sd_upper = summary(posterior["sd_cell"])
    share, share_lower, share_upper = summary(posterior["share_cell"])
    rows.append(("cell residual", sd, sd_lower, sd_upper, sd, share, share_lower, share_upper))
    columns = ["component", "sd", "sd_lower", "sd_upper", "finite_sd", "share", "share_lower", "share_upper"]
    return pd.DataFrame(rows, columns=columns).set_index("component")


def fit_family(ds: xr.Dataset, spec: ModelSpec, *, progress: bool = True) -> tuple[xr.DataTree, dict[str, float], dict[str, Any]]:
    """Fit the perturbation-factors model to a binary-metric tensor.

    Returns
    -------
    (trace, timings, extra_attrs)
        ``trace`` has the groups ``posterior`` (parameters; ``sd_factor``,
        ``sd_factor_model`` and ``sd_factor_task`` on the ``factor``
        dimension; effects ``effect_<factor>`` on ``<factor>_level`` and
        ``effect_<factor>_model`` on (``<factor>_level``, ``model``); the
        finite-population standard deviations and variance shares of
        :func:`variance_components`), ``sample_stats``, ``log_likelihood``
        (one value per (model, task) pair and draw, summed over its cells),
        ``observed_data`` and ``posterior_predictive`` (``spread``: each
        pair's accuracy spread across perturbations) and ``constant_data``
        (``pair_model``, ``pair_task`` and observed summaries, with the
        ``model`` and ``task`` coordinates). ``timings`` are in seconds.
        ``extra_attrs`` holds the factors, their levels, the interactions
        and the count of cells with an unknown level per factor.

    Raises
    ------
    RobustscopeError
        When the tensor contains a continuous metric, has no usable factor, a
        named factor does not work, or the specification does not fit this
        family.
    """
    _check_spec(spec)
    data = prepare_data(ds, spec)
    log.info(
        "fitting %s to %s: factors %s, interactions %s, %d pairs, %d cells, %d groups, %d distinct count patterns",
        spec.name,
        ds.attrs.get("dataset"),
        ", ".join(f"{f} ({len(levels)} levels)" for f, levels in zip(data.factors, data.factor_levels, strict=True)),
        ", ".join(spec.factor_interactions) or "none",
        data.n_pairs,
        len(data.cell_k),
        len(data.group_pair),
        len(data.unique_k),
    )
    model = build_model(data, spec)
    trace, timings = sample_model(model, spec, progress=progress, initial_points=initial_point(data, model))

    posterior = trace["posterior"].to_dataset()
    posterior = posterior.assign(variance_components(posterior, data, spec).data_vars)
    trace["posterior"] = xr.DataTree(posterior)

    start = time.perf_counter()
    trace["log_likelihood"] = xr.DataTree(xr.Dataset({LOGLIK_VARIABLE: pointwise_loglik(posterior, data, spec)}))
    timings["loglik_seconds"] = time.perf_counter() - start
    trace["posterior_predictive"] = xr.DataTree(xr.Dataset({"spread": posterior_predictive_spread(posterior, data, spec, spec.sampler.seed)}))
    pair_coord = {"pair": posterior["pair"].values}
    observed_spread = pair_spread(data.cell_k.astype(float), data.cell_n, data.cell_pair, data.n_pairs)
    trace["observed_data"] = xr.DataTree(xr.Dataset({"spread": ("pair", observed_spread)}, coords=pair_coord))
    perturbations = np.bincount(data.cell_pair, minlength=data.n_pairs)
    accuracy = np.bincount(data.cell_pair, weights=data.cell_k / data.cell_n, minlength=data.n_pairs) / perturbations
    logits = data.pair_empirical_logit
    trace["constant_data"] = xr.DataTree(
        xr.Dataset(
            {
                "pair_model": ("pair", data.pair_model),
                "pair_task": ("pair", data.pair_task),
                "pair_perturbations": ("pair", perturbations),
                "pair_accuracy": ("pair", accuracy),
                "pair_empirical_logit": ("pair", logits),
            },
            coords={**pair_coord, "model": data.models, "task": data.tasks},
        )
    )
    extra = {
        "factors": json.dumps(data.factors),
        "factor_levels": json.dumps(dict(zip(data.factors, data.factor_levels, strict=True))),
        "factor_interactions": json.dumps(list(spec.factor_interactions)),
        "unknown_level_cells": json.dumps(data.unknown_cells),
        "count_patterns": int(len(data.unique_k)),
    }
    return trace, timings, extra


# ---------------------------------------------------------------------------
# Simulation


@dataclass(frozen=True)
class FactorTruth:
    """Generating parameters of a simulated tensor, on the logit scale.

    ``sd_factor``, ``sd_factor_model`` and ``sd_factor_task`` hold one value
    per factor, in the order of ``factor_levels`` in :func:`simulate`.
    """

    alpha: float = 0.3
    sd_model: float = 0.8
    sd_task: float = 0.8
    sd_model_task: float = 0.4
    sd_factor: tuple[float, ...] = (0.8, 0.3)
    sd_factor_model: tuple[float, ...] = (0.1, 0.5)
    sd_factor_task: tuple[float, ...] = (0.0, 0.0)
    sd_cell: float = 0.2


def simulate(
    truth: FactorTruth = FactorTruth(),
    *,
    n_models: int = 6,
    n_tasks: int = 4,
    n_perturbations: int = 24,
    factor_levels: Mapping[str, int] | None = None,
    n_examples: int = 100,
    rng: np.random.Generator | int | None = 0,
) -> tuple[xr.Dataset, dict[str, Any]]:
    """Simulate a crossed tensor from the perturbation-factors model with known parameters.

    Perturbation ``c`` takes the ``c``-th combination of factor levels in a
    shuffled full cross (repeated when there are more perturbations than
    combinations), so every level occurs about equally often. Every (model,
    task) pair is observed under every perturbation with ``n_examples``
    examples.

    Parameters
    ----------
    truth
        The generating parameters; ``sd_factor``, ``sd_factor_model`` and
        ``sd_factor_task`` need one value per factor.
    factor_levels
        Factor name -> number of levels (default ``{"enumerator": 4,
        "separator": 3}``). Level labels are ``"<factor>-<i>"``.

    Returns
    -------
    (tensor, realised)
        The tensor, with one 1-D coordinate per factor on ``perturbation``,
        and a dictionary with the parameters, the drawn effects
        (``effect_<factor>``, ``effect_<factor>_model`` on (level, model),
        ``effect_<factor>_task``) and the realised finite-population
        standard deviations and shares computed as :func:`variance_components`
        does (``finite_sd_factor`` etc. as per-factor arrays, ``share_cell``).

    Raises
    ------
    RobustscopeError
        When a per-factor tuple of ``truth`` does not have one value per factor.
    """
    rng = np.random.default_rng(rng)
    factor_levels = dict(factor_levels or {"enumerator": 4, "separator": 3})
    names = list(factor_levels)
    for label in ("sd_factor", "sd_factor_model", "sd_factor_task"):
        if len(getattr(truth, label)) != len(names):
            raise RobustscopeError(f"truth.{label} has {len(getattr(truth, label))} values but there are {len(names)} factors {names}")

    grid = np.array(np.meshgrid(*[np.arange(factor_levels[n]) for n in names], indexing="ij")).reshape(len(names), -1).T
    grid = grid[rng.permutation(len(grid))]
    design = grid[np.arange(n_perturbations) % len(grid)]

    a = zero_sum_normal(rng, (n_models,), truth.sd_model)
    b = zero_sum_normal(rng, (n_tasks,), truth.sd_task)
    ab = rng.normal(0.0, truth.sd_model_task, (n_models, n_tasks))
    eta = truth.alpha + a[:, None, None] + b[None, :, None] + ab[..., None] + np.zeros((1, 1, n_perturbations))
    realised: dict[str, Any] = asdict(truth)
    component_values: dict[str, list[np.ndarray]] = {"factor": [], "factor_model": [], "factor_task": []}
    for index, name in enumerate(names):
        levels = design[:, index]
        main = zero_sum_normal(rng, (factor_levels[name],), truth.sd_factor[index])
        by_model = zero_sum_normal(rng, (factor_levels[name], n_models), truth.sd_factor_model[index])
        by_task = zero_sum_normal(rng, (factor_levels[name], n_tasks), truth.sd_factor_task[index])
        parts = {
            "factor": np.broadcast_to(main[levels][None, None, :], eta.shape),
            "factor_model": np.broadcast_to(by_model[levels].T[:, None, :], eta.shape),
            "factor_task": np.broadcast_to(by_task[levels].T[None, :, :], eta.shape),
        }
        for kind, values in parts.items():
            eta = eta + values
            component_values[kind].append(values)
        stem = variable_stem(name)
        realised.update({f"effect_{stem}": main, f"effect_{stem}_model": by_model, f"effect_{stem}_task": by_task})
    residual = rng.normal(0.0, truth.sd_cell, eta.shape)
    k = rng.binomial(n_examples, 1.0 / (1.0 + np.exp(-(eta + residual))))

    variances = {kind: np.array([np.var(v) for v in values]) for kind, values in component_values.items()}
    total = truth.sd_cell**2 + sum(v.sum() for v in variances.values())
    for kind, per_factor in variances.items():
        realised[f"finite_sd_{kind}"] = np.sqrt(per_factor)
        realised[f"share_{kind}"] = per_factor / total
    realised["share_cell"] = truth.sd_cell**2 / total
    realised["factors"] = names

    labels = [f"p{c}" for c in range(n_perturbations)]
    index = pd.MultiIndex.from_product(
        [[f"model{i}" for i in range(n_models)], [f"task{j}" for j in range(n_tasks)], labels], names=["model", "task", "perturbation"]
    )
    records = pd.DataFrame({"n_correct": k.ravel(), "n_total": n_examples}, index=index).reset_index()
    info = pd.DataFrame({name: [f"{name}-{level}" for level in design[:, i]] for i, name in enumerate(names)}, index=labels)
    ds = _tensor.from_counts(records, dataset="simulated-factors", structure="crossed", perturbation_info=info)
    return ds, realised


def simulate_from_prior(
    spec: ModelSpec,
    rng: np.random.Generator,
    n_models: int = 6,
    n_tasks: int = 4,
    n_perturbations: int = 24,
    factor_levels: Mapping[str, int] | None = None,
    n_examples: int = 100,
) -> tuple[xr.Dataset, dict[str, Any]]:
    """Draw the parameters from the specification's priors and simulate a crossed tensor.

    The factors are ``factor_levels`` (default: the names in
    ``spec.factors`` with 3 levels each, or ``enumerator`` and ``separator``
    when the specification names none). Terms the specification leaves out
    (location terms, factor interactions) get a standard deviation of zero.
    Returns the tensor and the realised truth, as :func:`simulate` does.
    """
    _check_spec(spec)
    if factor_levels is None:
        factor_levels = {name: 3 for name in spec.factors} if spec.factors else {"enumerator": 3, "separator": 3}
    n_factors = len(factor_levels)

    def draw(name: str, present: bool = True) -> float:
        return draw_prior(spec.prior(name), rng) if present else 0.0

    truth = FactorTruth(
        alpha=draw("alpha"),
        sd_model=draw("sd_model", "model" in spec.location_terms),
        sd_task=draw("sd_task", "task" in spec.location_terms),
        sd_model_task=draw("sd_model_task", "model:task" in spec.location_terms),
        sd_factor=tuple(draw("sd_factor") for _ in range(n_factors)),
        sd_factor_model=tuple(draw("sd_factor_model", "model" in spec.factor_interactions) for _ in range(n_factors)),
        sd_factor_task=tuple(draw("sd_factor_task", "task" in spec.factor_interactions) for _ in range(n_factors)),
        sd_cell=draw("sd_cell"),
    )
    return simulate(
        truth,
        n_models=n_models,
        n_tasks=n_tasks,
        n_perturbations=n_perturbations,
        factor_levels=factor_levels,
        n_examples=n_examples,
        rng=rng,
    )


# Report hooks (see robustscope.report.render).
QUANTITY = "the perturbation-driven logit of accuracy"
COMPETENCE_EFFECT_UNITS = "not estimated by this family"


def report_tables(trace: xr.DataTree) -> dict[str, pd.DataFrame]:
    """Return the variance-component table of a perturbation-factor fit for the report."""
    return {"Variance components (logit scale, 89% intervals)": component_table(trace["posterior"].to_dataset())}


def report_findings(trace: xr.DataTree) -> list[str]:
    """Return the report's findings for a perturbation-factor fit, in words with 89% intervals."""
    table = component_table(trace["posterior"].to_dataset())
    ranked = table.sort_values("share", ascending=False)
    lines = []
    top = ranked.index[0]
    lines.append(
        f"The largest source of perturbation-driven variation is {top}: share {ranked.loc[top, 'share']:.3f} "
        f"[{ranked.loc[top, 'share_lower']:.3f}, {ranked.loc[top, 'share_upper']:.3f}], standard deviation "
        f"{ranked.loc[top, 'sd']:.3f} logits [{ranked.loc[top, 'sd_lower']:.3f}, {ranked.loc[top, 'sd_upper']:.3f}]."
    )
    for component, row in ranked.iterrows():
        if component == top:
            continue
        lines.append(f"{component}: share {row['share']:.3f} [{row['share_lower']:.3f}, {row['share_upper']:.3f}], sd {row['sd']:.3f} logits.")
    interactions = [c for c in table.index if c.endswith(":model")]
    for name in interactions:
        main = name.rsplit(":", 1)[0]
        if main in table.index:
            depends = "depends on the model" if table.loc[name, "share_lower"] > 0.05 else "is close to the same for every model"
            lines.append(
                f"The effect of {main} {depends}: the factor-by-model share is {table.loc[name, 'share']:.3f} against "
                f"{table.loc[main, 'share']:.3f} for the factor itself."
            )
    return lines


def report_figures(trace: xr.DataTree) -> list[tuple[str, str, Any]]:
    """Return the variance-component forest plot of a perturbation-factor fit."""
    import matplotlib.pyplot as plt

    table = component_table(trace["posterior"].to_dataset()).iloc[::-1]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 0.45 * len(table) + 1.8), sharey=True)
    positions = np.arange(len(table))
    left.errorbar(table["sd"], positions, xerr=[table["sd"] - table["sd_lower"], table["sd_upper"] - table["sd"]], fmt="o", color="#1f77b4")
    left.set_yticks(positions, table.index)
    left.set_xlabel("standard deviation (logit scale)")
    left.set_title("Variance components")
    right.errorbar(table["share"], positions, xerr=[table["share"] - table["share_lower"], table["share_upper"] - table["share"]], fmt="o", color="#d62728")
    right.set_xlim(0, 1)
    right.set_xlabel("share of the perturbation-driven variance (0 to 1)")
    right.set_title("Shares")
    fig.tight_layout()
    caption = (
        "Each perturbation factor, each factor-by-model interaction and the cell residual: standard deviation on the logit scale "
        "(left) and share of the finite-population variance they add to the logit of accuracy (right), with 89% intervals. "
        "The shares sum to one in every draw."
    )
    return [("variance_components.png", caption, fig)]
