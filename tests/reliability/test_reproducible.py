"""The same data, specification, sampler, seed and package versions give the same results.

Two runs of the main job into two folders must give posteriors whose every
array is exactly equal, and ``summary.json`` files that differ only in the
fields listed in ``VARYING_FIELDS`` (wall times and creation times).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from robustscope.fit import load_posterior
from robustscope.pipeline import run

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[2] / "data" / "multi-prompt-eval"
RUN_OPTIONS = {
    "format": "multi-prompt",
    "spec": "location-scale-fast",
    "chains": 2,
    "draws": 100,
    "tune": 100,
    "seed": 5,
    "accept_failed": True,
    "progress": False,
    "tasks": ["snarks", "navigate"],
}
# Keys whose values are wall times or timestamps; removed before comparing.
VARYING_FIELDS = {"timings", "created", "timestamp", "generated", "wall_seconds"}


def without_varying(value):
    if isinstance(value, dict):
        return {k: without_varying(v) for k, v in value.items() if k not in VARYING_FIELDS and not k.endswith("_seconds")}
    if isinstance(value, list):
        return [without_varying(v) for v in value]
    return value


def differing_paths(first, second, prefix=""):
    """Key paths where two JSON values differ."""
    if isinstance(first, dict) and isinstance(second, dict):
        paths = []
        for key in sorted(set(first) | set(second)):
            paths += differing_paths(first.get(key), second.get(key), f"{prefix}/{key}")
        return paths
    if isinstance(first, list) and isinstance(second, list) and len(first) == len(second):
        paths = []
        for i, (a, b) in enumerate(zip(first, second, strict=True)):
            paths += differing_paths(a, b, f"{prefix}[{i}]")
        return paths
    return [] if first == second else [prefix or "/"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    folders = [tmp_path_factory.mktemp(f"run{i}") for i in (1, 2)]
    for folder in folders:
        run(DATA, folder, **RUN_OPTIONS)
    return folders


def test_posteriors_identical(two_runs):
    first, second = (load_posterior(folder / "posterior.nc") for folder in two_runs)

    for group in ("posterior", "sample_stats", "log_likelihood", "posterior_predictive", "observed_data", "constant_data"):
        a, b = first[group].to_dataset(), second[group].to_dataset()
        assert sorted(a.variables) == sorted(b.variables), group
        for name in a.variables:
            np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=f"{group}/{name}")


def test_posterior_attributes_differ_only_in_timings(two_runs):
    first, second = (load_posterior(folder / "posterior.nc") for folder in two_runs)

    differing = sorted(k for k in set(first.attrs) | set(second.attrs) if first.attrs.get(k) != second.attrs.get(k))
    print("posterior attributes that differ between the two runs:", differing)

    assert set(differing) <= {"timings", "manifest"}
    # The manifest carries the ingestion time ("created") and nothing else that varies.
    manifests = [json.loads(tree.attrs["manifest"]) for tree in (first, second)]
    assert differing_paths(*manifests) in ([], ["/created"])


def test_summary_identical_without_times(two_runs):
    first, second = (json.loads((folder / "summary.json").read_text(encoding="utf-8")) for folder in two_runs)

    raw_differences = differing_paths(first, second)
    print("summary.json fields that differ between the two runs:", raw_differences)

    assert differing_paths(without_varying(first), without_varying(second)) == []
