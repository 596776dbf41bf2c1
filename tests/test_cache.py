"""Fit caching by content hash and resumable multi-fit runs, on small simulated tensors."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from robustscope import cache
from robustscope.cache import FitJob, cached_fit, fit_key, fit_many
from robustscope.errors import RobustscopeError
from robustscope.fit import load_posterior
from robustscope.simulate import simulate_location_scale

SPEC = "location-scale-fast"
SAMPLER = {"chains": 2, "draws": 50, "tune": 50, "seed": 7}


@pytest.fixture(scope="module")
def small_tensor():
    ds, _ = simulate_location_scale(models=3, tasks=3, perturbations=6, seed=3)
    return ds


@pytest.fixture(scope="module")
def cached_once(small_tensor, tmp_path_factory):
    """One real fit stored in a fresh cache folder: (cache_dir, posterior, hit flag)."""
    cache_dir = tmp_path_factory.mktemp("cache")
    trace, hit = cached_fit(small_tensor, SPEC, cache_dir=cache_dir, progress=False, **SAMPLER)
    return cache_dir, trace, hit


def test_key_is_stable(small_tensor):
    assert fit_key(small_tensor, SPEC, **SAMPLER) == fit_key(small_tensor.copy(deep=True), SPEC, **SAMPLER)


def test_key_ignores_progress_and_output(small_tensor, tmp_path):
    plain = fit_key(small_tensor, SPEC, **SAMPLER)
    assert fit_key(small_tensor, SPEC, progress=False, output=tmp_path / "p.nc", **SAMPLER) == plain


def test_key_changes_with_tensor(small_tensor):
    other, _ = simulate_location_scale(models=3, tasks=3, perturbations=6, seed=4)
    assert fit_key(other, SPEC, **SAMPLER) != fit_key(small_tensor, SPEC, **SAMPLER)


def test_key_changes_with_spec(small_tensor):
    assert fit_key(small_tensor, "location-scale", **SAMPLER) != fit_key(small_tensor, SPEC, **SAMPLER)


@pytest.mark.parametrize("setting", ["chains", "draws", "tune", "seed"])
def test_key_changes_with_sampler_setting(small_tensor, setting):
    changed = {**SAMPLER, setting: SAMPLER[setting] + 1}
    assert fit_key(small_tensor, SPEC, **changed) != fit_key(small_tensor, SPEC, **SAMPLER)


def test_key_changes_with_sampler_name(small_tensor):
    assert fit_key(small_tensor, SPEC, sampler="pymc", **SAMPLER) != fit_key(small_tensor, SPEC, **SAMPLER)


def test_key_changes_with_versions(small_tensor, monkeypatch):
    before = fit_key(small_tensor, SPEC, **SAMPLER)
    real = cache.package_versions
    monkeypatch.setattr(cache, "package_versions", lambda: {**real(), "pymc": "0.0.0"})
    assert fit_key(small_tensor, SPEC, **SAMPLER) != before


@pytest.mark.slow
def test_first_fit_is_stored(cached_once, small_tensor):
    cache_dir, trace, hit = cached_once
    key = fit_key(small_tensor, SPEC, **SAMPLER)

    assert hit is False
    assert (cache_dir / f"{key}.nc").is_file()
    assert trace.attrs["cache_key"] == key
    assert not list(cache_dir.glob(".*.tmp"))


@pytest.mark.slow
def test_same_inputs_reuse_fit(cached_once, small_tensor, caplog):
    cache_dir, first, _ = cached_once
    key = fit_key(small_tensor, SPEC, **SAMPLER)

    with caplog.at_level(logging.INFO, logger="robustscope"):
        again, hit = cached_fit(small_tensor, SPEC, cache_dir=cache_dir, progress=False, **SAMPLER)

    assert hit is True
    assert f"reusing cached fit {key}" in caplog.text
    np.testing.assert_array_equal(again["posterior"]["mu"].values, first["posterior"]["mu"].values)


@pytest.mark.slow
def test_changed_seed_refits(cached_once, small_tensor, tmp_path):
    cache_dir, first, _ = cached_once
    work = tmp_path / "cache"
    shutil.copytree(cache_dir, work)

    trace, hit = cached_fit(small_tensor, SPEC, cache_dir=work, progress=False, **{**SAMPLER, "seed": 8})

    assert hit is False
    assert len(list(work.glob("*.nc"))) == 2
    assert not np.array_equal(trace["posterior"]["mu"].values, first["posterior"]["mu"].values)


@pytest.mark.slow
def test_no_cache_refits_and_replaces(cached_once, small_tensor, tmp_path):
    cache_dir, first, _ = cached_once
    work = tmp_path / "cache"
    shutil.copytree(cache_dir, work)
    key = fit_key(small_tensor, SPEC, **SAMPLER)
    before = (work / f"{key}.nc").stat().st_mtime_ns

    trace, hit = cached_fit(small_tensor, SPEC, cache_dir=work, no_cache=True, progress=False, **SAMPLER)

    assert hit is False
    assert (work / f"{key}.nc").stat().st_mtime_ns != before
    # Same seed and inputs: the new fit reproduces the cached one.
    np.testing.assert_array_equal(trace["posterior"]["mu"].values, first["posterior"]["mu"].values)


@pytest.mark.slow
def test_unreadable_cache_entry_refits(cached_once, small_tensor, tmp_path):
    cache_dir, first, _ = cached_once
    key = fit_key(small_tensor, SPEC, **SAMPLER)
    work = tmp_path / "cache"
    work.mkdir()
    (work / f"{key}.nc").write_bytes(b"not a NetCDF file")

    trace, hit = cached_fit(small_tensor, SPEC, cache_dir=work, progress=False, **SAMPLER)

    assert hit is False
    load_posterior(work / f"{key}.nc")


def test_fit_many_rejects_repeated_names(small_tensor, tmp_path):
    jobs = [FitJob("a", small_tensor, SPEC), FitJob("a", small_tensor, SPEC)]
    with pytest.raises(RobustscopeError, match="two fits are named 'a'"):
        fit_many(jobs, output_dir=tmp_path)


def test_fit_many_rejects_path_names(small_tensor, tmp_path):
    with pytest.raises(RobustscopeError, match="invalid fit name"):
        fit_many([FitJob("../a", small_tensor, SPEC)], output_dir=tmp_path)


@pytest.mark.slow
def test_fit_many_resumes(cached_once, small_tensor, tmp_path):
    cache_dir, first, _ = cached_once
    key = fit_key(small_tensor, SPEC, **SAMPLER)
    out = tmp_path / "fits"
    out.mkdir()
    # "done" finished in an earlier run; "broken" was cut off and left a bad file.
    shutil.copy(cache_dir / f"{key}.nc", out / "done.nc")
    (out / "broken.nc").write_bytes(b"\x89HDF\r\n")
    jobs = [FitJob("done", small_tensor, SPEC), FitJob("broken", small_tensor, SPEC, options={"seed": 9})]

    results = fit_many(jobs, output_dir=out, progress=False, **SAMPLER)

    assert results["done"][1] is True
    assert results["broken"][1] is False
    assert load_posterior(out / "broken.nc").attrs["seed"] == 9
    np.testing.assert_array_equal(results["done"][0]["posterior"]["mu"].values, first["posterior"]["mu"].values)

    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.nc")}
    again = fit_many(jobs, output_dir=out, progress=False, **SAMPLER)

    assert all(loaded for _, loaded in again.values())
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.nc")} == stamps
