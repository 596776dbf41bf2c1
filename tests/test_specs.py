"""Model specification files: the shipped ones load, mistakes are named."""

from __future__ import annotations

import pytest

from robustscope.errors import SpecError
from robustscope.specs import list_specs, load_spec, parse_spec


def test_shipped_specs_load():
    specs = list_specs()
    assert "location-scale" in specs
    for name in specs:
        spec = load_spec(name)
        assert spec.name == name
        assert spec.sampler.chains >= 1


def test_unknown_key_suggests_closest():
    with pytest.raises(SpecError) as error:
        parse_spec({"name": "x", "likelyhood": "normal-logit"})
    message = str(error.value)
    assert "'likelyhood'" in message
    assert "Did you mean 'likelihood'" in message
    assert "Valid keys" in message


def test_invalid_value_lists_valid_values():
    with pytest.raises(SpecError) as error:
        parse_spec({"name": "x", "scale": {"terms": ["competence", "modle"]}})
    assert "Did you mean 'model'" in str(error.value)
    assert "competence, model, task, residual" in str(error.value)


def test_unknown_prior_parameter():
    with pytest.raises(SpecError, match="Did you mean 'gamma1'"):
        parse_spec({"name": "x", "priors": {"gama1": {"dist": "normal", "mu": 0, "sigma": 1}}})


def test_negative_prior_scale_rejected():
    with pytest.raises(SpecError, match="must be positive"):
        parse_spec({"name": "x", "priors": {"sd_u": {"dist": "halfnormal", "sigma": -1}}})


def test_unknown_spec_name():
    with pytest.raises(SpecError, match="Did you mean 'location-scale'"):
        load_spec("location-scal")


def test_user_file_overrides(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nsampler: {draws: 200, seed: 7}\npriors:\n  gamma1: {sigma: 0.5}\n")
    spec = load_spec(path)
    assert spec.sampler.draws == 200
    assert spec.sampler.seed == 7
    assert spec.prior("gamma1").sigma == 0.5
    assert spec.prior("gamma1").dist == "normal"


def test_mass_matrix_setting():
    spec = parse_spec({"name": "x", "sampler": {"mass_matrix": "low-rank"}})
    assert spec.sampler.mass_matrix == "low-rank"
    assert load_spec("location-scale").sampler.mass_matrix == "diagonal"
    with pytest.raises(SpecError, match="Did you mean 'low-rank'"):
        parse_spec({"name": "x", "sampler": {"mass_matrix": "lowrank"}})
    with pytest.raises(SpecError, match="needs the nutpie sampler"):
        parse_spec({"name": "x", "sampler": {"name": "pymc", "mass_matrix": "low-rank"}})


def test_low_rank_mass_matrix_refused_by_pymc_sampler():
    import pymc as pm

    from robustscope.errors import RobustscopeError
    from robustscope.fit import sample_model

    spec = parse_spec({"name": "x", "sampler": {"mass_matrix": "low-rank"}}).with_sampler(name="pymc")
    with pm.Model() as model:
        pm.Normal("x")
    with pytest.raises(RobustscopeError, match="needs the nutpie sampler"):
        sample_model(model, spec, progress=False)
