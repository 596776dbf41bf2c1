"""Tests of the HELM run-folder loader on a real narrative_qa run of GPT-2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from robustscope import tensor
from robustscope.errors import InputError
from robustscope.ingest import helm

RUNS = Path(__file__).resolve().parents[1] / "data" / "helm"
RUN = RUNS / "narrative_qa-model=openai_gpt2"
TEST_INSTANCES = ["id1332", "id1340", "id1413", "id1514"]


def test_per_example_exact_match():
    ds, report = helm.load(RUN)
    assert list(ds["model"].values) == ["openai/gpt2"]
    assert list(ds["task"].values) == ["narrative_qa"]
    assert list(ds["perturbation"].values) == ["original"]
    assert list(ds["example"].values) == TEST_INSTANCES
    assert ds.attrs["metric"] == "exact_match"
    assert ds.attrs["metric_kind"] == "binary"
    assert ds["n_total"].item() == 4
    assert ds["n_correct"].item() == 0


def test_valid_split_dropped():
    _, report = helm.load(RUN)
    assert report.dropped[helm.REASON_SPLIT] == 1
    assert "narrative_qa-model=openai_gpt2 instance id1123 (split valid)" in report.drop_examples[helm.REASON_SPLIT]


def test_f1_is_continuous():
    ds, _ = helm.load(RUN, metric="f1_score")
    assert ds.attrs["metric_kind"] == "continuous"
    assert "n_correct" not in ds
    scores = ds["score"].sel(model="openai/gpt2", task="narrative_qa", perturbation="original").values
    assert np.nanmean(scores) == pytest.approx(0.17424242424242425)


def test_aggregate_has_robustness_and_fairness():
    ds, report = helm.load(RUN, level="aggregate", metric="f1_score")
    assert list(ds["perturbation"].values) == ["fairness", "original", "robustness"]
    assert list(ds["computed_on"].values) == ["worst", "", "worst"]
    assert ds["score"].sel(perturbation="robustness").item() == pytest.approx(0.17424242424242425)
    assert report.dropped[helm.REASON_SPLIT] == 3


def test_folder_of_runs(tmp_path):
    shutil.copytree(RUN, tmp_path / RUN.name)
    ds, _ = helm.load(tmp_path)
    assert ds.sizes["example"] == 4


def test_unknown_metric_lists_available():
    with pytest.raises(InputError, match="metric 'accuracy' not found") as error:
        helm.load(RUN, metric="accuracy")
    assert "f1_score" in str(error.value)
    assert "per_instance_stats.json" in str(error.value)


def test_truncated_stats(tmp_path):
    run = tmp_path / RUN.name
    shutil.copytree(RUN, run)
    text = (run / "per_instance_stats.json").read_text()
    (run / "per_instance_stats.json").write_text(text[: len(text) // 2])
    with pytest.raises(InputError, match="invalid JSON") as error:
        helm.load(run)
    assert "per_instance_stats.json" in str(error.value)


def test_missing_model_field(tmp_path):
    run = tmp_path / RUN.name
    shutil.copytree(RUN, run)
    spec = json.loads((run / "run_spec.json").read_text())
    del spec["adapter_spec"]["model"]
    (run / "run_spec.json").write_text(json.dumps(spec))
    with pytest.raises(InputError, match="adapter_spec.model"):
        helm.load(run)


def test_no_run_folder(tmp_path):
    with pytest.raises(InputError, match="no run_spec.json"):
        helm.load(tmp_path)


def test_task_name_drops_model():
    assert helm._task_name("mmlu:subject=anatomy,method=multiple_choice_joint,model=openai_gpt2") == "mmlu:subject=anatomy,method=multiple_choice_joint"
    assert helm._task_name("narrative_qa:model=openai_gpt2") == "narrative_qa"


def test_perturbed_instances(tmp_path):
    run = tmp_path / RUN.name
    shutil.copytree(RUN, run)
    entries = json.loads((run / "per_instance_stats.json").read_text())
    perturbed = json.loads(json.dumps(entries[0]))
    perturbed["perturbation"] = {"name": "typos", "robustness": True, "fairness": False, "prob": 0.1}
    for stat in perturbed["stats"]:
        if stat["name"]["name"] == "exact_match":
            stat.update({"sum": 1.0, "mean": 1.0, "min": 1.0, "max": 1.0})
    (run / "per_instance_stats.json").write_text(json.dumps(entries + [perturbed]))
    ds, _ = helm.load(run)
    assert list(ds["perturbation"].values) == ["original", "typos"]
    assert ds["n_correct"].sel(perturbation="typos").item() == 1
    assert ds["n_total"].sel(perturbation="typos").item() == 1
    assert ds["n_total"].sel(perturbation="original").item() == 4
    path = tensor.save(ds, tmp_path / "helm.nc")
    assert tensor.load(path).sizes["example"] == 4
