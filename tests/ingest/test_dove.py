"""Tests of the DOVE loader on Parquet files in both published column spellings."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from robustscope.errors import ConflictError, InputError, RobustscopeError
from robustscope.ingest import get_loader
from robustscope.ingest.dove import instruction_id, load, match_factor_columns

DATA = Path(__file__).resolve().parents[1] / "data" / "dove"
LITE = DATA / "lite"
FULL = DATA / "full"


def expected_counts(folder: Path) -> pd.DataFrame:
    frame = pd.concat([pd.read_parquet(p) for p in sorted(folder.rglob("*.parquet"))], ignore_index=True)
    frame.columns = [c.split(": ")[-1].removeprefix("mc_") for c in frame.columns]
    return frame.groupby(["model", "dataset", "enumerator", "separator", "choices_order", "instruction_phrasing_text", "shots"])["score"].agg(["sum", "count"])


def label(enumerator, separator, order, instruction, shots):
    escaped = separator.encode("unicode_escape").decode("ascii")
    return f"enumerator={enumerator}|separator={escaped}|choices_order={order}|instruction_phrasing={instruction_id(instruction)}|shots={shots}"


def test_loader_is_registered():
    assert get_loader("dove") is load


def test_both_spellings_are_matched():
    lite = match_factor_columns(["dimensions_1: enumerator", "dimensions_3: choices_order", "dimensions_4: instruction_phrasing_text"])
    full = match_factor_columns(["dimensions_1: mc_enumerator", "mc_separator", "shots"])
    assert lite == {"enumerator": "dimensions_1: enumerator", "choices_order": "dimensions_3: choices_order", "instruction_phrasing": "dimensions_4: instruction_phrasing_text"}
    assert full == {"enumerator": "dimensions_1: mc_enumerator", "separator": "mc_separator", "shots": "shots"}


@pytest.mark.parametrize("folder", [LITE, FULL], ids=["lite", "full"])
def test_counts_match_pandas(folder):
    ds, report = load(folder)
    expected = expected_counts(folder)
    assert ds.sizes == {"model": 2, "task": 2, "perturbation": 16}
    assert ds.attrs["perturbation_structure"] == "crossed"
    for (model, task, enumerator, separator, order, instruction, shots), row in expected.iterrows():
        cell = ds.sel(model=model, task=task, perturbation=label(enumerator, separator, order, instruction, shots))
        assert int(cell["n_correct"]) == row["sum"]
        assert int(cell["n_total"]) == row["count"]
    assert report.rows_read == 192


def test_factor_coordinates():
    ds, _ = load(LITE)
    assert set(ds["separator"].values) == {"\n", "; "}
    assert set(ds["shots"].values) == {0.0, 2.0}
    assert ds["instruction_phrasing"].dims == ("perturbation",)
    first = ds["perturbation"].values[0]
    text = str(ds["instruction_phrasing"].values[0])
    assert f"instruction_phrasing={instruction_id(text)}" in first


def test_spellings_give_the_same_tensor():
    lite, _ = load(LITE)
    full, _ = load(FULL)
    assert (lite["n_correct"] == full["n_correct"]).all()
    assert list(lite["perturbation"].values) == list(full["perturbation"].values)


def test_per_example_with_closest_answer():
    ds, _ = load(FULL, per_example=True)
    assert ds.sizes["example"] == 3
    frame = pd.read_parquet(FULL / "Llama-3.2-1B-Instruct" / "en" / "2_shot" / "ai2_arc.arc_easy.parquet")
    row = frame.iloc[4]
    cell = ds.sel(
        model=row["model"],
        task=row["dataset"],
        perturbation=label(row["dimensions_1: mc_enumerator"], row["dimensions_2: mc_separator"], row["dimensions_3: mc_choices_order"], row["dimensions_4: instruction_phrasing_text"], 2),
        example=str(row["sample_index"]),
    )
    assert float(cell["score"]) == row["score"]
    assert str(ds["prediction_label"].values[int(cell["prediction"])]) == row["closest_answer"]


def test_filters_select_folders():
    ds, report = load(LITE, shots=[0], models=["OLMoE-1B-7B-0924-Instruct"])
    assert list(ds["model"].values) == ["OLMoE-1B-7B-0924-Instruct"]
    assert set(ds["shots"].values) == {0.0}
    assert len(report.files) == 2


def test_missing_dimension_column(tmp_path):
    path = tmp_path / "m" / "en" / "0_shot" / "x.parquet"
    path.parent.mkdir(parents=True)
    frame = pd.read_parquet(LITE / "Llama-3.2-1B-Instruct" / "en" / "0_shot" / "ai2_arc.arc_easy.parquet")
    frame.drop(columns=["dimensions_2: separator"]).to_parquet(path)
    with pytest.raises(InputError) as error:
        load(tmp_path)
    assert "separator" in str(error.value)
    assert "columns found" in str(error.value)


def test_non_binary_score_names_row(tmp_path):
    target = tmp_path / "dove"
    shutil.copytree(LITE / "Llama-3.2-1B-Instruct", target / "Llama-3.2-1B-Instruct")
    path = target / "Llama-3.2-1B-Instruct" / "en" / "0_shot" / "ai2_arc.arc_easy.parquet"
    frame = pd.read_parquet(path)
    frame.loc[6, "score"] = 0.5
    frame.to_parquet(path)
    with pytest.raises(InputError) as error:
        load(target)
    assert error.value.path == str(path)
    assert error.value.row == 7
    assert error.value.value == 0.5


def test_duplicate_rows_conflict(tmp_path):
    path = tmp_path / "m" / "en" / "0_shot" / "x.parquet"
    path.parent.mkdir(parents=True)
    frame = pd.read_parquet(LITE / "Llama-3.2-1B-Instruct" / "en" / "0_shot" / "ai2_arc.arc_easy.parquet")
    flipped = frame.iloc[[0]].assign(score=1.0 - frame["score"].iloc[0])
    pd.concat([frame, frame.iloc[[1]], flipped]).to_parquet(path)
    with pytest.raises(ConflictError):
        load(tmp_path)
    ds, report = load(tmp_path, duplicates="first")
    assert int(ds["n_total"].max()) == 3
    assert report.duplicates_merged == 1
    assert report.conflicts == 1


def test_hub_failure_is_explained(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RobustscopeError) as error:
        load("hf://nlphuji/DOVE_Lite", data_files=["Llama-3.2-1B-Instruct/en/0_shot/*.parquet"])
    message = str(error.value)
    assert "access to the Hugging Face dataset 'nlphuji/DOVE_Lite' failed" in message
    assert "gated" in message
    assert "token" in message


def test_no_matching_files(tmp_path):
    with pytest.raises(InputError, match="no table files"):
        load(tmp_path)
