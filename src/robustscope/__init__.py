"""robustscope: Bayesian analysis of LLM evaluation robustness.

Every command of the ``robustscope`` command line is also a function here,
with the same name and options:

>>> import robustscope as rs
>>> tensor = rs.ingest("data/multi-prompt-eval", "multi-prompt")      # xarray.Dataset
>>> posterior = rs.fit(tensor, "location-scale")                      # xarray.DataTree
>>> summary = rs.report(posterior, "reports/my-run", tensor=tensor)   # dict, files written
>>> summary = rs.run("data/multi-prompt-eval", "reports/my-run")      # all three
"""

from __future__ import annotations

__version__ = "0.1.0"

from .check import check_and_refit, check_new, write_check_report  # noqa: E402
from .diagnostics import check_fit  # noqa: E402
from .fit import fit, load_posterior, save_posterior  # noqa: E402
from .ingest import ingest, list_loaders, register_loader  # noqa: E402
from .ingest.merge import add, add_files  # noqa: E402
from .loo import loo_compare, nested_specs  # noqa: E402
from .metrics.descriptive import pair_metrics  # noqa: E402
from .metrics.regression import ols_and_spearman  # noqa: E402
from .pipeline import report, run  # noqa: E402
from .prior import prior_predictive  # noqa: E402
from .report.compare import compare  # noqa: E402
from .specs import list_specs, load_spec  # noqa: E402
from .sweep import sweep  # noqa: E402
from .tensor import load as load_tensor  # noqa: E402
from .tensor import save as save_tensor  # noqa: E402

__all__ = [
    "__version__",
    "add",
    "add_files",
    "check_and_refit",
    "check_fit",
    "check_new",
    "compare",
    "fit",
    "ingest",
    "list_loaders",
    "list_specs",
    "load_posterior",
    "load_spec",
    "load_tensor",
    "loo_compare",
    "nested_specs",
    "ols_and_spearman",
    "pair_metrics",
    "prior_predictive",
    "register_loader",
    "report",
    "run",
    "save_posterior",
    "save_tensor",
    "sweep",
    "write_check_report",
]
