"""The main job in one call: ingest, fit, diagnose and report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import xarray as xr

from . import tensor as _tensor
from ._logging import get_logger
from .cache import cached_fit
from .errors import DiagnosticsFailed
from .fit import DEFAULT_SPEC, fit, load_posterior
from .ingest import ingest
from .ingest.manifest import manifest_path, write_manifest
from .report import write_report

log = get_logger("pipeline")

TENSOR_FILE = "tensor.nc"
POSTERIOR_FILE = "posterior.nc"


def report(posterior: str | Path | xr.DataTree, output: str | Path, *, tensor: str | Path | xr.Dataset | None = None) -> dict[str, Any]:
    """Write the report of a fitted posterior into the folder ``output`` and return its summary.

    ``tensor`` adds the descriptive, published-style statistics; without it
    the report shows the model's results only.
    """
    trace = posterior if isinstance(posterior, xr.DataTree) else load_posterior(posterior)
    data = tensor if isinstance(tensor, xr.Dataset) or tensor is None else _tensor.load(tensor)
    return write_report(trace, output, tensor=data)


def run(
    source: str | Path,
    output: str | Path,
    *,
    format: str = "multi-prompt",
    spec: str | Path = DEFAULT_SPEC,
    chains: int | None = None,
    draws: int | None = None,
    tune: int | None = None,
    seed: int | None = None,
    accept_failed: bool = False,
    progress: bool = True,
    cache_dir: str | Path | None = None,
    no_cache: bool = False,
    **loader_options: Any,
) -> dict[str, Any]:
    """Ingest ``source``, fit ``spec``, check the fit and write the report into ``output``.

    Writes ``tensor.nc`` with ``tensor.manifest.json``, ``posterior.nc``,
    ``report.html``, ``report.md``, ``summary.json`` and ``figures/``, each
    atomically. With ``cache_dir``, a fit of the same tensor, specification,
    sampler settings and package versions is reused from there (``no_cache``
    forces a new fit and replaces the cached one).

    Raises
    ------
    DiagnosticsFailed
        When the fit fails a diagnostics threshold and ``accept_failed`` is
        false. The report is written first and says so at the top.
    """
    output = Path(output)
    tensor_path = output / TENSOR_FILE
    ds = ingest(source, format, **loader_options)
    _tensor.save(ds, tensor_path)
    write_manifest(ds.attrs["manifest"], manifest_path(tensor_path))
    settings = {"chains": chains, "draws": draws, "tune": tune, "seed": seed, "output": output / POSTERIOR_FILE, "progress": progress}
    if cache_dir is not None:
        trace, _ = cached_fit(ds, spec, cache_dir=cache_dir, no_cache=no_cache, **settings)
    else:
        trace = fit(ds, spec, **settings)
    summary = write_report(trace, output, tensor=ds)
    if not summary["diagnostics"]["passed"] and not accept_failed:
        raise DiagnosticsFailed(
            f"the fit failed diagnostics ({', '.join(summary['diagnostics']['failed_checks'])}); the report in {output} "
            "says so at the top. Rerun with more tuning or draws, or pass --accept-failed to keep the result"
        )
    return summary
