"""Tests of the Inspect loader on real Inspect logs and on logs from its mock model."""

from __future__ import annotations

import builtins
from pathlib import Path

import numpy as np
import pytest

from robustscope import tensor
from robustscope.errors import InputError, RobustscopeError
from robustscope.ingest import ingest

pytest.importorskip("inspect_ai")

DATA = Path(__file__).resolve().parents[1] / "data" / "inspect"
REAL = DATA / "real"
GRID = DATA / "generated" / "grid"
EPOCHS = DATA / "generated" / "epochs"
STREAMING = REAL / "log_streaming.eval"


def test_grid_crossed_factors():
    ds = ingest(GRID, "inspect", perturbation=["task_args", "temperature"], scorer="match")
    assert ds.attrs["perturbation_structure"] == "crossed"
    assert ds.sizes["perturbation"] == 4
    assert ds.sizes["example"] == 6
    assert sorted(set(ds["temperature"].values)) == ["0.0", "0.7"]
    assert sorted(set(ds["task_args.template"].values)) == ["plain", "terse"]
    assert "task_args.template=terse|temperature=0.7" in ds["perturbation"].values
    assert tensor.observed_cells(ds)["n_total"].tolist() == [6, 6, 6, 6]


def test_grid_model_and_task():
    ds = ingest(GRID, "inspect", perturbation="temperature", scorer="match", duplicates="first")
    assert list(ds["model"].values) == ["mockllm/model"]
    assert list(ds["task"].values) == ["tiny_sums"]


def test_grid_two_scorers_need_choice():
    with pytest.raises(InputError, match=r"several scorers \(includes, match\)"):
        ingest(GRID, "inspect")


def test_grid_predictions_are_completions():
    ds = ingest(GRID, "inspect", perturbation=["task_args", "temperature"], scorer="includes")
    labels = set(ds["prediction_label"].values.tolist())
    assert labels
    assert all(label.isdigit() for label in labels)


def test_grid_same_cell_twice_conflicts():
    with pytest.raises(InputError, match="conflicting duplicate rows"):
        ingest(GRID, "inspect", perturbation="temperature", scorer="match")


def test_epochs_as_factor():
    ds = ingest(EPOCHS, "inspect", perturbation="epoch", scorer="match")
    assert list(ds["perturbation"].values) == ["epoch=1", "epoch=2"]
    assert tensor.observed_cells(ds)["n_total"].tolist() == [6, 6]


def test_epochs_without_factor_raise():
    with pytest.raises(InputError, match="conflicting duplicate rows|duplicate"):
        ingest(STREAMING, "inspect", perturbation="temperature", scorer="match")


def test_metadata_factor():
    ds = ingest(EPOCHS, "inspect", perturbation=["metadata:size", "epoch"], scorer="match")
    assert sorted(set(ds["metadata.size"].values)) == ["large", "small"]
    assert ds.sizes["perturbation"] == 4


def test_real_letter_scores():
    ds = ingest(STREAMING, "inspect", perturbation="epoch", scorer="match")
    cells = tensor.observed_cells(ds)
    assert list(ds["model"].values) == ["azureai/Meta-Llama-3-1-405B-Instruct-jqf"]
    assert cells["n_correct"].tolist() == [1, 2]
    assert cells["n_total"].tolist() == [2, 2]


def test_real_folder_drops_unscored():
    ds = ingest(REAL, "inspect", perturbation=["temperature", "epoch"], scorer="match")
    manifest = ds.attrs["manifest"]
    assert ds.sizes["model"] == 3
    # 10 unscored samples, 1 MMLU sample scored by `choice`, 1 sample scored by `closeness_log`.
    assert manifest["dropped_rows_by_reason"] == {"sample has no score from the chosen scorer": 12}
    assert manifest["duplicates_merged"] == 1
    assert "temperature=1.0|epoch=1" not in ds["perturbation"].values
    assert "epoch=1|temperature=1.0" in ds["perturbation"].values
    assert "epoch=1|temperature=unset" in ds["perturbation"].values


def test_real_json_and_eval_agree():
    from_json = ingest(REAL / "log_formats.json", "inspect", perturbation="temperature")
    from_eval = ingest(REAL / "log_formats.eval", "inspect", perturbation="temperature")
    assert tensor.tensor_hash(from_json) == tensor.tensor_hash(from_eval)
    assert list(from_json["perturbation"].values) == ["temperature=1.0"]


def test_real_float_scorer_is_continuous_or_binary():
    ds = ingest(REAL / "log_message_deduplication.eval", "inspect", perturbation="task_args")
    assert ds.attrs["metric"] == "closeness_log"
    assert "task_args.target=42.7|task_args.sample_count=1" not in ds["perturbation"].values
    assert list(ds["perturbation"].values) == ["task_args.sample_count=1|task_args.target=42.7"]
    assert float(ds["score"].values.ravel()[0]) == 0.0


def test_real_partial_letter_score(tmp_path):
    from inspect_ai.log import read_eval_log, write_eval_log

    log = read_eval_log(str(STREAMING))
    log.samples[0].scores["match"].value = "P"
    log.samples[1].scores["match"].value = "N"
    edited = tmp_path / "partial.eval"
    write_eval_log(log, str(edited))
    ds = ingest(edited, "inspect", perturbation="epoch", scorer="match")
    assert ds.attrs["metric_kind"] == "continuous"
    scores = ds["score"].sel(perturbation="epoch=1").values.ravel()
    assert sorted(scores[~np.isnan(scores)].tolist()) == [0.0, 0.5]


def test_unknown_scorer_lists_present():
    with pytest.raises(InputError, match="scorer 'accuracy' not found; scorers present: match"):
        ingest(STREAMING, "inspect", perturbation="epoch", scorer="accuracy")


def test_unknown_factor_raises():
    with pytest.raises(InputError, match="unknown perturbation factor 'prompt'"):
        ingest(GRID, "inspect", perturbation="prompt")


def test_non_log_file_raises(tmp_path):
    bad = tmp_path / "notes.json"
    bad.write_text('{"hello": 1}', encoding="utf-8")
    with pytest.raises(InputError, match="cannot read the file as an Inspect log"):
        ingest(tmp_path, "inspect")


def test_missing_package_message(monkeypatch):
    real_import = builtins.__import__

    def blocked(name, *args, **kwargs):
        if name.startswith("inspect_ai"):
            raise ImportError("blocked for the test")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", blocked)
    with pytest.raises(RobustscopeError, match=r"pip install 'robustscope\[inspect\]'"):
        ingest(STREAMING, "inspect")
