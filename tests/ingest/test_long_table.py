"""Tests of the long-table loader on CSV, TSV, JSON Lines and Parquet files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from robustscope import tensor
from robustscope.errors import ConflictError, InputError
from robustscope.ingest import get_loader, ingest
from robustscope.ingest.long_table import load

DATA = Path(__file__).resolve().parents[1] / "data" / "long_table"


def cell(ds, model, task, perturbation, name="n_correct"):
    return int(ds[name].sel(model=model, task=task, perturbation=perturbation))


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_loader_is_registered():
    assert get_loader("long-table") is load


def test_counts_csv_labels_from_factors():
    ds, report = load(DATA / "counts.csv", factors=["shots", "temperature"])
    assert list(ds["perturbation"].values) == ["shots=0|temperature=0", "shots=0|temperature=0.7", "shots=5|temperature=0"]
    assert cell(ds, "llama-3-8b", "arc_easy", "shots=5|temperature=0") == 70
    assert cell(ds, "modèle-é", "算术", "shots=0|temperature=0.7", "n_total") == 50
    assert ds["shots"].values.tolist() == [0.0, 0.0, 5.0]
    assert ds["temperature"].values.tolist() == [0.0, 0.7, 0.0]
    assert ds["shots"].dims == ("perturbation",)


def test_counts_csv_repeated_header_counted():
    ds, report = load(DATA / "counts.csv", factors=["shots", "temperature"])
    manifest = report.finish(ds)
    assert manifest["dropped_rows_by_reason"] == {"repeated header row": 1}
    assert manifest["rows"]["read"] == 7
    assert manifest["rows"]["kept"] == 6


def test_unicode_labels_round_trip(tmp_path):
    ds = ingest(DATA / "counts.csv", format="long-table", factors=["shots", "temperature"], output=tmp_path / "t.nc")
    loaded = tensor.load(tmp_path / "t.nc")
    assert "modèle-é" in list(loaded["model"].values)
    assert "算术" in list(loaded["task"].values)
    assert tensor.tensor_hash(loaded) == tensor.tensor_hash(ds)
    assert (tmp_path / "t.manifest.json").is_file()


def test_accuracy_with_count_mapping():
    mapping = {"model": "system", "task": "benchmark", "perturbation": "prompt", "score": "acc", "count": "n"}
    ds, _ = load(DATA / "accuracy.csv", mapping=mapping)
    assert cell(ds, "gpt-small", "boolq", "p1") == 6
    assert cell(ds, "gpt-small", "boolq", "p1", "n_total") == 8
    assert cell(ds, "gpt-small", "copa", "p1") == 6
    assert cell(ds, "gpt-large", "boolq", "p2") == tensor.MISSING_COUNT
    assert not bool(ds["observed"].sel(model="gpt-large", task="boolq", perturbation="p2"))


def test_jsonl_examples_with_words_and_predictions():
    mapping = {"example": "id", "prediction": "answer"}
    ds, report = load(DATA / "examples.jsonl", mapping=mapping)
    assert ds.sizes["example"] == 2
    score = ds["score"].sel(model="m1", task="t1")
    assert score.sel(perturbation="plain").values.tolist() == [1.0, 0.0]
    assert score.sel(perturbation="shuffled").values.tolist() == [1.0, 1.0]
    labels = list(ds["prediction_label"].values)
    code = int(ds["prediction"].sel(model="m2", task="t1", perturbation="plain", example="q1"))
    assert labels[code] == "D"
    assert report.dropped["empty score"] == 1


def test_parquet_per_example_tensor():
    mapping = {"model": "llm", "example": "item", "score": "correct", "prediction": "output"}
    ds, _ = load(DATA / "examples.parquet", mapping=mapping, factors=["template", "temperature"])
    frame = pd.read_parquet(DATA / "examples.parquet")
    assert ds.sizes == {"model": 2, "task": 2, "perturbation": 4, "example": 3, "prediction_code": 4}
    row = frame.iloc[5]
    label = f"template={row['template']}|temperature={row['temperature']:g}"
    value = ds["score"].sel(model=row["llm"], task=row["task"], perturbation=label, example=str(row["item"]))
    assert float(value) == float(row["correct"])


def test_parquet_streamed_counts_match_pandas():
    mapping = {"model": "llm", "example": "item", "score": "correct"}
    ds, report = load(DATA / "examples.parquet", mapping=mapping, factors=["template", "temperature"], per_example=False)
    assert "example" not in ds.dims
    frame = pd.read_parquet(DATA / "examples.parquet")
    expected = frame.groupby(["llm", "task", "template", "temperature"])["correct"].agg(["sum", "count"])
    for (model, task, template, temperature), row in expected.iterrows():
        label = f"template={template}|temperature={temperature:g}"
        assert cell(ds, model, task, label) == row["sum"]
        assert cell(ds, model, task, label, "n_total") == row["count"]
    assert report.rows_read == 48
    assert report.rows_kept == 48


def test_folder_of_files_is_read(tmp_path):
    write(tmp_path, "a.csv", "model,task,perturbation,correct,total\nm,t,p1,1,2\n")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", "b.tsv", "model\ttask\tperturbation\tcorrect\ttotal\nm\tt\tp2\t2\t2\n")
    ds, report = load(tmp_path)
    assert list(ds["perturbation"].values) == ["p1", "p2"]
    assert len(report.files) == 2


def test_missing_column_lists_found_and_keys(tmp_path):
    path = write(tmp_path, "bad.csv", "model,job,perturbation,correct,total\nm,t,p,1,2\n")
    with pytest.raises(InputError) as error:
        load(path)
    message = str(error.value)
    assert "bad.csv" in message
    assert "missing required column(s) task" in message
    assert "columns found: model, job, perturbation, correct, total" in message
    assert "mapping keys" in message


def test_score_outside_range_names_row(tmp_path):
    path = write(tmp_path, "bad.csv", "model,task,perturbation,score,count\nm,t,p,0.5,10\nm,t,q,75,10\n")
    with pytest.raises(InputError) as error:
        load(path)
    assert error.value.path == str(path)
    assert error.value.row == 2
    assert error.value.column == "score"
    assert error.value.value == "75"


def test_correct_above_total(tmp_path):
    path = write(tmp_path, "bad.csv", "model,task,perturbation,correct,total\nm,t,p,11,10\n")
    with pytest.raises(InputError) as error:
        load(path)
    assert error.value.row == 1
    assert error.value.column == "correct"
    assert error.value.value == "11"


def test_non_numeric_count(tmp_path):
    path = write(tmp_path, "bad.csv", "model,task,perturbation,correct,total\nm,t,p,3,ten\n")
    with pytest.raises(InputError) as error:
        load(path)
    assert error.value.row == 1
    assert error.value.column == "total"
    assert error.value.value == "ten"


def test_unknown_score_string(tmp_path):
    path = write(tmp_path, "bad.jsonl", '{"model": "m", "task": "t", "perturbation": "p", "example": 1, "score": "maybe"}\n')
    with pytest.raises(InputError) as error:
        load(path)
    assert error.value.value == "maybe"
    assert error.value.row == 1
    assert "unknown score value" in str(error.value)


def test_unknown_score_string_in_parquet(tmp_path):
    frame = pd.DataFrame({"model": ["m", "m"], "task": ["t", "t"], "perturbation": ["p", "p"], "example": [1, 2], "score": ["1", "perhaps"]})
    path = tmp_path / "bad.parquet"
    frame.to_parquet(path)
    with pytest.raises(InputError) as error:
        load(path, per_example=False)
    assert error.value.path == str(path)
    assert error.value.row == 2
    assert error.value.value == "perhaps"


def test_empty_file(tmp_path):
    path = write(tmp_path, "empty.csv", "")
    with pytest.raises(InputError, match="file is empty"):
        load(path)


def test_header_only_file(tmp_path):
    path = write(tmp_path, "header.csv", "model,task,perturbation,correct,total\n")
    with pytest.raises(InputError, match="no rows"):
        load(path)


def test_unreadable_parquet(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InputError) as error:
        load(path)
    assert error.value.path == str(path)
    assert "Parquet" in str(error.value)


def test_invalid_json_line(tmp_path):
    path = write(tmp_path, "bad.jsonl", '{"model": "m"}\n{"model": \n')
    with pytest.raises(InputError) as error:
        load(path)
    assert error.value.row == 2


def test_unsupported_suffix(tmp_path):
    path = write(tmp_path, "table.xlsx", "x")
    with pytest.raises(InputError, match="unsupported file type"):
        load(path)


def test_mixed_metrics_rejected(tmp_path):
    path = write(tmp_path, "mixed.csv", "model,task,perturbation,metric,correct,total\nm,t,p,accuracy,1,2\nm,t,q,exact_match,1,2\n")
    with pytest.raises(InputError, match="mixes 2 metrics"):
        load(path)


def test_conflicting_duplicates(tmp_path):
    path = write(tmp_path, "dup.csv", "model,task,perturbation,correct,total\nm,t,p,1,2\nm,t,p,1,2\nm,t,q,1,2\nm,t,q,2,2\n")
    with pytest.raises(ConflictError):
        load(path)
    ds, _ = load(path, duplicates="last")
    assert cell(ds, "m", "t", "q") == 2
    assert ds.attrs["duplicates_merged"] == 1


def test_streamed_duplicates_resolved(tmp_path):
    frame = pd.DataFrame(
        {
            "model": ["m"] * 5,
            "task": ["t"] * 5,
            "perturbation": ["p"] * 5,
            "example": [1, 1, 2, 3, 3],
            "score": [1.0, 1.0, 0.0, 0.0, 1.0],
        }
    )
    path = tmp_path / "dup.parquet"
    frame.to_parquet(path)
    with pytest.raises(ConflictError, match="example=3"):
        load(path, per_example=False)
    first, report = load(path, per_example=False, duplicates="first")
    assert cell(first, "m", "t", "p") == 1
    assert cell(first, "m", "t", "p", "n_total") == 3
    assert report.duplicates_merged == 1
    assert report.conflicts == 1
    last, _ = load(path, per_example=False, duplicates="last")
    assert cell(last, "m", "t", "p") == 2


def test_inconsistent_factor_values(tmp_path):
    path = write(tmp_path, "f.csv", "model,task,perturbation,shots,correct,total\nm,t,p,0,1,2\nm,u,p,5,1,2\n")
    with pytest.raises(InputError, match="different perturbation factor values"):
        load(path, factors=["shots"])


def test_fractional_scores_kept_per_example(tmp_path):
    path = write(tmp_path, "f1.csv", "model,task,perturbation,example,score\nm,t,p,1,0.25\nm,t,p,2,0.5\n")
    ds, _ = load(path, metric="f1")
    assert ds.attrs["metric_kind"] == "continuous"
    assert np.allclose(ds["score"].sel(model="m", task="t", perturbation="p").values, [0.25, 0.5])
    with pytest.raises(InputError, match="not 0 or 1"):
        load(path, metric="f1", per_example=False)
