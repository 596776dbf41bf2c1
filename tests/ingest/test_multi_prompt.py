"""The multi-prompt loader on the real shipped files and on broken copies of them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from robustscope import tensor as T
from robustscope.errors import InputError
from robustscope.ingest import ingest
from robustscope.ingest.manifest import manifest_path

BBH_TASKS = 15
LMENTRY_TASKS = 10


def test_counts_match_published_data(multi_prompt_tensor):
    ds = multi_prompt_tensor
    assert ds.sizes["model"] == 16
    assert ds.sizes["task"] == BBH_TASKS + LMENTRY_TASKS
    assert int(ds["observed"].sum()) == 59_329
    assert ds.attrs["perturbation_structure"] == "nested"
    benchmarks = ds["benchmark"].to_series().value_counts()
    assert benchmarks["BBH"] == BBH_TASKS
    assert benchmarks["LMentry"] == LMENTRY_TASKS


def test_models_per_benchmark(multi_prompt_tensor):
    ds = multi_prompt_tensor
    run = ds["observed"].any("perturbation")
    for task in ds["task"].values:
        expected = 11 if ds["benchmark"].sel(task=task) == "BBH" else 16
        assert int(run.sel(task=task).sum()) == expected, task


def test_missing_cells_are_masked_not_zero(multi_prompt_tensor):
    ds = multi_prompt_tensor
    missing = ~ds["observed"].values
    assert missing.any()
    assert np.all(ds["n_total"].values[missing] == T.MISSING_COUNT)
    assert np.all(ds["n_correct"].values[missing] == T.MISSING_COUNT)
    assert np.all(ds["n_total"].values[~missing] > 0)


def test_invalid_paraphrases_dropped_and_counted(multi_prompt_tensor):
    manifest = multi_prompt_tensor.attrs["manifest"]
    assert manifest["rows"]["read"] == 5046
    assert manifest["rows"]["kept"] == 4399
    reasons = manifest["dropped_rows_by_reason"]
    assert sum(reasons.values()) == 5046 - 4399
    assert any("invalid" in reason for reason in reasons)
    assert all(entry["sha256"] for entry in manifest["files"])


def test_include_invalid_keeps_all(multi_prompt_dir):
    ds = ingest(multi_prompt_dir, "multi-prompt", include_invalid=True, tasks=["snarks"])
    assert ds.sizes["perturbation"] == 162
    assert int(ds["valid"].sel(task="snarks").sum()) == 152
    assert int(ds["observed"].sum()) == 162 * 11


def test_word_not_containing_has_26_examples(multi_prompt_dir):
    ds = ingest(multi_prompt_dir, "multi-prompt", tasks=["word_not_containing"])
    n_total = ds["n_total"].values[ds["observed"].values]
    assert set(np.unique(n_total)) == {26}
    assert any("1/26" in note for note in ds.attrs["manifest"]["notes"])


def test_paraphrase_metadata_is_kept(multi_prompt_dir):
    ds = ingest(multi_prompt_dir, "multi-prompt", tasks=["snarks"])
    text = str(ds["paraphrase"].sel(task="snarks", perturbation="1").values)
    assert "sarcastic" in text
    assert str(ds["generation_method"].sel(task="snarks", perturbation="1").values) == "default"


def test_round_trip_netcdf(multi_prompt_dir, tmp_path):
    path = tmp_path / "tensor.nc"
    ds = ingest(multi_prompt_dir, "multi-prompt", tasks=["snarks", "homophones"], output=path)
    loaded = T.load(path)
    assert T.tensor_hash(loaded) == T.tensor_hash(ds)
    assert manifest_path(path).is_file()
    assert loaded["observed"].dtype == bool


def _broken_copy(source: Path, tmp_path: Path, task: str = "snarks") -> Path:
    root = tmp_path / "mp"
    for sub in ("paraphrases accuracies/BBH", "paraphrases accuracies and rankings (aggregated)/BBH", "automatic paraphrases/BBH"):
        (root / "data" / sub).mkdir(parents=True)
        suffix = ".json" if "aggregated" in sub else ".csv"
        shutil.copy(source / "data" / sub / f"{task}{suffix}", root / "data" / sub / f"{task}{suffix}")
    return root / "data" / "paraphrases accuracies" / "BBH" / f"{task}.csv"


def test_accuracy_out_of_range_names_cell(multi_prompt_dir, tmp_path):
    path = _broken_copy(multi_prompt_dir, tmp_path)
    lines = path.read_text().splitlines()
    cells = lines[3].split(",")
    cells[2] = "1.7"
    lines[3] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as error:
        ingest(tmp_path / "mp", "multi-prompt")
    message = str(error.value)
    assert "snarks.csv" in message
    assert "row 3" in message
    assert "mpt-7b-instruct_acc" in message
    assert "1.7" in message


def test_non_numeric_cell_names_cell(multi_prompt_dir, tmp_path):
    path = _broken_copy(multi_prompt_dir, tmp_path)
    lines = path.read_text().splitlines()
    cells = lines[5].split(",")
    cells[1] = "n/a"
    lines[5] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as error:
        ingest(tmp_path / "mp", "multi-prompt")
    assert "row 5" in str(error.value)
    assert "'n/a'" in str(error.value)


def test_missing_index_column(multi_prompt_dir, tmp_path):
    path = _broken_copy(multi_prompt_dir, tmp_path)
    text = path.read_text().replace("paraphrase idx", "prompt", 1)
    path.write_text(text)
    with pytest.raises(InputError) as error:
        ingest(tmp_path / "mp", "multi-prompt")
    assert "paraphrase idx" in str(error.value)
    assert "snarks.csv" in str(error.value)


def test_empty_file(multi_prompt_dir, tmp_path):
    path = _broken_copy(multi_prompt_dir, tmp_path)
    path.write_text("")
    with pytest.raises(InputError, match="file is empty"):
        ingest(tmp_path / "mp", "multi-prompt")


def test_missing_folder():
    with pytest.raises(InputError, match="folder not found"):
        ingest("/nonexistent/multi-prompt", "multi-prompt")


def test_unknown_task_is_reported(multi_prompt_dir):
    with pytest.raises(InputError, match="not found: no_such_task"):
        ingest(multi_prompt_dir, "multi-prompt", tasks=["no_such_task"])


def test_add_merges_nested_tasks(multi_prompt_dir):
    from robustscope.ingest.merge import add

    first = ingest(multi_prompt_dir, "multi-prompt", tasks=["snarks"])
    second = ingest(multi_prompt_dir, "multi-prompt", tasks=["navigate"])
    merged = add(first, second)
    assert merged.sizes["task"] == 2
    assert int(merged["observed"].sum()) == int(first["observed"].sum()) + int(second["observed"].sum())
    assert "sarcastic" in str(merged["paraphrase"].sel(task="snarks", perturbation="1").values)
