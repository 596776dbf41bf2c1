"""Loader for long tables: CSV, Parquet and JSON Lines with a column mapping.

One row is either

* aggregated: a (model, task, perturbation) cell with ``correct`` and
  ``total`` counts, or with an ``accuracy`` (the ``score`` role) and a
  ``count`` of examples; or
* per example: a (model, task, perturbation, example) row with a 0/1 or
  float ``score`` and optionally the model's ``prediction``.

The ``mapping`` names the column that plays each role; roles not named are
looked up under their own name (``model``, ``task``, ...). Perturbation
factors (for example ``shots`` or ``temperature``) become 1-D coordinates
along ``perturbation``; when no perturbation column exists the perturbation
label is built from the factor values, e.g. ``"shots=0|temperature=0.7"``.

CSV and JSON Lines files are read with pandas. Per-example Parquet files are
aggregated to counts inside DuckDB (``per_example=False``) with a bounded
memory limit, so inputs far larger than memory can be ingested.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import tensor as _tensor
from .._logging import get_logger
from ..errors import ConflictError, InputError, RobustscopeError
from . import register_loader
from .manifest import IngestReport

log = get_logger("ingest.long_table")

ROLES = ("model", "task", "perturbation", "example", "score", "prediction", "correct", "total", "count", "metric")
KEY_ROLES = ("model", "task", "perturbation")
CSV_SUFFIXES = (".csv", ".tsv")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")
SUFFIXES = CSV_SUFFIXES + JSONL_SUFFIXES + PARQUET_SUFFIXES

# Text scores accepted besides numbers (case-insensitive). "C"/"I" follow the
# correct/incorrect convention of several evaluation harnesses.
SCORE_WORDS = {
    "true": 1.0,
    "false": 0.0,
    "correct": 1.0,
    "incorrect": 0.0,
    "yes": 1.0,
    "no": 0.0,
    "c": 1.0,
    "i": 0.0,
}
HEADER_REASON = "repeated header row"
EMPTY_SCORE_REASON = "empty score"
ROUNDING_TOLERANCE = 1e-6
DEFAULT_MEMORY_LIMIT = "1GB"
MAX_LISTED_CONFLICTS = 5
# Largest span of integer example ids counted with a bitstring per cell
# (12.5 kB per cell at this span).
MAX_BITSTRING_SPAN = 100_000


def _empty_key_reason(role: str) -> str:
    return f"empty {role} value"


@dataclass
class ColumnMap:
    """The columns that play each role, after defaults are filled in."""

    columns: dict[str, str]
    factors: list[str] = field(default_factory=list)

    def get(self, role: str) -> str | None:
        return self.columns.get(role)


def _resolve_mapping(mapping: Mapping[str, str] | None, factors: Sequence[str] | None, found: Sequence[str], path: Path) -> ColumnMap:
    """Match roles to the columns found in one file and check that the required ones exist."""
    mapping = dict(mapping or {})
    unknown = sorted(set(mapping) - set(ROLES))
    if unknown:
        raise RobustscopeError(f"unknown mapping key(s) {', '.join(unknown)}; valid keys: {', '.join(ROLES)}")
    found_set = set(found)
    columns: dict[str, str] = {}
    for role in ROLES:
        column = mapping.get(role, role)
        if column in found_set:
            columns[role] = column
        elif role in mapping:
            raise _missing_columns_error([mapping[role]], found, mapping, path)
    factor_list = list(factors or [])
    missing_factors = [f for f in factor_list if f not in found_set]
    if missing_factors:
        raise _missing_columns_error(missing_factors, found, mapping, path)

    required = ["model", "task"]
    if "perturbation" not in columns and not factor_list:
        required.append("perturbation")
    missing = [mapping.get(r, r) for r in required if r not in columns]
    if missing:
        raise _missing_columns_error(missing, found, mapping, path)
    has_counts = "correct" in columns and "total" in columns
    has_accuracy = "score" in columns and "count" in columns
    has_examples = "example" in columns and "score" in columns
    if not (has_counts or has_accuracy or has_examples):
        raise InputError(
            "the table has neither count columns (correct and total), an accuracy with a count, "
            "nor per-example rows (example and score)",
            path=path,
            hint=f"columns found: {', '.join(map(str, found))}; map them with mapping keys "
            f"correct/total, score/count or example/score (mapping given: {mapping or '{}'})",
        )
    return ColumnMap(columns, factor_list)


def _missing_columns_error(missing: Sequence[str], found: Sequence[str], mapping: Mapping[str, str], path: Path) -> InputError:
    return InputError(
        f"missing required column(s) {', '.join(map(str, missing))}",
        path=path,
        hint=f"columns found: {', '.join(map(str, found))}; mapping keys: {', '.join(ROLES)} "
        f"(mapping given: {dict(mapping) or '{}'}); name the right column with mapping={{role: column}}",
    )


def _row_kind(columns: ColumnMap) -> str:
    if columns.get("correct") and columns.get("total"):
        return "counts"
    if columns.get("example") and columns.get("score"):
        return "examples"
    return "accuracy"


def list_files(source: str | Path | Sequence[str | Path]) -> list[Path]:
    """Return the table files named by ``source``: one file, a list of files, or a folder (searched recursively).

    Raises
    ------
    InputError
        When a path does not exist, has an unsupported suffix, or a folder has
        no table file.
    """
    sources = [source] if isinstance(source, (str, Path)) else list(source)
    files: list[Path] = []
    for item in sources:
        path = Path(item)
        if not path.exists():
            raise InputError("file or folder not found", path=path, hint="check the path")
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
            if not found:
                raise InputError(
                    "folder has no table files",
                    path=path,
                    hint=f"expected files ending in {', '.join(SUFFIXES)}",
                )
            files.extend(found)
        elif path.suffix.lower() in SUFFIXES:
            files.append(path)
        else:
            raise InputError(
                f"unsupported file type {path.suffix or '(no suffix)'!r}",
                path=path,
                hint=f"long tables are read from files ending in {', '.join(SUFFIXES)}",
            )
    if not files:
        raise InputError("no input files given", hint="pass a file, a list of files or a folder")
    return files


def _check_field_counts(path: Path, separator: str) -> None:
    """Raise InputError at the first data row whose number of fields differs from the header's.

    pandas reads a first data row with one field more than the header as an
    index column, which shifts every column by one. It also pads short rows
    with missing values. So the ``csv`` module counts the fields before pandas
    reads the file. Rows are counted as pandas counts them: data rows from 1
    after the header, skipping empty lines.
    """
    # The csv module rejects fields over 128 KiB by default, and pandas has no such limit.
    previous_limit = csv.field_size_limit(sys.maxsize)
    try:
        _compare_field_counts(path, separator)
    finally:
        csv.field_size_limit(previous_limit)


def _compare_field_counts(path: Path, separator: str) -> None:
    with open(path, encoding="utf-8-sig", newline="") as stream:
        reader = csv.reader(stream, delimiter=separator)
        header: list[str] | None = None
        row = 0
        for fields in reader:
            if not fields:
                continue
            if header is None:
                header = fields
                continue
            row += 1
            if len(fields) != len(header):
                raise InputError(
                    f"row has {len(fields)} fields but the header has {len(header)}",
                    path=path,
                    row=row,
                    value=separator.join(fields),
                    hint="check for an unquoted separator inside a value, or a missing or extra value in that row",
                )


def _read_csv(path: Path) -> pd.DataFrame:
    if path.stat().st_size == 0:
        raise InputError("file is empty", path=path, hint="pass a table with a header row and data rows")
    separator = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        _check_field_counts(path, separator)
    except (csv.Error, UnicodeDecodeError) as error:
        raise InputError(f"cannot parse the file as CSV: {error}", path=path, hint="check the delimiter, quoting and encoding (UTF-8)") from error
    except OSError as error:
        raise InputError(f"cannot read the file: {error}", path=path) from error
    try:
        frame = pd.read_csv(path, sep=separator, dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError as error:
        raise InputError("file has no header or rows", path=path) from error
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise InputError(f"cannot parse the file as CSV: {error}", path=path, hint="check the delimiter, quoting and encoding (UTF-8)") from error
    except OSError as error:
        raise InputError(f"cannot read the file: {error}", path=path) from error
    return frame


def _read_jsonl(path: Path) -> pd.DataFrame:
    if path.stat().st_size == 0:
        raise InputError("file is empty", path=path, hint="pass a file with one JSON object per line")
    records: list[dict[str, Any]] = []
    try:
        with open(path, encoding="utf-8-sig") as stream:
            for number, line in enumerate(stream, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise InputError(f"invalid JSON: {error.msg}", path=path, row=number, value=line.strip()[:80]) from error
                if not isinstance(record, dict):
                    raise InputError("line is not a JSON object", path=path, row=number, value=line.strip()[:80])
                records.append(record)
    except UnicodeDecodeError as error:
        raise InputError(f"file is not UTF-8 text: {error}", path=path) from error
    except OSError as error:
        raise InputError(f"cannot read the file: {error}", path=path) from error
    if not records:
        raise InputError("file has no JSON records", path=path)
    return pd.DataFrame.from_records(records)


def _connect(memory_limit: str, threads: int | None = None) -> Any:
    import duckdb

    connection = duckdb.connect()
    connection.execute(f"SET memory_limit = '{memory_limit}'")
    connection.execute("SET preserve_insertion_order = false")
    connection.execute("SET enable_progress_bar = false")
    connection.execute(f"SET temp_directory = '{tempfile.gettempdir()}/robustscope-duckdb'")
    if threads:
        connection.execute(f"SET threads = {int(threads)}")
    return connection


def _sql_string(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _sql_identifier(name: str) -> str:
    return '"' + str(name).replace('"', '""') + '"'


def parquet_columns(connection: Any, files: Sequence[Path]) -> list[str]:
    """Return the union of column names of ``files`` (read from the Parquet footers only)."""
    names: list[str] = []
    for path in files:
        try:
            rows = connection.execute(f"DESCRIBE SELECT * FROM read_parquet({_sql_string(str(path))})").fetchall()
        except Exception as error:  # duckdb raises its own error hierarchy
            raise InputError(f"cannot read the file as Parquet: {error}", path=path, hint="check that the file is a complete Parquet file") from error
        for row in rows:
            if row[0] not in names:
                names.append(row[0])
    return names


def _parquet_source(files: Sequence[Path], *, row_numbers: bool = True, filename: bool = True) -> str:
    listing = ", ".join(_sql_string(str(p)) for p in files)
    return (
        f"read_parquet([{listing}], filename = {str(filename).lower()}, "
        f"file_row_number = {str(row_numbers).lower()}, union_by_name = true)"
    )


def _distinct_examples_sql(connection: Any, source: str) -> str:
    """Return the SQL aggregate that counts distinct scored examples per group.

    Integer example ids within a span of ``MAX_BITSTRING_SPAN`` are counted
    with ``bitstring_agg`` (one bit per possible id), which is several times
    faster than ``count(DISTINCT ...)``, the fallback for other ids.
    """
    fallback = "count(DISTINCT _example) FILTER (WHERE _score IS NOT NULL)"
    try:
        low, high = connection.execute(f"SELECT min(_example), max(_example) FROM {source}").fetchone()
    except Exception:  # a type without an order, for instance
        return fallback
    integer_types = (int, np.integer)
    if not isinstance(low, integer_types) or isinstance(low, bool) or not isinstance(high, integer_types):
        return fallback
    if high - low + 1 > MAX_BITSTRING_SPAN:
        return fallback
    return (
        f"bit_count(bitstring_agg(CAST(_example AS BIGINT) - {int(low)}, 0, {int(high - low)}) "
        "FILTER (WHERE _score IS NOT NULL))"
    )


def _read_parquet_rows(connection: Any, path: Path, columns: Sequence[str]) -> pd.DataFrame:
    """Read the named columns of one Parquet file into pandas (only for tables that must be held whole)."""
    selected = ", ".join(_sql_identifier(c) for c in dict.fromkeys(columns))
    try:
        frame = connection.execute(f"SELECT {selected} FROM read_parquet({_sql_string(str(path))})").df()
    except Exception as error:
        raise InputError(f"cannot read the file as Parquet: {error}", path=path) from error
    if frame.empty:
        raise InputError("file has no rows", path=path)
    return frame


def _drop_repeated_headers(frame: pd.DataFrame, path: Path, report: IngestReport) -> pd.DataFrame:
    """Drop rows whose every cell repeats its column name (left by concatenating CSV files)."""
    data_columns = [c for c in frame.columns if c != "_row"]
    header = pd.Series([str(c) for c in data_columns], index=data_columns)
    repeated = frame[data_columns].astype(str).eq(header, axis=1).all(axis=1)
    count = int(repeated.sum())
    if count:
        first = int(frame.loc[repeated, "_row"].iloc[0])
        report.drop(HEADER_REASON, rows=count, where=f"{path.name} row {first}")
        log.info("%s: dropped %d repeated header rows", path, count)
    return frame.loc[~repeated]


def _first_bad(frame: pd.DataFrame, mask: pd.Series, path: Path, column: str, message: str, hint: str | None = None) -> InputError:
    position = int(np.flatnonzero(mask.to_numpy())[0])
    row = frame.iloc[position]
    return InputError(message, path=path, row=int(row["_row"]), column=column, value=row[column], hint=hint)


def _parse_numbers(frame: pd.DataFrame, column: str, path: Path, what: str) -> pd.Series:
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() & frame[column].notna()
    if bad.any():
        raise _first_bad(frame, bad, path, column, f"{what} is not a number", hint=f"{what} must be numeric")
    return values


def parse_scores(frame: pd.DataFrame, column: str, path: Path) -> pd.Series:
    """Convert a score column to floats, accepting numbers, booleans and the words in ``SCORE_WORDS``.

    Raises
    ------
    InputError
        Naming the row and value of the first score that is neither.
    """
    raw = frame[column]
    if pd.api.types.is_bool_dtype(raw.dtype):
        return raw.astype(float)
    values = pd.to_numeric(raw, errors="coerce")
    text = raw.loc[values.isna() & raw.notna()]
    if len(text):
        words = text.map(lambda v: SCORE_WORDS.get(str(v).strip().lower(), np.nan) if not isinstance(v, bool) else float(v))
        values = values.astype(float)
        values.loc[words.index] = words
        unknown = values.isna() & raw.notna()
        if unknown.any():
            raise _first_bad(
                frame,
                unknown,
                path,
                column,
                "unknown score value",
                hint=f"scores must be numbers or one of {', '.join(sorted(SCORE_WORDS))} (any case)",
            )
    return values.astype(float)


def _check_range(frame: pd.DataFrame, values: pd.Series, column: str, path: Path, what: str) -> None:
    outside = (values < 0) | (values > 1)
    if outside.any():
        raise _first_bad(frame, outside, path, column, f"{what} is outside [0, 1]", hint="accuracies and 0/1 scores must be proportions, not percentages")


def _drop_empty_keys(frame: pd.DataFrame, columns: ColumnMap, roles: Sequence[str], path: Path, report: IngestReport) -> pd.DataFrame:
    for role in roles:
        column = columns.get(role)
        if column is None:
            continue
        empty = frame[column].isna() | frame[column].astype(str).str.strip().eq("")
        if empty.any():
            first = int(frame.loc[empty, "_row"].iloc[0])
            report.drop(_empty_key_reason(role), rows=int(empty.sum()), where=f"{path.name} row {first}")
            frame = frame.loc[~empty]
    for factor in columns.factors:
        empty = frame[factor].isna()
        if empty.any():
            first = int(frame.loc[empty, "_row"].iloc[0])
            report.drop(f"empty perturbation factor {factor!r}", rows=int(empty.sum()), where=f"{path.name} row {first}")
            frame = frame.loc[~empty]
    return frame


def _standardise(frame: pd.DataFrame, columns: ColumnMap, kind: str, metric: str, path: Path, report: IngestReport) -> pd.DataFrame:
    """Validate one file's rows and return them under the standard column names."""
    key_roles = ["model", "task", "perturbation"] + (["example"] if kind == "examples" else [])
    frame = _drop_empty_keys(frame, columns, key_roles, path, report)
    out = pd.DataFrame({"_row": frame["_row"].to_numpy()}, index=frame.index)
    for role in key_roles:
        column = columns.get(role)
        if column is not None:
            out[role] = frame[column].map(str)
    for factor in columns.factors:
        out[factor] = frame[factor]
    if columns.get("metric"):
        out["metric"] = frame[columns.get("metric")].map(str)

    if kind == "counts":
        correct = _parse_numbers(frame, columns.get("correct"), path, "correct count")
        total = _parse_numbers(frame, columns.get("total"), path, "total count")
        for values, column in ((correct, columns.get("correct")), (total, columns.get("total"))):
            bad = values.isna() | (values != np.round(values)) | (values < 0)
            if bad.any():
                raise _first_bad(frame, bad, path, column, "count must be a whole number >= 0")
        too_many = correct > total
        if too_many.any():
            raise _first_bad(frame, too_many, path, columns.get("correct"), f"correct count is larger than the total in column {columns.get('total')!r}")
        empty_total = total == 0
        if empty_total.any():
            raise _first_bad(frame, empty_total, path, columns.get("total"), "total count is 0", hint="remove cells with no examples")
        out["n_correct"] = correct.astype(np.int64)
        out["n_total"] = total.astype(np.int64)
        return out

    score_column = columns.get("score")
    scores = parse_scores(frame, score_column, path)
    empty = scores.isna()
    if empty.any():
        first = int(frame.loc[empty, "_row"].iloc[0])
        report.drop(EMPTY_SCORE_REASON, rows=int(empty.sum()), where=f"{path.name} row {first}")
        frame, out, scores = frame.loc[~empty], out.loc[~empty], scores.loc[~empty]
    if metric == "accuracy" or kind == "accuracy":
        _check_range(frame, scores, score_column, path, "accuracy" if kind == "accuracy" else "score")

    if kind == "accuracy":
        count_column = columns.get("count")
        counts = _parse_numbers(frame, count_column, path, "example count")
        bad = counts.isna() | (counts != np.round(counts)) | (counts <= 0)
        if bad.any():
            raise _first_bad(frame, bad, path, count_column, "example count must be a whole number > 0")
        correct = scores * counts
        fractional = (correct - np.round(correct)).abs() > ROUNDING_TOLERANCE * counts.clip(lower=1)
        if fractional.any():
            raise _first_bad(
                frame,
                fractional,
                path,
                score_column,
                f"accuracy times the count in {count_column!r} is not a whole number of correct answers",
                hint="check that the count is the number of examples behind the accuracy",
            )
        out["n_correct"] = np.round(correct).astype(np.int64)
        out["n_total"] = counts.astype(np.int64)
        return out

    out["score"] = scores
    if columns.get("prediction"):
        prediction = frame[columns.get("prediction")]
        out["prediction"] = prediction.map(lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
    return out


def format_factor_value(value: object) -> str:
    """Format one factor value for a perturbation label (``0.0`` -> ``0``, control characters escaped)."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (np.integer, np.floating)):
        return str(value.item())
    return str(value).encode("unicode_escape").decode("ascii") if any(ch in str(value) for ch in "\n\t\r") else str(value)


def add_perturbation_labels(
    frame: pd.DataFrame,
    factors: Sequence[str],
    *,
    label_values: Mapping[str, Mapping[object, str]] | None = None,
    label_names: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Fill the ``perturbation`` column from the factor columns (``"a=1|b=x"``).

    ``label_values`` replaces a factor's values in the label (for example a
    long instruction text by its index); ``label_names`` renames factors in
    the label. The factor columns themselves are left unchanged.
    """
    label_values = label_values or {}
    label_names = label_names or {}
    parts = []
    for factor in factors:
        replace = label_values.get(factor)
        typed = frame[factor] if replace is not None else _typed_factor(frame[factor])
        values = typed.map(lambda v, replace=replace: replace[v] if replace is not None else format_factor_value(v))
        parts.append(label_names.get(factor, factor) + "=" + values.astype(str))
    frame = frame.copy()
    label = parts[0]
    for part in parts[1:]:
        label = label + "|" + part
    frame["perturbation"] = label
    return frame


def perturbation_info(frame: pd.DataFrame, factors: Sequence[str], structure: str, source: str) -> pd.DataFrame | None:
    """Return the factor values per perturbation, checking that each label has one set of values.

    Raises
    ------
    InputError
        When one perturbation label appears with two different factor values.
    """
    if not factors:
        return None
    index = ["task", "perturbation"] if structure == "nested" else ["perturbation"]
    table = frame[index + list(factors)].copy()
    for factor in factors:
        table[factor] = _typed_factor(table[factor])
    table = table.drop_duplicates()
    clash = table.duplicated(index, keep=False)
    if clash.any():
        example = table.loc[clash].head(2)
        raise InputError(
            "one perturbation label has different perturbation factor values",
            path=source,
            column="perturbation",
            value=example.to_dict("records"),
            hint="each perturbation must have one value per factor; drop the perturbation column to build labels from the factors",
        )
    return table.set_index(index)


def _typed_factor(values: pd.Series) -> pd.Series:
    """Use numbers for a factor whose every value is numeric, text otherwise."""
    if pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
        return values
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all():
        return numeric
    return values.map(str)


def check_single_metric(frame: pd.DataFrame, metric: str | None, source: str) -> str | None:
    """Return the metric named by a metric column, or raise when the table mixes metrics."""
    if "metric" not in frame.columns:
        return metric
    names = sorted(frame["metric"].unique())
    if len(names) > 1:
        raise InputError(
            f"the table mixes {len(names)} metrics",
            path=source,
            column="metric",
            value=names[:6],
            hint="a tensor holds one metric; split the table by metric and ingest each part",
        )
    if metric not in (None, "accuracy") and names and names[0] != metric:
        raise InputError(f"metric column says {names[0]!r} but metric={metric!r} was requested", path=source, column="metric", value=names[0])
    return names[0] if names else metric


@dataclass
class ParquetAggregate:
    """SQL expressions for the roles of a per-example Parquet table, aggregated to counts in DuckDB.

    ``expressions`` maps ``model``, ``task``, ``example``, ``score`` and
    optionally ``perturbation`` to SQL expressions over the table's columns;
    ``factors`` maps each perturbation factor's output name to its expression.
    """

    expressions: dict[str, str]
    factors: dict[str, str] = field(default_factory=dict)


def _score_sql(expression: str, column_type: str) -> str:
    if column_type.upper() in ("VARCHAR", "TEXT", "STRING"):
        cases = " ".join(f"WHEN {_sql_string(word)} THEN {value}" for word, value in SCORE_WORDS.items())
        # The cast keeps the query valid for a file whose own score column is numeric,
        # when other files of the same scan store scores as text.
        return f"(CASE lower(trim(CAST({expression} AS VARCHAR))) {cases} ELSE TRY_CAST({expression} AS DOUBLE) END)"
    return f"TRY_CAST({expression} AS DOUBLE)"


def aggregate_parquet(
    files: Sequence[Path],
    spec: ParquetAggregate,
    *,
    score_type: str,
    metric: str,
    duplicates: str,
    report: IngestReport,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
    threads: int | None = None,
) -> pd.DataFrame:
    """Aggregate per-example Parquet rows to (model, task, perturbation) counts inside DuckDB.

    The files are scanned once with a SQL ``GROUP BY``; only the aggregated
    cells reach pandas, so memory stays within DuckDB's ``memory_limit``
    (DuckDB spills to a temporary folder beyond it) whatever the input size.
    Duplicate examples trigger a second, narrower query that resolves them by
    the ``duplicates`` policy.

    Returns
    -------
    pandas.DataFrame
        Columns ``model``, ``task``, the factor names, ``perturbation`` when
        given, ``n_correct`` and ``n_total``, one row per cell.

    Raises
    ------
    InputError
        On unknown score strings, scores outside [0, 1] or non-binary scores,
        naming the file, row and value.
    ConflictError
        When the same example has different scores and ``duplicates="error"``.
    """
    if duplicates not in _tensor.DUPLICATE_POLICIES:
        raise RobustscopeError(f"unknown duplicate policy {duplicates!r}; valid values: {', '.join(_tensor.DUPLICATE_POLICIES)}")
    connection = _connect(memory_limit, threads)
    key_names = ["model", "task"] + (["perturbation"] if "perturbation" in spec.expressions else []) + list(spec.factors)
    selects = [f"{spec.expressions[r]} AS {_sql_identifier(r)}" for r in ("model", "task") + (("perturbation",) if "perturbation" in spec.expressions else ())]
    selects += [f"{expression} AS {_sql_identifier(name)}" for name, expression in spec.factors.items()]
    selects += [
        f"{spec.expressions['example']} AS _example",
        f"{spec.expressions['score']} AS _raw_score",
        f"{_score_sql(spec.expressions['score'], score_type)} AS _score",
        "filename AS _file",
    ]
    # The row number is needed only to locate errors and order duplicates;
    # reading it slows the main scan, so only the narrower queries use it.
    light_source = f"(SELECT {', '.join(selects)} FROM {_parquet_source(files, row_numbers=False)})"
    source = f"(SELECT {', '.join(selects)}, file_row_number AS _row FROM {_parquet_source(files)})"
    distinct_sql = _distinct_examples_sql(connection, light_source)
    # One query per file is about twice as fast as one query over all files
    # with a per-row file name column (DuckDB 1.x, measured on the benchmark).
    uses_filename = any("filename" in expression for expression in list(spec.expressions.values()) + list(spec.factors.values()))
    file_sources = []
    for path in files:
        per_file = [item if item != "filename AS _file" else f"{_sql_string(str(path))} AS _file" for item in selects]
        reader = _parquet_source([path], row_numbers=False, filename=uses_filename)
        file_sources.append(f"(SELECT {', '.join(per_file)} FROM {reader})")
    keys_sql = ", ".join(_sql_identifier(k) for k in key_names)
    # An empty or blank model or task name counts as missing, as in CSV tables.
    blank_names = "".join(f" OR trim(CAST({_sql_identifier(k)} AS VARCHAR)) = ''" for k in ("model", "task"))
    null_keys = " OR ".join(f"{_sql_identifier(k)} IS NULL" for k in key_names) + " OR _example IS NULL" + blank_names
    query = """
        SELECT {keys_sql}, _file,
            count(*) AS n_rows,
            count(*) FILTER (WHERE {null_keys}) AS n_null_key,
            count(_score) AS n_scored,
            sum(_score) AS score_sum,
            {distinct_sql} AS n_distinct,
            count(*) FILTER (WHERE _raw_score IS NOT NULL AND _score IS NULL) AS n_unknown,
            count(*) FILTER (WHERE _score < 0 OR _score > 1) AS n_outside,
            count(*) FILTER (WHERE _score <> 0 AND _score <> 1) AS n_fractional
        FROM {file_source}
        GROUP BY ALL
    """
    parts = []
    for path, file_source in zip(files, file_sources, strict=True):
        try:
            parts.append(connection.execute(query.format(keys_sql=keys_sql, null_keys=null_keys, distinct_sql=distinct_sql, file_source=file_source)).df())
        except Exception as error:  # duckdb raises its own error hierarchy
            raise InputError(f"cannot aggregate the Parquet file: {error}", path=path) from error
    groups = pd.concat(parts, ignore_index=True)

    def locate(condition: str, message: str, hint: str) -> InputError:
        row = connection.execute(f"SELECT _file, _row, _raw_score FROM {source} WHERE {condition} LIMIT 1").fetchone()
        return InputError(message, path=row[0], row=int(row[1]) + 1, column=spec.expressions["score"].strip('"'), value=row[2], hint=hint)

    if groups["n_unknown"].sum():
        raise locate(
            "_raw_score IS NOT NULL AND _score IS NULL",
            "unknown score value",
            f"scores must be numbers or one of {', '.join(sorted(SCORE_WORDS))} (any case)",
        )
    if groups["n_outside"].sum() and metric == "accuracy":
        raise locate("_score < 0 OR _score > 1", "score is outside [0, 1]", "accuracy scores must be 0/1 or proportions")
    if groups["n_fractional"].sum():
        raise locate(
            "_score <> 0 AND _score <> 1",
            "score is not 0 or 1, so it cannot be counted as correct or wrong",
            "use per_example=True to keep fractional scores per example",
        )

    for _, group in groups.loc[groups["n_null_key"] > 0].iterrows():
        report.drop("empty model, task, perturbation, factor or example value", rows=int(group["n_null_key"]), where=Path(group["_file"]).name)
    null_key = groups[key_names].isna().any(axis=1)
    for name in ("model", "task"):
        null_key |= groups[name].astype(str).str.strip().eq("")
    groups = groups.loc[~null_key].copy()
    empty_scores = groups["n_rows"] - groups["n_null_key"] - groups["n_scored"]
    for (_, group), count in zip(groups.iterrows(), empty_scores, strict=True):
        if count > 0:
            report.drop(EMPTY_SCORE_REASON, rows=int(count), where=Path(group["_file"]).name)

    for file_name, part in groups.groupby("_file", sort=False):
        kept = int(part["n_scored"].sum())
        report.add_file(file_name, rows_read=int(part["n_rows"].sum()), rows_kept=kept)
    files_with_rows = set(groups["_file"].unique())
    for path in files:
        if str(path) not in files_with_rows:
            report.add_file(path, rows_read=_parquet_row_count(path), rows_kept=0)

    cells = groups.groupby(key_names, sort=False, dropna=False).agg(
        n_scored=("n_scored", "sum"), score_sum=("score_sum", "sum"), n_distinct=("n_distinct", "sum"), n_files=("_file", "nunique")
    )
    cells = cells.reset_index()
    if ((cells["n_distinct"] < cells["n_scored"]) | (cells["n_files"] > 1)).any():
        cells = _resolve_parquet_duplicates(connection, source, key_names, cells, duplicates, report)

    cells = cells.loc[cells["n_scored"] > 0]
    cells["n_correct"] = np.rint(cells["score_sum"].astype(float)).astype(np.int64)
    cells["n_total"] = cells["n_scored"].astype(np.int64)
    connection.close()
    return cells[key_names + ["n_correct", "n_total"]].reset_index(drop=True)


def _duplicate_rows(row: pd.Series) -> str:
    """Return where the first and the last copy of a duplicated example stand, as 1-based Parquet row numbers."""
    first, last = int(row["first_row"]) + 1, int(row["last_row"]) + 1
    if row["first_file"] == row["last_file"]:
        return f"row {first} and row {last}"
    return f"row {first} and row {last} of {row['last_file']}"


def _resolve_parquet_duplicates(
    connection: Any,
    source: str,
    key_names: Sequence[str],
    cells: pd.DataFrame,
    policy: str,
    report: IngestReport,
) -> pd.DataFrame:
    """Correct the cell sums for examples that appear more than once."""
    keys_sql = ", ".join(_sql_identifier(k) for k in key_names)
    query = f"""
        SELECT {keys_sql}, _example, count(*) AS n, min(_score) AS low, max(_score) AS high,
            sum(_score) AS total, avg(_score) AS mean,
            first(_score ORDER BY _file, _row) AS first_score,
            last(_score ORDER BY _file, _row) AS last_score,
            first(_file ORDER BY _file, _row) AS first_file,
            first(_row ORDER BY _file, _row) AS first_row,
            last(_file ORDER BY _file, _row) AS last_file,
            last(_row ORDER BY _file, _row) AS last_row
        FROM {source}
        WHERE _score IS NOT NULL AND _example IS NOT NULL
        GROUP BY ALL
        HAVING count(*) > 1
    """
    repeated = connection.execute(query).df()
    repeated = repeated.dropna(subset=list(key_names))
    if repeated.empty:
        return cells
    conflicting = repeated.loc[repeated["low"] != repeated["high"]]
    identical = repeated.loc[repeated["low"] == repeated["high"]]
    report.duplicates_merged += int((identical["n"] - 1).sum())
    if len(conflicting):
        report.conflicts += int((conflicting["n"] - 1).sum())
        if policy == "error":
            listing = "; ".join(
                ", ".join(f"{k}={row[k]!r}" for k in key_names)
                + f", example={row['_example']!r}: scores {row['low']} and {row['high']}, {_duplicate_rows(row)}"
                for _, row in conflicting.head(MAX_LISTED_CONFLICTS).iterrows()
            )
            raise ConflictError(
                f"{len(conflicting)} examples have conflicting duplicate rows ({listing})",
                path=conflicting["first_file"].iloc[0],
                hint="remove the conflicting rows, or choose a duplicate policy (first, last or mean)",
            )
        log.warning("%d examples have conflicting duplicate rows; resolved with policy %r", len(conflicting), policy)

    resolved = {"first": repeated["first_score"], "last": repeated["last_score"]}.get(policy, repeated["mean"])
    resolved = resolved.where(repeated["low"] != repeated["high"], repeated["low"])
    repeated = repeated.assign(excess_rows=repeated["n"] - 1, excess_score=repeated["total"] - resolved)
    correction = repeated.groupby(list(key_names), sort=False)[["excess_rows", "excess_score"]].sum().reset_index()
    cells = cells.merge(correction, on=list(key_names), how="left")
    cells["n_scored"] = cells["n_scored"] - cells["excess_rows"].fillna(0)
    cells["score_sum"] = cells["score_sum"] - cells["excess_score"].fillna(0.0)
    return cells.drop(columns=["excess_rows", "excess_score"])


def _parquet_row_count(path: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows)


def _column_types(connection: Any, files: Sequence[Path]) -> dict[str, str]:
    rows = connection.execute(f"DESCRIBE SELECT * FROM {_parquet_source(files)}").fetchall()
    return {row[0]: row[1] for row in rows}


def _read_table(path: Path, connection: Any, columns_needed: Sequence[str] | None) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        frame = _read_csv(path)
    elif suffix in JSONL_SUFFIXES:
        frame = _read_jsonl(path)
    else:
        frame = _read_parquet_rows(connection, path, columns_needed or parquet_columns(connection, [path]))
    if frame.empty:
        raise InputError("file has a header but no rows", path=path)
    frame = frame.copy()
    frame["_row"] = np.arange(1, len(frame) + 1)
    return frame


@register_loader("long-table", "CSV, Parquet or JSON Lines long tables with a column mapping")
def load(
    source: str | Path | Sequence[str | Path],
    *,
    mapping: Mapping[str, str] | None = None,
    factors: Sequence[str] | None = None,
    structure: str = "crossed",
    dataset: str | None = None,
    metric: str = "accuracy",
    duplicates: str = "error",
    per_example: bool = True,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
    threads: int | None = None,
) -> tuple[Any, IngestReport]:
    """Read long tables (CSV, TSV, Parquet, JSON Lines) into the tensor.

    Parameters
    ----------
    source
        A file, a list of files or a folder (every table file under it).
    mapping
        Role -> column name. Roles: ``model``, ``task``, ``perturbation``,
        ``example``, ``score``, ``prediction``, ``correct``, ``total``,
        ``count`` and ``metric``. A role that is not mapped is looked up
        under its own name.
    factors
        Columns that describe the perturbation (e.g. ``["shots",
        "temperature"]``). Each becomes a coordinate along ``perturbation``;
        without a perturbation column the label is built from them
        (``"shots=0|temperature=0.7"``).
    structure
        ``"crossed"`` when perturbation labels are shared across tasks,
        ``"nested"`` when they belong to one task.
    dataset
        Name stored in the tensor; defaults to the first file's stem.
    metric
        Metric name. With ``"accuracy"`` scores must lie in [0, 1].
    duplicates
        Policy for rows that repeat a key with a different value:
        ``"error"`` (default), ``"first"``, ``"last"`` or ``"mean"``.
    per_example
        For per-example rows: keep the ``example`` dimension (default) or
        aggregate to counts. Parquet tables are then aggregated in DuckDB
        without loading them into memory.
    memory_limit, threads
        DuckDB settings for the Parquet aggregation.

    Returns
    -------
    (xarray.Dataset, IngestReport)

    Raises
    ------
    InputError
        On missing columns, unreadable or empty files, non-numeric values,
        scores outside [0, 1], correct > total or unknown score strings,
        naming file, row, column and value.
    ConflictError
        On conflicting duplicates with ``duplicates="error"``.
    """
    files = list_files(source)
    dataset = dataset or files[0].stem
    options = {
        "mapping": dict(mapping or {}),
        "factors": list(factors or []),
        "structure": structure,
        "metric": metric,
        "duplicates": duplicates,
        "per_example": per_example,
        "source": [str(p) for p in files] if len(files) > 1 else str(files[0]),
    }
    report = IngestReport(loader="long-table", dataset=dataset, options=options)
    factor_list = list(factors or [])
    connection = _connect(memory_limit, threads) if any(p.suffix.lower() in PARQUET_SUFFIXES for p in files) else None

    parquet_files = [p for p in files if p.suffix.lower() in PARQUET_SUFFIXES]
    frames: list[pd.DataFrame] = []
    kinds: set[str] = set()
    streamed = False
    if parquet_files and not per_example:
        found = parquet_columns(connection, parquet_files)
        columns = _resolve_mapping(mapping, factor_list, found, parquet_files[0])
        if _row_kind(columns) == "examples":
            spec = ParquetAggregate(
                expressions={r: _sql_identifier(columns.get(r)) for r in ("model", "task", "perturbation", "example", "score") if columns.get(r)},
                factors={f: _sql_identifier(f) for f in factor_list},
            )
            types = _column_types(connection, parquet_files)
            counts = aggregate_parquet(
                parquet_files,
                spec,
                score_type=types[columns.get("score")],
                metric=metric,
                duplicates=duplicates,
                report=report,
                memory_limit=memory_limit,
                threads=threads,
            )
            frames.append(counts)
            kinds.add("counts")
            streamed = True

    for path in files:
        if streamed and path in parquet_files:
            continue
        needed = None
        if path.suffix.lower() in PARQUET_SUFFIXES:
            found = parquet_columns(connection, [path])
            columns = _resolve_mapping(mapping, factor_list, found, path)
            needed = [c for c in columns.columns.values()] + factor_list
        frame = _read_table(path, connection, needed)
        found = [c for c in frame.columns if c != "_row"]
        columns = _resolve_mapping(mapping, factor_list, found, path)
        rows_read = len(frame)
        if path.suffix.lower() in CSV_SUFFIXES:
            frame = _drop_repeated_headers(frame, path, report)
        kind = _row_kind(columns)
        standard = _standardise(frame, columns, kind, metric, path, report)
        if kind == "examples" and not per_example:
            standard = _examples_to_counts(standard, factor_list, duplicates, path, report)
            kind = "counts"
        kinds.add("counts" if kind in ("counts", "accuracy") else "examples")
        report.add_file(path, rows_read=rows_read, rows_kept=len(standard))
        frames.append(standard.drop(columns=["_row"], errors="ignore"))
    if connection is not None:
        connection.close()

    if len(kinds) > 1:
        raise InputError(
            "the inputs mix aggregated rows (counts) and per-example rows",
            path=files[0].parent,
            hint="ingest them separately, or pass per_example=False to aggregate the per-example rows",
        )
    records = pd.concat(frames, ignore_index=True)
    source_text = str(files[0]) if len(files) == 1 else str(files[0].parent)
    metric = check_single_metric(records, metric, source_text) or metric
    records = records.drop(columns=["metric"], errors="ignore")
    if records.empty:
        raise InputError("no rows left after dropping empty and repeated header rows", path=source_text)
    return build_tensor(records, kinds.pop(), factor_list, structure, dataset, metric, duplicates, source_text, report), report


def _examples_to_counts(frame: pd.DataFrame, factors: Sequence[str], duplicates: str, path: Path, report: IngestReport) -> pd.DataFrame:
    """Sum binary per-example scores to counts (after resolving duplicate examples)."""
    if not np.isin(frame["score"].to_numpy(), (0.0, 1.0)).all():
        bad = ~frame["score"].isin((0.0, 1.0))
        raise _first_bad(frame, bad, path, "score", "score is not 0 or 1, so it cannot be counted", hint="use per_example=True to keep fractional scores")
    keys = [c for c in ("model", "task", "perturbation") if c in frame.columns] + list(factors)
    deduplicated, counts = _tensor._resolve_duplicates(frame, keys + ["example"], ["score"], duplicates, source=str(path))
    report.duplicates_merged += counts["duplicates_merged"]
    report.conflicts += counts["conflicts"]
    grouped = deduplicated.groupby(keys, sort=False, dropna=False)["score"].agg(["sum", "count"]).reset_index()
    grouped["n_correct"] = np.rint(grouped["sum"]).astype(np.int64)
    grouped["n_total"] = grouped["count"].astype(np.int64)
    return grouped.drop(columns=["sum", "count"])


def build_tensor(
    records: pd.DataFrame,
    kind: str,
    factors: Sequence[str],
    structure: str,
    dataset: str,
    metric: str,
    duplicates: str,
    source: str,
    report: IngestReport,
    *,
    label_values: Mapping[str, Mapping[object, str]] | None = None,
    label_names: Mapping[str, str] | None = None,
    task_info: pd.DataFrame | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> Any:
    """Turn standardised records (counts or examples) into the tensor, labelling perturbations by their factors."""
    if "perturbation" not in records.columns:
        records = add_perturbation_labels(records, factors, label_values=label_values, label_names=label_names)
    info = perturbation_info(records, factors, structure, source)
    records = records.drop(columns=[f for f in factors if f not in ("model", "task", "perturbation", "example")])
    extra_attrs = {"perturbation_factors": list(factors)} if factors else {}
    extra_attrs.update(attrs or {})
    report.cells_read += len(records)
    if kind == "counts":
        ds = _tensor.from_counts(
            records,
            dataset=dataset,
            metric=metric,
            structure=structure,
            task_info=task_info,
            perturbation_info=info,
            duplicates=duplicates,
            source=source,
            attrs=extra_attrs,
        )
    else:
        ds = _tensor.from_examples(
            records,
            dataset=dataset,
            metric=metric,
            structure=structure,
            task_info=task_info,
            perturbation_info=info,
            duplicates=duplicates,
            source=source,
            attrs=extra_attrs,
        )
    report.cells_kept += int(ds["observed"].sum())
    return ds
