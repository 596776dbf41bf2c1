"""Declarative model specifications.

A specification is a YAML file (see the top-level ``models/`` folder) that
names the model family and sets its terms, priors and sampler settings. The
loader rejects unknown keys with a "did you mean" suggestion and lists the
valid values, so a typo never passes silently.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import SpecError

FAMILIES = ("location-scale", "consistency", "perturbation-factors")
LIKELIHOODS = ("binomial-collapsed", "normal-logit", "binomial")
# Keys that only one family reads; a specification of another family that sets
# them is rejected, so a misplaced option never passes silently.
FAMILY_KEYS = {"offset": "consistency", "factors": "perturbation-factors", "factor_interactions": "perturbation-factors"}
OFFSETS = ("none", "trivial-baseline")
FACTOR_INTERACTIONS = ("model", "task")
LINKS = ("logit",)
LOCATION_TERMS = ("model", "task", "model:task")
SCALE_TERMS = ("competence", "model", "task", "residual")
COMPETENCE_FORMS = ("linear", "spline", "none")
PRIOR_DISTRIBUTIONS = ("normal", "halfnormal", "exponential")
SAMPLERS = ("nutpie", "pymc")
# nutpie's mass matrix adaptation: "diagonal", or "low-rank" (a diagonal plus
# a low-rank correction learnt from the draws and gradients, for posteriors
# with strong linear correlations between parameters).
MASS_MATRICES = ("diagonal", "low-rank")
PARAMETERIZATIONS = ("auto", "centered", "noncentered")

DEFAULT_SEED = 20260204


@dataclass(frozen=True)
class Prior:
    """A prior distribution: ``dist`` with its parameters (``mu``/``sigma`` or ``lam``)."""

    dist: str = "normal"
    mu: float = 0.0
    sigma: float = 1.0
    lam: float = 1.0


@dataclass(frozen=True)
class SamplerSettings:
    """Sampler settings; ``seed`` fixes the posterior exactly for a given setup.

    ``mass_matrix`` is nutpie's mass matrix adaptation, ``"diagonal"`` or
    ``"low-rank"`` (see ``MASS_MATRICES``); PyMC's sampler takes only the
    diagonal one.
    """

    name: str = "nutpie"
    chains: int = 4
    tune: int = 1000
    draws: int = 1000
    seed: int = DEFAULT_SEED
    target_accept: float = 0.8
    cores: int | None = None
    mass_matrix: str = "diagonal"


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model specification.

    Attributes
    ----------
    name
        Short identifier used in file names and reports.
    family
        Model family: ``"location-scale"`` (accuracy spread across
        perturbations), ``"consistency"`` (per-example output consistency
        with latent competence) or ``"perturbation-factors"`` (crossed
        random effects of perturbation factors).
    likelihood
        ``"binomial-collapsed"``: the exact binomial likelihood with the
        per-perturbation logit effect integrated out by adaptive
        Gauss-Hermite quadrature; ``"normal-logit"``: a normal approximation
        on empirical logits (fast, biased at accuracies near 0 and 1).
    location_terms
        Terms of the competence ``mu[m,t]`` besides the intercept.
    scale_terms
        Terms of ``log sigma[m,t]`` besides the intercept.
    competence
        Form of the competence term in the scale submodel.
    priors
        Prior for each named parameter.
    quadrature_nodes
        Number of Gauss-Hermite nodes per cell for the collapsed likelihood.
    parameterization
        ``"centered"`` (default) or ``"noncentered"`` for every parameter,
        or ``"auto"``: competence group effects centred; spread group
        effects non-centred unless many pairs stand behind each (see
        :func:`robustscope.models.location_scale.noncentered_spread_effects`);
        consistency group effects non-centred; and each pair's ``mu`` and
        ``log_sigma`` centred where the data identify them and non-centred
        where they do not (see
        :func:`robustscope.models.location_scale.weakly_identified`). On the
        shipped multi-prompt data the centred form samples fastest (about 15
        leapfrog steps per draw, no divergences). In the
        perturbation-factors family ``"auto"`` non-centres a block of
        factor or factor-by-group effects when few cells stand behind each
        effect and centres the rest (see
        :func:`robustscope.models.factors.noncentered_blocks`).
    offset
        Consistency family: ``"trivial-baseline"`` adds the logit of the
        trivial-robustness baseline p^K to the consistency predictor, so its
        coefficients describe robustness beyond what accuracy implies.
    factors
        Perturbation-factors family: names of the perturbation coordinates
        to treat as crossed factors (empty: every factor coordinate).
    factor_interactions
        Perturbation-factors family: grouping factors that get a
        factor-by-group variance component (``"model"``, ``"task"``).
    """

    name: str
    family: str = "location-scale"
    description: str = ""
    likelihood: str = "binomial-collapsed"
    link: str = "logit"
    location_terms: tuple[str, ...] = LOCATION_TERMS
    scale_terms: tuple[str, ...] = SCALE_TERMS
    competence: str = "linear"
    spline_knots: int = 5
    parameterization: str = "centered"
    quadrature_nodes: int = 9
    offset: str = "none"
    factors: tuple[str, ...] = ()
    factor_interactions: tuple[str, ...] = ("model",)
    priors: Mapping[str, Prior] = field(default_factory=dict)
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    source: str | None = None

    def prior(self, name: str) -> Prior:
        """Return the prior for ``name``, falling back to the family default."""
        if name in self.priors:
            return self.priors[name]
        if name in DEFAULT_PRIORS:
            return DEFAULT_PRIORS[name]
        raise SpecError(f"no prior for parameter {name!r}; known parameters: {', '.join(sorted(DEFAULT_PRIORS))}")

    def to_dict(self) -> dict[str, Any]:
        """Return the specification as plain data (for attributes, caches and reports)."""
        payload = dataclasses.asdict(self)
        payload["priors"] = {k: dataclasses.asdict(v) for k, v in {**DEFAULT_PRIORS, **dict(self.priors)}.items()}
        payload["location_terms"] = list(self.location_terms)
        payload["scale_terms"] = list(self.scale_terms)
        payload["factors"] = list(self.factors)
        payload["factor_interactions"] = list(self.factor_interactions)
        return payload

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> ModelSpec:
        """Return the specification that :meth:`to_dict` wrote (for example from a fit's attributes)."""
        values = dict(payload)
        values["priors"] = {name: Prior(**prior) for name, prior in values.get("priors", {}).items()}
        values["sampler"] = SamplerSettings(**values.get("sampler", {}))
        for key in ("location_terms", "scale_terms", "factors", "factor_interactions"):
            if key in values:
                values[key] = tuple(values[key])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def to_json(self) -> str:
        """Return :meth:`to_dict` as canonical JSON."""
        return json.dumps(self.to_dict(), sort_keys=True)

    def with_sampler(self, **changes: Any) -> ModelSpec:
        """Return a copy with sampler settings replaced (``None`` values are ignored)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, sampler=dataclasses.replace(self.sampler, **changes))


# Weakly informative defaults on the logit scale (location) and the log scale
# of the logit spread (scale). Accuracies between 0.05 and 0.95 span about
# +-3 logits, and perturbation spreads of 0.1 to 2 logits span log sigma of
# about -2.3 to 0.7.
DEFAULT_PRIORS: dict[str, Prior] = {
    "alpha": Prior("normal", 0.0, 1.5),
    "sd_model": Prior("halfnormal", sigma=1.5),
    "sd_task": Prior("halfnormal", sigma=1.5),
    "sd_model_task": Prior("halfnormal", sigma=1.5),
    "gamma0": Prior("normal", -1.0, 1.0),
    "gamma1": Prior("normal", 0.0, 1.0),
    "sd_u": Prior("halfnormal", sigma=1.0),
    "sd_v": Prior("halfnormal", sigma=1.0),
    "sd_e": Prior("halfnormal", sigma=1.0),
    "spline": Prior("normal", 0.0, 1.0),
    "sd_spline": Prior("halfnormal", sigma=0.5),
    "sd_factor": Prior("halfnormal", sigma=1.0),
    "sd_factor_model": Prior("halfnormal", sigma=0.5),
    "sd_factor_task": Prior("halfnormal", sigma=0.5),
    "sd_cell": Prior("halfnormal", sigma=1.0),
}

_TOP_LEVEL_KEYS = {
    "name",
    "family",
    "description",
    "likelihood",
    "link",
    "location",
    "scale",
    "priors",
    "sampler",
    "quadrature_nodes",
    "parameterization",
    *FAMILY_KEYS,
}
_SCALE_KEYS = {"terms", "competence", "spline_knots"}
_LOCATION_KEYS = {"terms"}
_PRIOR_KEYS = {"dist", "mu", "sigma", "lam"}
_SAMPLER_KEYS = {f.name for f in dataclasses.fields(SamplerSettings)}


def _reject_unknown(keys: Mapping[str, Any], valid: set[str], where: str, source: str) -> None:
    for key in keys:
        if key not in valid:
            close = difflib.get_close_matches(str(key), sorted(valid), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise SpecError(f"{source}: unknown key {key!r} in {where}.{hint} Valid keys: {', '.join(sorted(valid))}")


def _choose(value: Any, valid: tuple[str, ...], what: str, source: str) -> str:
    if value not in valid:
        close = difflib.get_close_matches(str(value), list(valid), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise SpecError(f"{source}: invalid {what} {value!r}.{hint} Valid values: {', '.join(valid)}")
    return value


def _terms(values: Any, valid: tuple[str, ...], what: str, source: str) -> tuple[str, ...]:
    if not isinstance(values, (list, tuple)):
        raise SpecError(f"{source}: {what} must be a list, got {values!r}. Valid terms: {', '.join(valid)}")
    return tuple(_choose(v, valid, f"{what} term", source) for v in values)


def parse_spec(payload: Mapping[str, Any], source: str = "<spec>") -> ModelSpec:
    """Validate a specification mapping and return a :class:`ModelSpec`.

    Raises
    ------
    SpecError
        On unknown keys (with the closest valid key), invalid values (with the
        valid values) or wrong types.
    """
    if not isinstance(payload, Mapping):
        raise SpecError(f"{source}: a model specification must be a mapping of keys to values")
    _reject_unknown(payload, _TOP_LEVEL_KEYS, "the specification", source)
    if "name" not in payload:
        raise SpecError(f"{source}: missing required key 'name'")
    kwargs: dict[str, Any] = {"name": str(payload["name"]), "source": source}
    kwargs["family"] = _choose(payload.get("family", "location-scale"), FAMILIES, "family", source)
    kwargs["description"] = str(payload.get("description", ""))
    kwargs["likelihood"] = _choose(payload.get("likelihood", "binomial-collapsed"), LIKELIHOODS, "likelihood", source)
    kwargs["link"] = _choose(payload.get("link", "logit"), LINKS, "link", source)
    kwargs["parameterization"] = _choose(payload.get("parameterization", "centered"), PARAMETERIZATIONS, "parameterization", source)
    nodes = payload.get("quadrature_nodes", 9)
    if not isinstance(nodes, int) or not 3 <= nodes <= 64:
        raise SpecError(f"{source}: quadrature_nodes must be a whole number from 3 to 64, got {nodes!r}")
    kwargs["quadrature_nodes"] = nodes
    for key, owner in FAMILY_KEYS.items():
        if key in payload and kwargs["family"] != owner:
            raise SpecError(f"{source}: key {key!r} belongs to the {owner!r} family, not {kwargs['family']!r}; remove it or set family: {owner}")
    kwargs["offset"] = _choose(payload.get("offset", "none"), OFFSETS, "offset", source)
    if "factors" in payload:
        factors = payload["factors"]
        if not isinstance(factors, (list, tuple)) or not all(isinstance(f, str) and f for f in factors):
            raise SpecError(f"{source}: factors must be a list of perturbation coordinate names, got {factors!r}")
        kwargs["factors"] = tuple(factors)
    if "factor_interactions" in payload:
        kwargs["factor_interactions"] = _terms(payload["factor_interactions"], FACTOR_INTERACTIONS, "factor_interactions", source)

    location = payload.get("location", {}) or {}
    _reject_unknown(location, _LOCATION_KEYS, "'location'", source)
    if "terms" in location:
        kwargs["location_terms"] = _terms(location["terms"], LOCATION_TERMS, "location", source)

    scale = payload.get("scale", {}) or {}
    _reject_unknown(scale, _SCALE_KEYS, "'scale'", source)
    if "terms" in scale:
        kwargs["scale_terms"] = _terms(scale["terms"], SCALE_TERMS, "scale", source)
    kwargs["competence"] = _choose(scale.get("competence", "linear"), COMPETENCE_FORMS, "competence form", source)
    if "spline_knots" in scale:
        knots = scale["spline_knots"]
        if not isinstance(knots, int) or not 3 <= knots <= 20:
            raise SpecError(f"{source}: scale.spline_knots must be a whole number from 3 to 20, got {knots!r}")
        kwargs["spline_knots"] = knots

    priors = {}
    for name, prior in (payload.get("priors", {}) or {}).items():
        if name not in DEFAULT_PRIORS:
            close = difflib.get_close_matches(str(name), sorted(DEFAULT_PRIORS), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise SpecError(f"{source}: unknown parameter {name!r} in 'priors'.{hint} Valid parameters: {', '.join(sorted(DEFAULT_PRIORS))}")
        if not isinstance(prior, Mapping):
            raise SpecError(f"{source}: prior for {name!r} must be a mapping such as {{dist: normal, mu: 0, sigma: 1}}")
        _reject_unknown(prior, _PRIOR_KEYS, f"the prior for {name!r}", source)
        dist = _choose(prior.get("dist", DEFAULT_PRIORS[name].dist), PRIOR_DISTRIBUTIONS, f"distribution for {name!r}", source)
        values = {k: prior[k] for k in ("mu", "sigma", "lam") if k in prior}
        for key, value in values.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise SpecError(f"{source}: prior {name}.{key} must be a number, got {value!r}")
            if key in ("sigma", "lam") and value <= 0:
                raise SpecError(f"{source}: prior {name}.{key} must be positive, got {value!r}")
        priors[name] = dataclasses.replace(DEFAULT_PRIORS[name], dist=dist, **{k: float(v) for k, v in values.items()})
    kwargs["priors"] = priors

    sampler = payload.get("sampler", {}) or {}
    _reject_unknown(sampler, _SAMPLER_KEYS, "'sampler'", source)
    if "name" in sampler:
        _choose(sampler["name"], SAMPLERS, "sampler name", source)
    for key in ("chains", "tune", "draws", "seed"):
        if key in sampler and (not isinstance(sampler[key], int) or sampler[key] < (0 if key == "seed" else 1)):
            raise SpecError(f"{source}: sampler.{key} must be a positive whole number, got {sampler[key]!r}")
    if "target_accept" in sampler and not 0.5 <= float(sampler["target_accept"]) < 1:
        raise SpecError(f"{source}: sampler.target_accept must be in [0.5, 1), got {sampler['target_accept']!r}")
    if "mass_matrix" in sampler:
        _choose(sampler["mass_matrix"], MASS_MATRICES, "sampler.mass_matrix", source)
        if sampler["mass_matrix"] != "diagonal" and sampler.get("name", "nutpie") != "nutpie":
            raise SpecError(f"{source}: sampler.mass_matrix {sampler['mass_matrix']!r} needs the nutpie sampler; use 'diagonal' with {sampler['name']!r}")
    kwargs["sampler"] = SamplerSettings(**sampler)
    return ModelSpec(**kwargs)


def builtin_spec_dirs() -> list[Path]:
    """Return the folders searched for specification names, in order."""
    here = Path(__file__).resolve()
    return [Path.cwd() / "models", here.parents[2] / "models", here.parent / "_specs"]


def list_specs() -> dict[str, Path]:
    """Return the specification names found in :func:`builtin_spec_dirs`."""
    found: dict[str, Path] = {}
    for folder in builtin_spec_dirs():
        if folder.is_dir():
            for path in sorted(folder.glob("*.yaml")):
                found.setdefault(path.stem, path)
    return found


def load_spec(spec: str | Path | Mapping[str, Any] | ModelSpec) -> ModelSpec:
    """Load a specification from a path, a name in ``models/``, a mapping or a spec.

    Raises
    ------
    SpecError
        When the file is not found (listing the known names) or is invalid.
    """
    if isinstance(spec, ModelSpec):
        return spec
    if isinstance(spec, Mapping):
        return parse_spec(spec)
    path = Path(spec)
    if not path.is_file():
        known = list_specs()
        if str(spec) in known:
            path = known[str(spec)]
        else:
            close = difflib.get_close_matches(str(spec), list(known), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise SpecError(f"model specification {str(spec)!r} not found.{hint} Known specifications: {', '.join(known) or 'none'}")
    try:
        payload = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise SpecError(f"{path}: invalid YAML: {error}") from error
    return parse_spec(payload, source=str(path))
