"""Tests of merging new results into an existing tensor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from robustscope import tensor
from robustscope.errors import ConflictError, RobustscopeError
from robustscope.ingest import ingest
from robustscope.ingest.merge import add, add_files

DATA = Path(__file__).resolve().parents[1] / "data"


def counts(rows, dataset="a", structure="crossed", metric="accuracy"):
    frame = pd.DataFrame(rows, columns=["model", "task", "perturbation", "n_correct", "n_total"])
    return tensor.from_counts(frame, dataset=dataset, structure=structure, metric=metric)


def examples(rows, dataset="a"):
    frame = pd.DataFrame(rows, columns=["model", "task", "perturbation", "example", "score", "prediction"])
    return tensor.from_examples(frame, dataset=dataset)


def test_union_of_labels_and_sources():
    old = counts([("m1", "t", "p", 3, 5)], dataset="first")
    new = counts([("m2", "t", "q", 4, 5)], dataset="second")
    merged = add(old, new)
    assert list(merged["model"].values) == ["m1", "m2"]
    assert list(merged["perturbation"].values) == ["p", "q"]
    assert int(merged["n_correct"].sel(model="m2", task="t", perturbation="q")) == 4
    assert int(merged["n_correct"].sel(model="m1", task="t", perturbation="q")) == tensor.MISSING_COUNT
    labels = list(merged["source_label"].values)
    assert labels[int(merged["source_id"].sel(model="m1", task="t", perturbation="p"))] == "first"
    assert labels[int(merged["source_id"].sel(model="m2", task="t", perturbation="q"))] == "second"
    assert int(merged["source_id"].sel(model="m1", task="t", perturbation="q")) == -1
    assert merged["source_id"].dtype == np.int16


def test_identical_cells_merged_and_counted():
    old = counts([("m", "t", "p", 3, 5)], dataset="first")
    new = counts([("m", "t", "p", 3, 5), ("m", "t", "q", 1, 5)], dataset="second")
    merged = add(old, new)
    assert merged.attrs["merge_duplicates"] == 1
    assert merged.attrs["merge_conflicts"] == 0
    labels = list(merged["source_label"].values)
    assert labels[int(merged["source_id"].sel(model="m", task="t", perturbation="p"))] == "first + second"


def test_conflict_lists_keys():
    old = counts([("m", "t", "p", 3, 5)])
    new = counts([("m", "t", "p", 4, 5)], dataset="b")
    with pytest.raises(ConflictError) as error:
        add(old, new)
    assert "('m', 't', 'p') -> 3/5 vs 4/5" in str(error.value)


@pytest.mark.parametrize(("policy", "expected"), [("first", 3), ("last", 5), ("mean", 4)])
def test_conflict_policies(policy, expected):
    old = counts([("m", "t", "p", 3, 5)])
    new = counts([("m", "t", "p", 5, 5)], dataset="b")
    merged = add(old, new, policy=policy)
    assert int(merged["n_correct"].sel(model="m", task="t", perturbation="p")) == expected
    assert merged.attrs["merge_conflicts"] == 1


def test_different_metric_rejected():
    with pytest.raises(RobustscopeError, match="different metric"):
        add(counts([("m", "t", "p", 3, 5)]), counts([("m", "t", "q", 3, 5)], metric="exact_match"))


def test_different_structure_rejected():
    with pytest.raises(RobustscopeError, match="different perturbation structure"):
        add(counts([("m", "t", "p", 3, 5)]), counts([("m", "t", "q", 3, 5)], structure="nested"))


def test_examples_union_and_recount():
    old = examples([("m", "t", "p", "1", 1.0, "A"), ("m", "t", "p", "2", 0.0, "B")])
    new = examples([("m", "t", "p", "2", 0.0, "B"), ("m", "t", "p", "3", 1.0, "C"), ("m", "t", "q", "1", 1.0, "A")], dataset="b")
    merged = add(old, new)
    assert merged.sizes["example"] == 3
    assert int(merged["n_total"].sel(model="m", task="t", perturbation="p")) == 3
    assert int(merged["n_correct"].sel(model="m", task="t", perturbation="p")) == 2
    assert merged.attrs["merge_duplicates"] == 1
    code = int(merged["prediction"].sel(model="m", task="t", perturbation="p", example="3"))
    assert merged["prediction_label"].values[code] == "C"


def test_example_conflict_names_example():
    old = examples([("m", "t", "p", "1", 1.0, "A")])
    new = examples([("m", "t", "p", "1", 0.0, "B")], dataset="b")
    with pytest.raises(ConflictError, match="'1'"):
        add(old, new)
    merged = add(old, new, policy="last")
    assert float(merged["score"].sel(model="m", task="t", perturbation="p", example="1")) == 0.0


def test_per_example_and_counts_rejected():
    with pytest.raises(RobustscopeError, match="per-example"):
        add(examples([("m", "t", "p", "1", 1.0, "A")]), counts([("m", "t", "p", 1, 1)]))


def test_coordinates_are_merged():
    old = tensor.from_counts(
        pd.DataFrame([("m", "t", "p", 1, 2)], columns=["model", "task", "perturbation", "n_correct", "n_total"]),
        dataset="a",
        perturbation_info=pd.DataFrame({"shots": [0]}, index=pd.Index(["p"], name="perturbation")),
    )
    new = tensor.from_counts(
        pd.DataFrame([("m", "t", "q", 1, 2)], columns=["model", "task", "perturbation", "n_correct", "n_total"]),
        dataset="b",
        perturbation_info=pd.DataFrame({"shots": [5]}, index=pd.Index(["q"], name="perturbation")),
    )
    merged = add(old, new)
    assert merged["shots"].values.tolist() == [0.0, 5.0]


def test_add_files_writes_tensor_and_manifest(tmp_path):
    base = tmp_path / "base.nc"
    ingest(DATA / "long_table" / "counts.csv", format="long-table", factors=["shots", "temperature"], output=base)
    extra = tmp_path / "extra.csv"
    extra.write_text("model,task,shots,temperature,correct,total\nnew-model,arc_easy,0,0.0,50,100\n", encoding="utf-8")
    out = tmp_path / "merged.nc"
    merged = add_files(base, extra, format="long-table", output=out, factors=["shots", "temperature"])
    loaded = tensor.load(out)
    assert "new-model" in list(loaded["model"].values)
    assert int(loaded["observed"].sum()) == 7
    manifest = json.loads((tmp_path / "merged.manifest.json").read_text())
    assert manifest["inputs"][0]["path"] == str(base)
    assert manifest["inputs"][1]["manifest"]["files"][0]["path"] == str(extra)
    assert manifest["sources"] == list(merged["source_label"].values)
    assert tensor.load(base).sizes["model"] == 2


def test_add_files_conflict_writes_nothing(tmp_path):
    base = tmp_path / "base.nc"
    ingest(DATA / "long_table" / "counts.csv", format="long-table", factors=["shots", "temperature"], output=base)
    before = base.read_bytes()
    extra = tmp_path / "extra.csv"
    extra.write_text("model,task,shots,temperature,correct,total\nllama-3-8b,arc_easy,0,0.0,1,100\n", encoding="utf-8")
    with pytest.raises(ConflictError):
        add_files(base, extra, format="long-table", factors=["shots", "temperature"])
    assert base.read_bytes() == before
