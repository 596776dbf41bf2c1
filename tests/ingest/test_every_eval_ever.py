"""Tests of the Every Eval Ever loader on the HELM classic collection and a 0.3.0 record."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from robustscope import tensor
from robustscope.errors import InputError
from robustscope.ingest import every_eval_ever

ROOT = Path(__file__).resolve().parents[2]
HELM_CLASSIC = ROOT / "data" / "helm-classic"
DEMO = ROOT / "tests" / "data" / "every-eval-ever" / "eee-0.3.0-demo"
DAVINCI = HELM_CLASSIC / "openai" / "text-davinci-003" / "e411f017-22c6-4d49-9bf9-5d99c1091791.json"
GLM = HELM_CLASSIC / "zhipu-ai" / "GLM-130B" / "9ba74767-b675-460a-bb68-e82adb6acd2f.json"
PROPORTION_TASKS = {"BoolQ", "CivilComments", "HellaSwag", "IMDB", "MMLU", "OpenbookQA", "RAFT", "TruthfulQA"}


@pytest.fixture(scope="module")
def continuous():
    ds, report = every_eval_ever.load(HELM_CLASSIC)
    manifest = report.finish(ds)
    return ds, manifest


@pytest.fixture(scope="module")
def binary():
    ds, report = every_eval_ever.load(HELM_CLASSIC, metric_kind="binary")
    manifest = report.finish(ds)
    return ds, manifest


def test_helm_classic_sizes(continuous):
    ds, manifest = continuous
    assert ds.sizes["model"] == 67
    assert ds.sizes["task"] == 14
    assert list(ds["perturbation"].values) == ["fairness", "original", "robustness"]
    assert ds.attrs["metric_kind"] == "continuous"
    assert manifest["rows"]["read"] == 67 * 15


def test_helm_classic_rows_balance(continuous):
    _, manifest = continuous
    rows = manifest["rows"]
    assert rows["read"] == rows["kept"] + rows["dropped"]


def test_mean_win_rate_dropped(continuous):
    ds, manifest = continuous
    assert "Mean win rate" not in set(ds["task"].values)
    assert manifest["dropped_rows_by_reason"][every_eval_ever.REASON_AGGREGATE_ROW] == 67


def test_neighbour_scenario_keys_skipped(continuous):
    ds, manifest = continuous
    assert "NaturalQuestions (closed-book)" not in set(ds["task"].values)
    # Two neighbouring scenarios (NaturalQuestions closed-book, MS MARCO regular)
    # with a robustness and a fairness key each, in all 67 records.
    assert manifest["dropped_cells_by_reason"][every_eval_ever.REASON_NEIGHBOUR_KEY] == 67 * 4


def test_davinci_mmlu_scores(continuous):
    ds, _ = continuous
    cell = ds.sel(model="openai/text-davinci-003", task="MMLU")
    assert cell["score"].sel(perturbation="original").item() == pytest.approx(0.569)
    assert cell["score"].sel(perturbation="robustness").item() == pytest.approx(0.5167953216374268)
    assert cell["score"].sel(perturbation="fairness").item() == pytest.approx(0.5369590643274853)


def test_no_matching_runs_is_missing(continuous):
    ds, _ = continuous
    cell = ds.sel(model="zhipu-ai/GLM-130B", task="HellaSwag")
    assert not cell["observed"].any()
    assert np.isnan(cell["score"]).all()


def test_summaries_lack_variants(continuous):
    ds, _ = continuous
    xsum = ds.sel(task="XSUM")
    assert not xsum["observed"].sel(perturbation="robustness").any()
    assert xsum["observed"].sel(perturbation="original").sum() > 0


def test_task_metric_coordinate(continuous):
    ds, _ = continuous
    metrics = dict(zip(ds["task"].values, ds["metric"].values, strict=True))
    assert metrics["MMLU"] == "exact_match"
    assert metrics["NarrativeQA"] == "F1"
    assert metrics["XSUM"] == "ROUGE-2"


def test_binary_keeps_proportions(binary):
    ds, manifest = binary
    assert set(ds["task"].values) == PROPORTION_TASKS
    assert ds.attrs["metric"] == "exact_match"
    assert ds.attrs["metric_kind"] == "binary"
    assert manifest["dropped_cells_by_reason"][every_eval_ever.REASON_NOT_PROPORTION] > 0
    assert any("reconstructed from rounded mean scores" in note for note in manifest["notes"])


def test_binary_counts_from_eval(binary):
    ds, _ = binary
    cell = ds.sel(model="openai/text-davinci-003", task="BoolQ", perturbation="original")
    assert cell["n_total"].item() == 1000
    assert cell["n_correct"].item() == 881
    mmlu = ds.sel(model="openai/text-davinci-003", task="MMLU", perturbation="robustness")
    assert mmlu["n_total"].item() == 103
    assert mmlu["n_correct"].item() == round(0.5167953216374268 * 103)


def test_binary_missing_counts(binary):
    ds, _ = binary
    cell = ds.sel(model="zhipu-ai/GLM-130B", task="OpenbookQA")
    assert (cell["n_total"] == tensor.MISSING_COUNT).all()


def test_binary_round_trip(binary, tmp_path):
    ds, _ = binary
    path = tensor.save(ds, tmp_path / "helm.nc")
    back = tensor.load(path)
    assert tensor.tensor_hash(back) == tensor.tensor_hash(ds)


def test_perturbations_option():
    ds, report = every_eval_ever.load(DAVINCI, perturbations=["original", "robustness"])
    assert list(ds["perturbation"].values) == ["original", "robustness"]
    assert report.dropped_cells[every_eval_ever.REASON_NOT_SELECTED] > 0


def test_demo_samples_per_example():
    ds, report = every_eval_ever.load(DEMO)
    assert ds.sizes["example"] == 1
    assert ds.attrs["metric_kind"] == "binary"
    assert ds["n_correct"].sel(model="demo-org/demo-model").sum().item() == 1
    assert len(report.files) == 2


def test_demo_aggregate_level():
    ds, _ = every_eval_ever.load(DEMO, level="aggregate", metric_kind="continuous")
    assert "example" not in ds.dims
    assert ds["score"].item() == pytest.approx(0.75)


def test_generation_settings_label(tmp_path):
    record = json.loads(DAVINCI.read_text())
    record["evaluation_results"][1]["generation_config"] = {
        "generation_args": {"temperature": 0.7, "prompt_template": "Q: {question}\nA:"},
        "additional_details": {"num_fewshot": 5},
    }
    path = tmp_path / "record.json"
    path.write_text(json.dumps(record))
    ds, _ = every_eval_ever.load(path, tasks=["MMLU"])
    labels = set(ds["perturbation"].values)
    assert any(label.startswith("n_shot=5,prompt_template=") and label.endswith("temperature=0.7") for label in labels)
    assert "Q: {question}\nA:" in set(ds["prompt_template"].values)


def test_truncated_json(tmp_path):
    path = tmp_path / "truncated.json"
    path.write_text(DAVINCI.read_text()[:500])
    with pytest.raises(InputError, match="invalid JSON") as error:
        every_eval_ever.load(path)
    assert "truncated.json" in str(error.value)


def test_unknown_major_version(tmp_path):
    record = json.loads(DAVINCI.read_text())
    record["schema_version"] = "1.0.0"
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(record))
    with pytest.raises(InputError, match="unknown major schema version") as error:
        every_eval_ever.load(path)
    assert "'1.0.0'" in str(error.value)
    assert "v1.json" in str(error.value)


def test_version_older_than_supported(tmp_path):
    record = json.loads(DAVINCI.read_text())
    record["schema_version"] = "0.1.0"
    path = tmp_path / "old.json"
    path.write_text(json.dumps(record))
    with pytest.raises(InputError, match="older than 0.2.0"):
        every_eval_ever.load(path)


def test_missing_score(tmp_path):
    record = json.loads(DAVINCI.read_text())
    del record["evaluation_results"][2]["score_details"]["score"]
    path = tmp_path / "noscore.json"
    path.write_text(json.dumps(record))
    with pytest.raises(InputError, match="score_details.score") as error:
        every_eval_ever.load(path)
    assert "BoolQ" in str(error.value)


def test_missing_schema_version(tmp_path):
    record = json.loads(DAVINCI.read_text())
    del record["schema_version"]
    path = tmp_path / "nover.json"
    path.write_text(json.dumps(record))
    with pytest.raises(InputError, match="schema_version"):
        every_eval_ever.load(path)


def test_folder_with_samples_copy(tmp_path):
    shutil.copytree(DEMO, tmp_path / "demo")
    lines = (tmp_path / "demo" / "f3a1c0de-4b2e-4c1a-9f6d-1b7e5a2c8d40_samples.jsonl").read_text()
    (tmp_path / "demo" / "f3a1c0de-4b2e-4c1a-9f6d-1b7e5a2c8d40_samples.jsonl").write_text(lines[:80])
    with pytest.raises(InputError, match="invalid JSON"):
        every_eval_ever.load(tmp_path / "demo")


def test_unknown_task_name():
    with pytest.raises(InputError, match="task\\(s\\) not found: GSM8K"):
        every_eval_ever.load(DAVINCI, tasks=["MMLU", "GSM8K"])


def test_samples_file_shorter_than_total_rows_is_noted(tmp_path):
    import json
    import shutil

    folder = tmp_path / "demo"
    shutil.copytree(DEMO, folder)
    record = next(folder.glob("*-*-*-*-????????????.json"))
    payload = json.loads(record.read_text())
    payload["detailed_evaluation_results"]["total_rows"] = 3
    record.write_text(json.dumps(payload))
    _, report = every_eval_ever.load(folder)
    notes = " ".join(report.notes)
    assert "has 1 instance rows" in notes
    assert "total_rows = 3" in notes


def test_samples_file_matching_total_rows_adds_no_note():
    _, report = every_eval_ever.load(DEMO)
    assert not any("total_rows" in note for note in report.notes)
