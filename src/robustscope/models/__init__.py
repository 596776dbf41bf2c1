"""Model families.

Each family other than ``location-scale`` lives in a module of its own that
provides ``fit_family(ds, spec, *, progress)``. It returns the trace (an
``xarray.DataTree`` with at least ``posterior``, ``sample_stats`` and
``log_likelihood``), the timings in seconds and a mapping of extra trace
attributes. :func:`robustscope.fit.fit` adds the provenance attributes every
fit carries. A family module also lists its ``KEY_PARAMETERS`` (scalar
posterior variables the reports and diagnostics lead with) and provides
``simulate_from_prior(spec, rng, **shape)`` for calibration checks.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import SpecError

FAMILY_MODULES = {
    "location-scale": "robustscope.models.location_scale",
    "consistency": "robustscope.models.consistency",
    "perturbation-factors": "robustscope.models.factors",
}


def family_module(family: str) -> ModuleType:
    """Return the module that implements ``family``."""
    if family not in FAMILY_MODULES:
        raise SpecError(f"unknown model family {family!r}; known families: {', '.join(FAMILY_MODULES)}")
    return importlib.import_module(FAMILY_MODULES[family])
