"""Tests of the lm-eval loader on real and generated lm-evaluation-harness logs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from robustscope import tensor
from robustscope.errors import InputError
from robustscope.ingest import get_loader, ingest

DATA = Path(__file__).resolve().parents[1] / "data" / "lm_eval"
REAL = DATA / "real"
GENERATED = DATA / "generated"
ARITH = ["tiny_arith_plain", "tiny_arith_terse"]


def _run(name: str) -> Path:
    return GENERATED / name


def test_loader_registered():
    assert get_loader("lm-eval") is not None


def test_real_missing_samples_raises():
    with pytest.raises(InputError, match="samples file for task math_rephrased_full not found"):
        ingest(REAL, "lm-eval")


def test_real_skip_missing_samples():
    ds = ingest(REAL, "lm-eval", missing_samples="skip")
    manifest = ds.attrs["manifest"]
    assert ds.sizes["example"] == 10
    assert ds.attrs["metric"] == "exact_match"
    assert list(ds["model"].values) == ["RylanSchaeffer/mem_Qwen3-93M_minerva_math_rep_0_sbst_1.0000_epch_1_ot_1"]
    assert list(ds["perturbation"].values) == ["math_perturbed_full"]
    assert int(ds["n_total"].sum()) == 10
    assert int(ds["n_correct"].sum()) == 0
    assert manifest["dropped_rows_by_reason"] == {}
    assert any("5000 evaluated" in note for note in manifest["notes"])


def test_real_prediction_is_filtered_text():
    ds = ingest(REAL, "lm-eval", tasks=["math_perturbed_full"])
    first = ds["prediction"].sel(example="7").values.item()
    assert ds["prediction_label"].values[first].startswith(" 1000 dollars)")


def test_generated_task_variants_nested():
    ds = ingest(_run("two_shot_seed0"), "lm-eval", tasks=ARITH, filter="first-number")
    cells = tensor.observed_cells(ds)
    assert ds.attrs["perturbation_structure"] == "nested"
    assert list(ds["task"].values) == ["tiny_arith"]
    assert sorted(ds["perturbation"].values) == ARITH
    assert cells["n_total"].tolist() == [8, 8]
    assert ds.attrs["manifest"]["dropped_rows_by_reason"] == {"row for a filter other than the chosen one": 16}


def test_generated_filter_counts_documents_once():
    none = tensor.observed_cells(ingest(_run("zero_shot_seed0"), "lm-eval", tasks=ARITH, filter="none"))
    number = tensor.observed_cells(ingest(_run("zero_shot_seed0"), "lm-eval", tasks=ARITH, filter="first-number"))
    assert none["n_total"].tolist() == [8, 8]
    assert number["n_total"].tolist() == [8, 8]
    # The raw response carries " (computed)", so only the extracted number can match.
    assert none["n_correct"].sum() == 0
    assert number["n_correct"].sum() > 0


def test_generated_several_filters_need_choice():
    with pytest.raises(InputError, match=r"several filters \(first-number, none\)"):
        ingest(_run("zero_shot_seed0"), "lm-eval", tasks=["tiny_arith_plain"])


def test_generated_filter_mapping_per_task():
    ds = ingest(_run("zero_shot_seed0"), "lm-eval", tasks=ARITH, filter={"tiny_arith_plain": "none", "tiny_arith_terse": "first-number"})
    cells = tensor.observed_cells(ds).set_index("perturbation")
    assert cells.loc["tiny_arith_plain", "n_correct"] == 0
    assert cells.loc["tiny_arith_terse", "n_correct"] > 0
    assert ds.attrs["manifest"]["options"]["filters_used"] == {"tiny_arith_plain": ["none"], "tiny_arith_terse": ["first-number"]}
    with pytest.raises(InputError, match="filter 'strict' not found for task tiny_arith_plain"):
        ingest(_run("zero_shot_seed0"), "lm-eval", tasks=["tiny_arith_plain"], filter={"tiny_arith_plain": "strict"})


def test_generated_n_shot_crossed():
    ds = ingest([_run("zero_shot_seed0"), _run("two_shot_seed0")], "lm-eval", perturbation="n_shot", tasks=ARITH, filter="first-number")
    cells = tensor.observed_cells(ds)
    assert ds.attrs["perturbation_structure"] == "crossed"
    assert sorted(ds["perturbation"].values) == ["0", "2"]
    assert sorted(ds["task"].values) == ARITH
    assert len(cells) == 4
    assert cells["n_total"].tolist() == [8, 8, 8, 8]


def test_generated_seed_labels():
    ds = ingest([_run("two_shot_seed0"), _run("two_shot_seed1")], "lm-eval", perturbation="seed", tasks=["tiny_capital"])
    assert list(ds["perturbation"].values) == ["0,1234,1234,1234", "1,1234,1234,1235"]
    assert ds.attrs["metric"] == "acc"
    assert tensor.observed_cells(ds)["n_total"].tolist() == [6, 6]


def test_generated_same_cell_twice_conflicts():
    with pytest.raises(InputError, match="conflicting duplicate rows"):
        ingest(GENERATED, "lm-eval", perturbation="seed", tasks=["tiny_capital"])


def test_generated_prompt_hash_labels():
    ds = ingest(_run("zero_shot_seed0"), "lm-eval", perturbation="prompt_hash", tasks=ARITH, filter="first-number")
    labels = ds["perturbation"].values
    assert len(labels) == 2
    assert all(len(label) == 12 for label in labels)
    templates = ds["prompt_template"].values
    assert "{{a}}+{{b}}=" in templates.ravel().tolist()


def test_multiple_choice_prediction_is_choice_index():
    ds = ingest(_run("zero_shot_seed0"), "lm-eval", tasks=["tiny_capital"])
    labels = set(ds["prediction_label"].values.tolist())
    assert labels <= {"0", "1", "2"}


def test_metric_not_found_lists_present():
    with pytest.raises(InputError, match="metric 'f1' not found; metrics present: exact_match"):
        ingest(_run("zero_shot_seed0"), "lm-eval", tasks=ARITH, filter="none", metric="f1")


def test_mixed_default_metrics_raise():
    with pytest.raises(InputError, match="different default metrics"):
        ingest(_run("zero_shot_seed0"), "lm-eval", tasks=["tiny_arith_plain", "tiny_capital"], filter={"tiny_arith_plain": "none"})


def test_malformed_line_reports_line(tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(_run("zero_shot_seed0"), folder)
    samples = next(folder.rglob("samples_tiny_capital_*.jsonl"))
    lines = samples.read_text(encoding="utf-8").splitlines()
    lines[2] = lines[2][:40]
    samples.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"row 3: invalid JSON") as caught:
        ingest(folder, "lm-eval", tasks=["tiny_capital"])
    assert caught.value.path == str(samples)
    assert caught.value.row == 3


def test_non_numeric_metric_raises(tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(_run("zero_shot_seed0"), folder)
    samples = next(folder.rglob("samples_tiny_capital_*.jsonl"))
    rows = [json.loads(line) for line in samples.read_text(encoding="utf-8").splitlines()]
    rows[1]["acc"] = "yes"
    samples.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    with pytest.raises(InputError, match="not a finite number") as caught:
        ingest(folder, "lm-eval", tasks=["tiny_capital"])
    assert caught.value.row == 2


def test_unknown_perturbation_raises():
    with pytest.raises(InputError, match="unknown perturbation 'prompt'"):
        ingest(GENERATED, "lm-eval", perturbation="prompt")


def test_no_results_file_raises(tmp_path):
    with pytest.raises(InputError, match="no results_<timestamp>.json"):
        ingest(tmp_path, "lm-eval")


def test_round_trip_save(tmp_path):
    ds = ingest(_run("two_shot_seed1"), "lm-eval", tasks=ARITH, filter="first-number", output=tmp_path / "t.nc")
    loaded = tensor.load(tmp_path / "t.nc")
    assert np.array_equal(loaded["n_correct"].values, ds["n_correct"].values)
    assert (tmp_path / "t.manifest.json").is_file()
