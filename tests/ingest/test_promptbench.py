"""Tests of the PromptBench adversarial-prompt loader on the published Markdown files."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from robustscope import tensor
from robustscope.errors import InputError
from robustscope.ingest import promptbench

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "data" / "promptbench-adv-prompts"
CHATGPT_ZEROSHOT = FOLDER / "chatgpt_zeroshot.md"
COLA_FIRST_PROMPT = "Review the sentence below and identify whether its grammar is 'Acceptable' or 'Unacceptable':"


@pytest.fixture(scope="module")
def accuracy():
    ds, report = promptbench.load(FOLDER)
    manifest = report.finish(ds)
    return ds, manifest


def test_models_and_tasks(accuracy):
    ds, _ = accuracy
    assert list(ds["model"].values) == ["chatgpt", "t5", "ul2", "vicuna"]
    assert set(ds["task"].values) == {"cola", "math", "mmlu", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "wnli"}
    assert ds.attrs["perturbation_structure"] == "nested"
    assert ds.attrs["metric_kind"] == "continuous"


def test_other_metrics_dropped(accuracy):
    ds, manifest = accuracy
    assert not {"iwslt", "un_multi", "squad_v2"} & set(ds["task"].values)
    assert manifest["dropped_cells_by_reason"][promptbench.REASON_OTHER_METRIC] > 0


def test_rows_balance(accuracy):
    _, manifest = accuracy
    rows = manifest["rows"]
    assert rows["read"] == rows["kept"] + rows["dropped"]
    assert manifest["dropped_rows_by_reason"][promptbench.REASON_INCOMPLETE_ATTACK] == 15


def test_clean_cell_value(accuracy):
    ds, _ = accuracy
    label = f"zeroshot/clean/{promptbench.prompt_id(COLA_FIRST_PROMPT)}"
    assert ds["score"].sel(model="chatgpt", task="cola", perturbation=label).item() == pytest.approx(0.785)
    assert ds["prompt_type"].sel(task="cola", perturbation=label).item() == "task-oriented"


def test_attack_cell_value(accuracy):
    ds, _ = accuracy
    label = f"zeroshot/bertattack/{promptbench.prompt_id(COLA_FIRST_PROMPT)}"
    cell = ds.sel(model="chatgpt", task="cola", perturbation=label)
    assert cell["score"].item() == pytest.approx(0.435)
    assert cell["original_score"].item() == pytest.approx(0.785)
    assert cell["attacked_prompt"].item() == "review the citation below and do must its grammar is 'Acceptable' or 'Unacceptable':"
    assert ds["attack"].sel(task="cola", perturbation=label).item() == "bertattack"


def test_caveat_attribute(accuracy):
    ds, manifest = accuracy
    assert "worst-case" in ds.attrs["caveat"]
    assert promptbench.CAVEAT in manifest["notes"]
    assert any("binomial models need counts" in note for note in manifest["notes"])


def test_shots_option():
    ds, _ = promptbench.load(FOLDER, shots=["fewshot"], tasks=["sst2"])
    assert all(label.startswith("fewshot/") for label in ds["perturbation"].values)
    assert list(ds["task"].values) == ["sst2"]


def test_counts_with_n_examples(tmp_path):
    ds, report = promptbench.load(FOLDER, n_examples=200, tasks=["cola"])
    assert ds.attrs["metric_kind"] == "binary"
    observed = ds["observed"].values
    assert (ds["n_total"].values[observed] == 200).all()
    label = f"zeroshot/clean/{promptbench.prompt_id(COLA_FIRST_PROMPT)}"
    assert ds["n_correct"].sel(model="chatgpt", task="cola", perturbation=label).item() == 157
    back = tensor.load(tensor.save(ds, tmp_path / "pb.nc"))
    assert back.attrs["caveat"] == promptbench.CAVEAT


def test_bleu_tensor():
    ds, _ = promptbench.load(FOLDER, metric="bleu")
    assert set(ds["task"].values) == {"iwslt", "un_multi"}
    assert ds.attrs["metric"] == "bleu"
    assert np.nanmax(ds["score"].values) < 100


def test_f1_tensor():
    ds, _ = promptbench.load(FOLDER, metric="f1")
    assert list(ds["task"].values) == ["squad_v2"]
    assert math.isclose(float(np.nanmax(ds["score"].values)), 0.8782, abs_tol=0.2)


def test_n_examples_needs_accuracy():
    with pytest.raises(InputError, match="only accuracy"):
        promptbench.load(FOLDER, metric="bleu", n_examples=100)


def test_n_examples_missing_dataset():
    with pytest.raises(InputError, match="no count for dataset"):
        promptbench.load(FOLDER, n_examples={"cola": 100}, tasks=["cola", "sst2"])


def test_unknown_metric():
    with pytest.raises(InputError, match="unknown metric 'rouge'"):
        promptbench.load(FOLDER, metric="rouge")


def test_missing_folder(tmp_path):
    with pytest.raises(InputError, match="not found"):
        promptbench.load(tmp_path / "absent")


def test_empty_file(tmp_path):
    (tmp_path / "chatgpt_zeroshot.md").write_text("")
    with pytest.raises(InputError, match="file is empty") as error:
        promptbench.load(tmp_path)
    assert "chatgpt_zeroshot.md" in str(error.value)


def test_unknown_section(tmp_path):
    text = CHATGPT_ZEROSHOT.read_text().replace("## checklist", "## newattack", 1)
    (tmp_path / "chatgpt_zeroshot.md").write_text(text)
    with pytest.raises(InputError, match="unknown section '## newattack'"):
        promptbench.load(tmp_path)


def test_truncated_file_counts_drop(tmp_path):
    lines = CHATGPT_ZEROSHOT.read_text().splitlines()
    # Cut inside the first bertattack entry, after its "Original prompt:" line.
    cut = next(i for i, line in enumerate(lines) if line.startswith("Original prompt:")) + 1
    shutil.copy(FOLDER / "LICENSE", tmp_path / "LICENSE")
    (tmp_path / "chatgpt_zeroshot.md").write_text("\n".join(lines[:cut]))
    ds, report = promptbench.load(tmp_path)
    assert report.dropped[promptbench.REASON_INCOMPLETE_ATTACK] == 1
    assert ds.sizes["perturbation"] == 20
