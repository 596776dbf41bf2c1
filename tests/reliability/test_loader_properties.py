"""Property tests of the long-table and multi-prompt loaders on generated tables.

Hypothesis generates valid tables, writes them in the loaders' real file
formats and checks that the tensor does not depend on row order, column
order, how the rows are split over files or a UTF-8 byte order mark. It then
applies one random corruption to a valid file and checks that the loader
either loads it with the problem counted in the manifest or raises a
:class:`robustscope.errors.RobustscopeError` that names the file and the
row or value, and never leaves a tensor file behind after an error.

Every property runs ``MAX_EXAMPLES`` generated examples per run (profile
``loader-properties``).
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robustscope import tensor as T
from robustscope.errors import ConflictError, InputError, RobustscopeError
from robustscope.ingest import ingest
from robustscope.ingest.manifest import manifest_path

MAX_EXAMPLES = 40

settings.register_profile(
    "loader-properties",
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROPERTY_SETTINGS = settings.get_profile("loader-properties")

BOM = b"\xef\xbb\xbf"
TABLE_FORMATS = ("csv", "jsonl", "parquet")

# Letters, digits and punctuation that CSV, JSON and Parquet all keep as
# written. Strings that pandas reads as missing ("NA", "null", ...) cannot be
# formed from this alphabet. ``test_csv_na_words_kept_as_labels`` covers them.
NAME_ALPHABET = st.sampled_from(list("abcxyzKLM019_-. é中ß/"))
names = st.text(NAME_ALPHABET, min_size=1, max_size=12).filter(lambda s: s.strip() == s and s.strip() != "")


# --- generated valid tables -------------------------------------------------


@st.composite
def count_tables(draw: st.DrawFn) -> pd.DataFrame:
    """A table of unique (model, task, perturbation) cells with valid counts."""
    models = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    tasks = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    perturbations = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    keys = [(m, t, p) for m in models for t in tasks for p in perturbations]
    chosen = draw(st.lists(st.sampled_from(keys), min_size=1, max_size=len(keys), unique=True))
    rows = []
    for model, task, perturbation in chosen:
        total = draw(st.integers(1, 500))
        correct = draw(st.integers(0, total))
        rows.append({"model": model, "task": task, "perturbation": perturbation, "correct": correct, "total": total})
    return pd.DataFrame(rows)


@st.composite
def example_tables(draw: st.DrawFn) -> pd.DataFrame:
    """A per-example table of 0/1 scores with unique (model, task, perturbation, example) keys."""
    models = draw(st.lists(names, min_size=1, max_size=2, unique=True))
    tasks = draw(st.lists(names, min_size=1, max_size=2, unique=True))
    perturbations = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    examples = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    keys = [(m, t, p, e) for m in models for t in tasks for p in perturbations for e in examples]
    chosen = draw(st.lists(st.sampled_from(keys), min_size=1, max_size=len(keys), unique=True))
    scores = draw(st.lists(st.sampled_from([0, 1]), min_size=len(chosen), max_size=len(chosen)))
    rows = [
        {"model": m, "task": t, "perturbation": p, "example": e, "score": s}
        for (m, t, p, e), s in zip(chosen, scores, strict=True)
    ]
    return pd.DataFrame(rows)


def reference_hash(table: pd.DataFrame) -> str:
    """Hash of the tensor built directly from the records, without any file."""
    if "example" in table.columns:
        ds = T.from_examples(table, dataset="generated")
    else:
        records = table.rename(columns={"correct": "n_correct", "total": "n_total"})
        ds = T.from_counts(records, dataset="generated")
    return T.tensor_hash(ds)


def write_table(table: pd.DataFrame, path: Path, *, bom: bool = False, line_ending: str = "\n") -> Path:
    """Write ``table`` in the format given by the suffix of ``path``."""
    suffix = path.suffix
    if suffix == ".csv":
        text = table.to_csv(index=False, lineterminator=line_ending)
        path.write_bytes((BOM if bom else b"") + text.encode("utf-8"))
    elif suffix == ".jsonl":
        lines = [json.dumps(record, ensure_ascii=False) for record in table.to_dict("records")]
        text = line_ending.join(lines) + line_ending
        path.write_bytes((BOM if bom else b"") + text.encode("utf-8"))
    elif suffix == ".parquet":
        table.to_parquet(path, index=False)
    else:
        raise AssertionError(f"no writer for {suffix}")
    return path


def split_rows(table: pd.DataFrame, parts: int) -> list[pd.DataFrame]:
    bounds = np.linspace(0, len(table), parts + 1).astype(int)
    pieces = [table.iloc[start:stop] for start, stop in zip(bounds[:-1], bounds[1:], strict=True)]
    return [piece for piece in pieces if len(piece)]


# --- long-table: round trips ------------------------------------------------


@PROPERTY_SETTINGS
@given(
    table=st.one_of(count_tables(), example_tables()),
    file_format=st.sampled_from(TABLE_FORMATS),
    order_seed=st.integers(0, 2**32 - 1),
)
def test_long_table_order_invariant(table, file_format, order_seed):
    rng = np.random.default_rng(order_seed)
    shuffled = table.sample(frac=1.0, random_state=rng).reset_index(drop=True)
    shuffled = shuffled[list(rng.permutation(shuffled.columns))]

    with tempfile.TemporaryDirectory() as folder:
        path = write_table(shuffled, Path(folder) / f"table.{file_format}")
        ds = ingest(path, "long-table", dataset="generated")

    assert T.tensor_hash(ds) == reference_hash(table)
    assert ds.attrs["manifest"]["rows"]["dropped"] == 0


@PROPERTY_SETTINGS
@given(
    table=st.one_of(count_tables(), example_tables()),
    parts=st.integers(1, 4),
    formats=st.lists(st.sampled_from(TABLE_FORMATS), min_size=4, max_size=4),
)
def test_long_table_split_over_files(table, parts, formats):
    with tempfile.TemporaryDirectory() as folder:
        for number, piece in enumerate(split_rows(table, parts)):
            write_table(piece.reset_index(drop=True), Path(folder) / f"part{number}.{formats[number]}")
        ds = ingest(Path(folder), "long-table", dataset="generated")

    assert T.tensor_hash(ds) == reference_hash(table)
    assert ds.attrs["manifest"]["rows"]["read"] == len(table)


@PROPERTY_SETTINGS
@given(table=count_tables(), line_ending=st.sampled_from(["\n", "\r\n"]))
def test_csv_bom_and_line_endings(table, line_ending):
    with tempfile.TemporaryDirectory() as folder:
        plain = write_table(table, Path(folder) / "plain.csv")
        marked = write_table(table, Path(folder) / "marked.csv", bom=True, line_ending=line_ending)
        plain_hash = T.tensor_hash(ingest(plain, "long-table", dataset="generated"))
        marked_hash = T.tensor_hash(ingest(marked, "long-table", dataset="generated"))

    assert plain_hash == marked_hash


def test_jsonl_bom_loads(tmp_path):
    table = pd.DataFrame([{"model": "m", "task": "t", "perturbation": "p", "correct": 1, "total": 2}])
    path = write_table(table, tmp_path / "marked.jsonl", bom=True)

    ds = ingest(path, "long-table", dataset="generated")

    assert T.tensor_hash(ds) == reference_hash(table)


@pytest.mark.parametrize("label", ["NA", "null", "None", "nan", "N/A"])
def test_csv_na_words_kept_as_labels(tmp_path, label):
    table = pd.DataFrame(
        [
            {"model": "m", "task": "t", "perturbation": label, "correct": 1, "total": 2},
            {"model": "m", "task": "t", "perturbation": "other", "correct": 2, "total": 2},
        ]
    )
    path = write_table(table, tmp_path / "labels.csv")

    ds = ingest(path, "long-table", dataset="generated")

    assert label in list(ds["perturbation"].values)
    assert ds.attrs["manifest"]["rows"]["dropped"] == 0


# --- NetCDF round trip of awkward labels ------------------------------------


def _has_non_decimal_digit(text: str) -> bool:
    return any(ch.isdigit() and not ch.isdecimal() for ch in text)


# Any Unicode text except lone surrogates (not encodable as UTF-8), NUL and
# digits that are not decimal such as "¹". NUL and such digits are known
# failures with their own tests below.
unicode_names = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=40,
).filter(lambda s: s.strip() != "" and not _has_non_decimal_digit(s))
long_names = st.text(NAME_ALPHABET, min_size=1000, max_size=5000)


@PROPERTY_SETTINGS
@given(
    model=st.one_of(unicode_names, long_names),
    task=st.one_of(unicode_names, long_names),
    perturbations=st.lists(st.one_of(unicode_names, long_names), min_size=1, max_size=3, unique=True),
)
def test_unicode_labels_survive_netcdf(model, task, perturbations):
    records = pd.DataFrame(
        [{"model": model, "task": task, "perturbation": p, "n_correct": i, "n_total": 10} for i, p in enumerate(perturbations)]
    )
    ds = T.from_counts(records, dataset="unicode ✓ 名前")

    with tempfile.TemporaryDirectory() as folder:
        path = T.save(ds, Path(folder) / "tensor.nc")
        loaded = T.load(path)

    assert list(loaded["model"].values) == [model]
    assert list(loaded["task"].values) == [task]
    assert sorted(loaded["perturbation"].values) == sorted(perturbations)
    assert T.tensor_hash(loaded) == T.tensor_hash(ds)


def test_nul_in_label_rejected_cleanly(tmp_path):
    records = pd.DataFrame([{"model": "a\x00b", "task": "t", "perturbation": "p", "n_correct": 1, "n_total": 2}])
    ds = T.from_counts(records, dataset="nul")

    with pytest.raises(RobustscopeError, match="model"):
        T.save(ds, tmp_path / "tensor.nc")

    assert not (tmp_path / "tensor.nc").exists()


def test_superscript_digit_label_sorts(tmp_path):
    records = pd.DataFrame([{"model": "m", "task": "t", "perturbation": p, "n_correct": 1, "n_total": 2} for p in ("¹", "2")])

    ds = T.from_counts(records, dataset="superscript")

    assert sorted(ds["perturbation"].values) == ["2", "¹"]


# --- long-table: corruptions ------------------------------------------------

CORRUPTIONS = (
    "truncate",
    "wrong_type",
    "out_of_range",
    "negative",
    "duplicate_identical",
    "duplicate_conflicting",
    "stray_header",
    "empty_key",
    "empty_count",
    "nan_count",
    "mixed_line_endings",
)


def assert_error_located(error: RobustscopeError, path: Path, *, whole_file: bool = False) -> None:
    """The message names the file, and the row or the value unless the fault concerns the whole file."""
    message = str(error)
    assert str(path) in message, message
    if not whole_file:
        assert "row " in message or "value" in message, message


def corrupt_counts(table: pd.DataFrame, kind: str, file_format: str, rng: np.random.Generator, path: Path) -> str:
    """Write ``table`` to ``path`` with one fault of ``kind``; return what a load must do.

    The returned expectation is ``"error"`` (must raise), ``"counted"`` (must
    load with a manifest count), ``"same"`` (must load the clean tensor) or
    ``"either"`` (may load or raise, but only in the documented ways).
    """
    table = table.copy().astype({"correct": object, "total": object})
    row = int(rng.integers(len(table)))
    expectation = "error"
    if kind == "wrong_type":
        table.loc[row, str(rng.choice(["correct", "total"]))] = "twelve"
    elif kind == "out_of_range":
        table.loc[row, "correct"] = int(table.loc[row, "total"]) + 1
    elif kind == "negative":
        table.loc[row, "correct"] = -1
    elif kind == "duplicate_identical":
        table = pd.concat([table, table.iloc[[row]]], ignore_index=True)
        expectation = "counted"
    elif kind == "duplicate_conflicting":
        clash = table.iloc[[row]].copy()
        total = int(clash["total"].iloc[0])
        clash["total"] = total + 1
        table = pd.concat([table, clash], ignore_index=True)
    elif kind == "empty_key":
        table.loc[row, str(rng.choice(["model", "task", "perturbation"]))] = ""
        # Dropping the only row leaves nothing, which is an error about the whole file.
        expectation = "counted" if len(table) > 1 else "either"
    elif kind == "empty_count":
        table.loc[row, "correct"] = None
    elif kind == "nan_count":
        table.loc[row, "total"] = float("nan")
    elif kind in ("truncate", "stray_header", "mixed_line_endings"):
        pass
    else:
        raise AssertionError(kind)

    if file_format == "parquet":
        # Parquet columns hold one type, so store everything as text.
        table = table.astype(str).replace({"None": None, "nan": None})
    write_table(table, path)

    raw = path.read_bytes()
    if kind == "truncate":
        cut = int(rng.integers(0, len(raw)))
        path.write_bytes(raw[:cut])
        expectation = "either"
    elif kind == "stray_header":
        if file_format != "csv":
            return "same"
        lines = raw.split(b"\n")
        position = int(rng.integers(2, len(lines)))
        lines.insert(position, lines[0])
        path.write_bytes(b"\n".join(lines))
        expectation = "counted"
    elif kind == "mixed_line_endings":
        if file_format == "parquet":
            return "same"
        lines = raw.split(b"\n")
        path.write_bytes(b"".join(line + (b"\r\n" if i % 2 else b"\n") for i, line in enumerate(lines[:-1])))
        expectation = "same"
    return expectation


@PROPERTY_SETTINGS
@given(
    table=count_tables(),
    file_format=st.sampled_from(TABLE_FORMATS),
    kind=st.sampled_from(CORRUPTIONS),
    seed=st.integers(0, 2**32 - 1),
)
def test_long_table_corruption_reported(table, file_format, kind, seed):
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"table.{file_format}"
        output = Path(folder) / "out" / "tensor.nc"
        expectation = corrupt_counts(table, kind, file_format, rng, path)
        try:
            ds = ingest(path, "long-table", dataset="generated", output=output)
        except RobustscopeError as error:
            assert expectation in ("error", "either"), f"{kind}: unexpected error {error}"
            assert_error_located(error, path, whole_file=expectation == "either")
            assert not output.exists()
            assert not manifest_path(output).exists()
            return

        assert expectation != "error", f"{kind}: loaded without an error"
        T.validate(T.load(output))
        manifest = ds.attrs["manifest"]
        if expectation == "same":
            assert T.tensor_hash(ds) == reference_hash(table)
        if expectation == "counted":
            counted = manifest["rows"]["dropped"] + manifest["duplicates_merged"]
            assert counted >= 1, manifest


@PROPERTY_SETTINGS
@given(table=count_tables(), seed=st.integers(0, 2**32 - 1))
def test_jsonl_bad_line_names_line(table, seed):
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as folder:
        path = write_table(table, Path(folder) / "table.jsonl")
        lines = path.read_text(encoding="utf-8").splitlines()
        line = int(rng.integers(len(lines)))
        lines[line] = lines[line][: int(rng.integers(1, len(lines[line])))]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")

        with pytest.raises(InputError) as caught:
            ingest(path, "long-table", dataset="generated")

    assert f"row {line + 1}" in str(caught.value)
    assert str(path) in str(caught.value)


# --- multi-prompt: generated folders ----------------------------------------

ACCURACY_DIR = "paraphrases accuracies"
AGGREGATED_DIR = "paraphrases accuracies and rankings (aggregated)"
model_names = st.text(st.sampled_from(list("abcdefgh-123.")), min_size=1, max_size=10)
task_names = st.text(st.sampled_from(list("abcdefgh_")), min_size=1, max_size=10)


@st.composite
def multi_prompt_data(draw: st.DrawFn) -> dict:
    """Tasks -> paraphrases (index, validity, template) and accuracies k/100 per model (None = empty cell)."""
    tasks = draw(st.lists(task_names, min_size=1, max_size=3, unique=True))
    models = draw(st.lists(model_names, min_size=1, max_size=4, unique=True))
    data = {"models": models, "tasks": {}}
    for task in tasks:
        indices = draw(st.lists(st.integers(0, 300), min_size=1, max_size=6, unique=True))
        paraphrases = {}
        for index in indices:
            paraphrases[index] = {
                "valid": draw(st.booleans()),
                "template": draw(st.text(min_size=0, max_size=30).filter(lambda s: "\x00" not in s)),
                "accuracy": [draw(st.one_of(st.none(), st.integers(0, 100))) for _ in models],
            }
        data["tasks"][task] = paraphrases
    # At least one valid paraphrase with a value, or the tensor would be empty
    # (``test_multi_prompt_all_cells_empty`` covers that case).
    first = next(iter(next(iter(data["tasks"].values())).values()))
    first["valid"] = True
    if first["accuracy"][0] is None:
        first["accuracy"][0] = draw(st.integers(0, 100))
    return data


def write_multi_prompt(
    data: dict,
    root: Path,
    *,
    rng: np.random.Generator | None = None,
    bom: bool = False,
) -> Path:
    """Write ``data`` in the published layout; ``rng`` shuffles rows, model columns and JSON keys."""
    for task, paraphrases in data["tasks"].items():
        columns = {"paraphrase idx": list(paraphrases)}
        for j, model in enumerate(data["models"]):
            columns[f"{model}_acc"] = [
                "" if p["accuracy"][j] is None else f"{p['accuracy'][j] / 100:.2f}" for p in paraphrases.values()
            ]
        frame = pd.DataFrame(columns)
        metadata = {
            str(index): {"template": p["template"], "method": "generated", "correct": p["valid"]}
            for index, p in paraphrases.items()
        }
        if rng is not None:
            frame = frame.sample(frac=1.0, random_state=rng)
            model_columns = [c for c in frame.columns if c != "paraphrase idx"]
            frame = frame[["paraphrase idx"] + list(rng.permutation(model_columns))]
            keys = list(metadata)
            metadata = {key: metadata[key] for key in rng.permutation(keys)}
        csv_path = root / "data" / ACCURACY_DIR / "BBH" / f"{task}.csv"
        json_path = root / "data" / AGGREGATED_DIR / "BBH" / f"{task}.json"
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        csv_path.write_bytes((BOM if bom else b"") + frame.to_csv(index=False).encode("utf-8"))
        json_path.write_text(json.dumps({"paraphrases": metadata}, ensure_ascii=False), encoding="utf-8")
    return root


@PROPERTY_SETTINGS
@given(data=multi_prompt_data(), order_seed=st.integers(0, 2**32 - 1), bom=st.booleans())
def test_multi_prompt_order_invariant(data, order_seed, bom):
    with tempfile.TemporaryDirectory() as folder:
        canonical = write_multi_prompt(data, Path(folder) / "canonical")
        shuffled = write_multi_prompt(data, Path(folder) / "shuffled", rng=np.random.default_rng(order_seed), bom=bom)
        expected = ingest(canonical, "multi-prompt")
        ds = ingest(shuffled, "multi-prompt")

    assert T.tensor_hash(ds) == T.tensor_hash(expected)

    cells = T.observed_cells(ds).set_index(["model", "task", "perturbation"])
    expected_counts = {}
    for task, paraphrases in data["tasks"].items():
        for index, p in paraphrases.items():
            for model, accuracy in zip(data["models"], p["accuracy"], strict=True):
                if p["valid"] and accuracy is not None:
                    expected_counts[(model, task, str(index))] = accuracy
    assert len(cells) == len(expected_counts)
    for key, accuracy in expected_counts.items():
        assert cells.loc[key, "n_total"] == 100
        assert cells.loc[key, "n_correct"] == accuracy

    manifest = ds.attrs["manifest"]
    invalid = sum(not p["valid"] for paraphrases in data["tasks"].values() for p in paraphrases.values())
    assert sum(manifest["dropped_rows_by_reason"].values()) == invalid


MULTI_PROMPT_CORRUPTIONS = (
    "truncate_csv",
    "accuracy_above_one",
    "negative_accuracy",
    "non_numeric_accuracy",
    "missing_index_column",
    "stray_header",
    "invalid_json",
    "index_without_metadata",
    "empty_csv",
    "mixed_line_endings",
)


def corrupt_multi_prompt(root: Path, data: dict, kind: str, rng: np.random.Generator) -> tuple[str, Path]:
    """Apply one fault of ``kind`` to the first task's files; return the expectation and the file changed."""
    task = next(iter(data["tasks"]))
    csv_path = root / "data" / ACCURACY_DIR / "BBH" / f"{task}.csv"
    json_path = root / "data" / AGGREGATED_DIR / "BBH" / f"{task}.json"
    frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    row = int(rng.integers(len(frame)))
    column = f"{data['models'][0]}_acc"
    expectation = "error"
    if kind == "truncate_csv":
        raw = csv_path.read_bytes()
        csv_path.write_bytes(raw[: int(rng.integers(0, len(raw)))])
        return "either", csv_path
    if kind == "accuracy_above_one":
        frame.loc[row, column] = "1.5"
    elif kind == "negative_accuracy":
        frame.loc[row, column] = "-0.2"
    elif kind == "non_numeric_accuracy":
        frame.loc[row, column] = "n/a"
    elif kind == "missing_index_column":
        frame = frame.drop(columns=["paraphrase idx"])
    elif kind == "stray_header":
        header = pd.DataFrame([dict(zip(frame.columns, frame.columns, strict=True))])
        frame = pd.concat([frame.iloc[:row], header, frame.iloc[row:]], ignore_index=True)
    elif kind == "invalid_json":
        text = json_path.read_text(encoding="utf-8")
        json_path.write_text(text[: int(rng.integers(0, len(text)))], encoding="utf-8")
        return "error", json_path
    elif kind == "index_without_metadata":
        frame.loc[row, "paraphrase idx"] = "99999"
    elif kind == "empty_csv":
        csv_path.write_bytes(b"")
        return "error", csv_path
    elif kind == "mixed_line_endings":
        lines = csv_path.read_bytes().split(b"\n")
        csv_path.write_bytes(b"".join(line + (b"\r\n" if i % 2 else b"\n") for i, line in enumerate(lines[:-1])))
        return "same", csv_path
    else:
        raise AssertionError(kind)
    csv_path.write_text(frame.to_csv(index=False), encoding="utf-8")
    return expectation, csv_path


@PROPERTY_SETTINGS
@given(data=multi_prompt_data(), kind=st.sampled_from(MULTI_PROMPT_CORRUPTIONS), seed=st.integers(0, 2**32 - 1))
def test_multi_prompt_corruption_reported(data, kind, seed):
    rng = np.random.default_rng(seed)
    # A task the corruption never touches keeps the tensor non-empty, because
    # an empty tensor is a known failure (``test_multi_prompt_all_cells_empty``).
    control = {0: {"valid": True, "template": "control", "accuracy": [50] * len(data["models"])}}
    data = {"models": data["models"], "tasks": {**data["tasks"], "control": control}}
    with tempfile.TemporaryDirectory() as folder:
        clean = ingest(write_multi_prompt(data, Path(folder) / "clean"), "multi-prompt")
        root = write_multi_prompt(data, Path(folder) / "broken")
        expectation, changed = corrupt_multi_prompt(root, data, kind, rng)
        output = Path(folder) / "out" / "tensor.nc"
        try:
            ds = ingest(root, "multi-prompt", output=output)
        except RobustscopeError as error:
            assert expectation in ("error", "either"), f"{kind}: unexpected error {error}"
            assert str(changed) in str(error), str(error)
            assert not output.exists()
            return

        assert expectation != "error", f"{kind}: loaded without an error"
        T.validate(T.load(output))
        if expectation == "same":
            assert T.tensor_hash(ds) == T.tensor_hash(clean)


def test_multi_prompt_fractional_index_rejected(tmp_path):
    data = {"models": ["m"], "tasks": {"t": {1: {"valid": True, "template": "x", "accuracy": [50]}}}}
    root = write_multi_prompt(data, tmp_path)
    csv_path = root / "data" / ACCURACY_DIR / "BBH" / "t.csv"
    csv_path.write_text("paraphrase idx,m_acc\n1.5,0.5\n", encoding="utf-8")

    with pytest.raises(InputError, match="paraphrase index"):
        ingest(root, "multi-prompt")


@pytest.mark.parametrize(
    "payload",
    [
        {"paraphrases": [{"template": "x", "correct": True}]},
        {"paraphrases": {"one": {"template": "x", "correct": True}}},
        {"paraphrases": {"1": "not an object"}},
    ],
    ids=["list", "text-key", "text-entry"],
)
def test_multi_prompt_bad_metadata_shape(tmp_path, payload):
    data = {"models": ["m"], "tasks": {"t": {1: {"valid": True, "template": "x", "accuracy": [50]}}}}
    root = write_multi_prompt(data, tmp_path)
    json_path = root / "data" / AGGREGATED_DIR / "BBH" / "t.json"
    json_path.write_text(json.dumps(payload), encoding="utf-8")

    with pytest.raises(InputError) as caught:
        ingest(root, "multi-prompt")

    assert str(json_path) in str(caught.value)


def test_multi_prompt_all_cells_empty(tmp_path):
    data = {"models": ["m"], "tasks": {"t": {0: {"valid": True, "template": "", "accuracy": [None]}}}}
    root = write_multi_prompt(data, tmp_path)

    with pytest.raises(InputError):
        ingest(root, "multi-prompt")


def test_generated_accuracies_are_whole_counts():
    """Guard for the generator: two-decimal accuracies are exact multiples of 1/100."""
    for k in range(101):
        assert math.isclose(float(f"{k / 100:.2f}") * 100, k, abs_tol=1e-9)
