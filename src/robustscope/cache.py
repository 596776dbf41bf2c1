"""Reuse of finished fits, keyed by a hash of everything that determines them.

A fit is determined by the tensor's content, the model specification, the
sampler settings (including the seed) and the versions of the packages that
compute it. :func:`fit_key` hashes these four, and :func:`cached_fit` stores
each posterior as ``<cache_dir>/<key>.nc`` and loads it instead of sampling
again when the same key comes back. Changing any one of the four inputs
gives a new key and a new fit.

:func:`fit_many` runs a list of fits and saves each one as soon as it
finishes, so a run that is interrupted can be started again and skips the
fits already on disk.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import xarray as xr

from . import tensor as _tensor
from ._logging import get_logger
from .errors import InputError, RobustscopeError
from .fit import DEFAULT_SPEC, fit, load_posterior, package_versions, save_posterior
from .specs import ModelSpec, load_spec

log = get_logger("cache")

KEY_FORMAT_VERSION = 1
SAMPLER_OPTIONS = ("chains", "draws", "tune", "seed", "sampler")


def _resolve_spec(spec: str | Path | ModelSpec, fit_kwargs: Mapping[str, Any]) -> ModelSpec:
    """Apply the sampler overrides in ``fit_kwargs`` to ``spec``, as :func:`robustscope.fit.fit` does."""
    overrides = {name: fit_kwargs.get(name) for name in SAMPLER_OPTIONS}
    overrides["name"] = overrides.pop("sampler")
    return load_spec(spec).with_sampler(**overrides)


def fit_key(tensor: xr.Dataset, spec: str | Path | ModelSpec = DEFAULT_SPEC, **fit_kwargs: Any) -> str:
    """Return the cache key of fitting ``spec`` to ``tensor``: a SHA-256 hex digest.

    The digest covers the tensor hash (:func:`robustscope.tensor.tensor_hash`),
    the specification without its sampler settings, the sampler settings
    after the overrides in ``fit_kwargs`` (``chains``, ``draws``, ``tune``,
    ``seed``, ``sampler``), and :func:`robustscope.fit.package_versions`.
    Other keyword arguments (``progress``, ``output``) do not change a fit
    and are ignored.
    """
    model_spec = _resolve_spec(spec, fit_kwargs)
    specification = model_spec.to_dict()
    specification.pop("sampler", None)
    payload = {
        "key_format": KEY_FORMAT_VERSION,
        "tensor_hash": _tensor.tensor_hash(tensor),
        "spec": specification,
        "sampler": dataclasses.asdict(model_spec.sampler),
        "versions": package_versions(),
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cached_fit(
    tensor: xr.Dataset | str | Path,
    spec: str | Path | ModelSpec = DEFAULT_SPEC,
    *,
    cache_dir: str | Path,
    no_cache: bool = False,
    **fit_kwargs: Any,
) -> tuple[xr.DataTree, bool]:
    """Fit ``spec`` to ``tensor``, or load the same fit from ``cache_dir``.

    Parameters
    ----------
    tensor
        A tensor or the path of one saved by ``ingest``.
    spec
        Specification name, YAML path or ``ModelSpec``.
    cache_dir
        Folder of cached posteriors, ``<key>.nc`` each (created when missing).
    no_cache
        Always fit, and overwrite the cached posterior with the new one.
    **fit_kwargs
        Passed to :func:`robustscope.fit.fit` (``chains``, ``draws``,
        ``tune``, ``seed``, ``sampler``, ``progress``, ``output``).

    Returns
    -------
    (xarray.DataTree, bool)
        The posterior and whether it came from the cache.

    Raises
    ------
    RobustscopeError
        As :func:`robustscope.fit.fit`. A cached file that cannot be read is
        logged and fitted again, not raised.
    """
    ds = tensor if isinstance(tensor, xr.Dataset) else _tensor.load(tensor)
    key = fit_key(ds, spec, **fit_kwargs)
    path = Path(cache_dir) / f"{key}.nc"
    output = fit_kwargs.pop("output", None)

    if path.is_file() and not no_cache:
        try:
            trace = load_posterior(path)
        except InputError as error:
            log.warning("cached fit %s cannot be read, fitting again: %s", key, error)
        else:
            log.info("reusing cached fit %s", key)
            if output is not None:
                save_posterior(trace, output)
            return trace, True

    trace = fit(ds, spec, **fit_kwargs)
    trace.attrs["cache_key"] = key
    save_posterior(trace, path)
    if output is not None:
        save_posterior(trace, output)
    return trace, False


@dataclasses.dataclass(frozen=True)
class FitJob:
    """One fit of :func:`fit_many`: a name (the output file stem), a tensor and a specification.

    ``options`` holds further keyword arguments of :func:`robustscope.fit.fit`
    for this job only (for example a different ``seed``).
    """

    name: str
    tensor: xr.Dataset | str | Path
    spec: str | Path | ModelSpec = DEFAULT_SPEC
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def _check_names(jobs: Sequence[FitJob]) -> None:
    seen: set[str] = set()
    for job in jobs:
        if not job.name or "/" in job.name or job.name.startswith("."):
            raise RobustscopeError(f"invalid fit name {job.name!r}: use a file name without '/' that does not start with '.'")
        if job.name in seen:
            raise RobustscopeError(f"two fits are named {job.name!r}; each fit needs its own name")
        seen.add(job.name)


def fit_many(
    jobs: Sequence[FitJob],
    *,
    output_dir: str | Path,
    **fit_kwargs: Any,
) -> dict[str, tuple[xr.DataTree, bool]]:
    """Run every job and save each posterior as ``<output_dir>/<name>.nc`` as soon as it finishes.

    A job whose output file already exists and loads is skipped, so calling
    this again after an interruption only runs the fits that were not
    finished. An output file that does not load is logged and fitted again.
    Every file is written atomically, so an interrupted fit leaves no file.

    Parameters
    ----------
    jobs
        The fits to run, with distinct names.
    output_dir
        Folder for the posteriors (created when missing).
    **fit_kwargs
        Keyword arguments of :func:`robustscope.fit.fit` shared by all
        jobs. A job's own ``options`` take precedence.

    Returns
    -------
    dict
        Name -> (posterior, whether it was loaded from an earlier run).

    Raises
    ------
    RobustscopeError
        On invalid or repeated names, or as :func:`robustscope.fit.fit`.
    """
    _check_names(jobs)
    output_dir = Path(output_dir)
    results: dict[str, tuple[xr.DataTree, bool]] = {}

    for number, job in enumerate(jobs, start=1):
        path = output_dir / f"{job.name}.nc"
        if path.is_file():
            try:
                results[job.name] = (load_posterior(path), True)
            except InputError as error:
                log.warning("fit %s: existing %s cannot be read, fitting again: %s", job.name, path, error)
            else:
                log.info("fit %s (%d of %d): reusing %s", job.name, number, len(jobs), path)
                continue

        log.info("fit %s (%d of %d): starting", job.name, number, len(jobs))
        options = {**fit_kwargs, **dict(job.options)}
        options.pop("output", None)
        trace = fit(job.tensor, job.spec, output=path, **options)
        results[job.name] = (trace, False)
    return results


__all__ = ["FitJob", "cached_fit", "fit_key", "fit_many"]
