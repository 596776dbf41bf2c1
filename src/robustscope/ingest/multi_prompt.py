"""Loader for the multi-prompt evaluation data of Mizrahi et al. (TACL 2024).

Reads the published repository layout (folder names contain spaces)::

    data/paraphrases accuracies/{BBH,LMentry}/<task>.csv
        one row per instruction paraphrase ("paraphrase idx"), one
        "<model>_acc" column per model: accuracy on the task's examples
    data/paraphrases accuracies and rankings (aggregated)/{BBH,LMentry}/<task>.json
        per paraphrase: template text, generation method and the manual
        validity flag "correct"
    data/automatic paraphrases/{BBH,LMentry}/<task>.csv   (optional)
        per paraphrase: prompt format and the stated number of examples

Each (model, task, paraphrase) cell becomes ``n_correct`` out of
``n_total``. Paraphrases belong to one task, so the tensor's perturbation
structure is ``"nested"`` and the perturbation label is the paraphrase index
within its task.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import tensor as _tensor
from .._logging import get_logger
from ..errors import InputError
from . import register_loader
from .manifest import IngestReport

log = get_logger("ingest.multi_prompt")

ACCURACY_DIR = "paraphrases accuracies"
AGGREGATED_DIR = "paraphrases accuracies and rankings (aggregated)"
PARAPHRASE_DIR = "automatic paraphrases"
INDEX_COLUMN = "paraphrase idx"
MODEL_SUFFIX = "_acc"
DEFAULT_EXAMPLES = 100
TOLERANCE = 1e-6
INVALID_REASON = "paraphrase marked invalid by the manual check (correct = false)"
EMPTY_REASON = "empty accuracy cell"


def _data_root(source: Path) -> Path:
    for candidate in (source, source / "data"):
        if (candidate / ACCURACY_DIR).is_dir():
            return candidate
    raise InputError(
        f"no {ACCURACY_DIR!r} folder found",
        path=source,
        hint="pass the multi-prompt repository folder (or its data/ folder) that contains "
        f"'{ACCURACY_DIR}/BBH' and '{ACCURACY_DIR}/LMentry'",
    )


def _read_csv(path: Path) -> pd.DataFrame:
    if path.stat().st_size == 0:
        raise InputError("file is empty", path=path, hint="restore the file from the published repository")
    try:
        # Only empty fields are missing; text such as "n/a" stays text and is reported.
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError as error:
        raise InputError("file has no header or rows", path=path) from error
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise InputError(f"cannot parse the CSV file: {error}", path=path) from error
    if frame.empty:
        raise InputError("file has a header but no rows", path=path)
    return frame


def _read_metadata(root: Path, benchmark: str, task: str, report: IngestReport) -> tuple[dict[int, dict[str, Any]], int | None]:
    """Read paraphrase texts, methods and validity flags, and the stated example count."""
    aggregated = root / AGGREGATED_DIR / benchmark / f"{task}.json"
    metadata: dict[int, dict[str, Any]] = {}
    if aggregated.is_file():
        report.add_metadata_file(aggregated)
        try:
            payload = json.loads(aggregated.read_text(encoding="utf-8-sig"))
        except json.JSONDecodeError as error:
            raise InputError(f"invalid JSON: {error}", path=aggregated) from error
        entries = payload.get("paraphrases", payload) if isinstance(payload, dict) else payload
        if not isinstance(entries, dict):
            raise InputError("expected an object mapping paraphrase indices to entries", path=aggregated, value=type(entries).__name__)
        for key, entry in entries.items():
            try:
                index = int(key)
            except ValueError:
                raise InputError("paraphrase index is not a whole number", path=aggregated, value=key) from None
            if not isinstance(entry, dict):
                raise InputError("paraphrase entry is not an object", path=aggregated, value=key)
            metadata[index] = {
                "paraphrase": str(entry.get("template", "")),
                "generation_method": str(entry.get("method", "")),
                "valid": bool(entry.get("correct", False)),
            }
    stated: int | None = None
    attributes = root / PARAPHRASE_DIR / benchmark / f"{task}.csv"
    if attributes.is_file():
        report.add_metadata_file(attributes)
        table = _read_csv(attributes)
        for _, row in table.iterrows():
            index = int(row["prompt idx"])
            entry = metadata.setdefault(index, {})
            entry.setdefault("paraphrase", str(row.get("prompt template", "")))
            entry.setdefault("generation_method", str(row.get("method", "")))
            if "valid" not in entry:
                entry["valid"] = str(row.get("correct", "0")).strip() == "1"
            entry["is_default"] = str(row.get("default prompt", "False")).strip() == "True"
            entry["prompt_format"] = "" if pd.isna(row.get("prompt format")) else str(row.get("prompt format"))
        if "samples" in table.columns:
            samples = pd.to_numeric(table["samples"], errors="coerce").dropna().unique()
            if len(samples) == 1:
                stated = int(samples[0])
    if not metadata:
        raise InputError(
            "no paraphrase metadata found for this task",
            path=aggregated,
            hint=f"the validity flags come from '{AGGREGATED_DIR}' or '{PARAPHRASE_DIR}'; restore one of them",
        )
    return metadata, stated


def _example_count(values: np.ndarray, stated: int, path: Path, report: IngestReport, task: str) -> int:
    """Return the number of examples behind each accuracy.

    The stated count is used when every accuracy is a multiple of 1/stated.
    Otherwise the smallest denominator that makes every accuracy a whole
    number of correct answers is used, and the discrepancy is noted.
    """
    finite = values[np.isfinite(values)]
    if np.all(np.abs(finite * stated - np.rint(finite * stated)) < TOLERANCE * stated):
        return stated
    denominator = 1
    for value in np.unique(finite):
        fraction = Fraction(float(value)).limit_denominator(stated)
        if abs(float(fraction) - value) > TOLERANCE:
            raise InputError(
                f"accuracy is not a whole number of correct answers out of at most {stated} examples",
                path=path,
                value=float(value),
                hint="check that the file holds accuracies, not another metric",
            )
        denominator = math.lcm(denominator, fraction.denominator)
    if denominator > stated or np.any(np.abs(finite * denominator - np.rint(finite * denominator)) > TOLERANCE * denominator):
        raise InputError(
            f"accuracies have no common denominator of at most {stated} examples",
            path=path,
            hint="check that the file holds accuracies, not another metric",
        )
    report.note(
        f"task {task}: accuracies are multiples of 1/{denominator}, not 1/{stated}; "
        f"each cell is taken as a count out of {denominator} examples"
    )
    return denominator


def _read_task(
    root: Path,
    benchmark: str,
    path: Path,
    include_invalid: bool,
    report: IngestReport,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    task = path.stem
    frame = _read_csv(path)
    if INDEX_COLUMN not in frame.columns:
        raise InputError(
            f"missing required column {INDEX_COLUMN!r}",
            path=path,
            hint=f"the first column must be {INDEX_COLUMN!r}; columns found: {', '.join(map(str, frame.columns[:6]))}",
        )
    model_columns = [c for c in frame.columns if c != INDEX_COLUMN]
    unnamed = [c for c in model_columns if not str(c).endswith(MODEL_SUFFIX)]
    if unnamed:
        raise InputError(
            f"column is not a model accuracy column (expected '<model>{MODEL_SUFFIX}')",
            path=path,
            column=str(unnamed[0]),
        )
    indices = pd.to_numeric(frame[INDEX_COLUMN], errors="coerce")
    if indices.isna().any():
        position = int(np.flatnonzero(indices.isna().to_numpy())[0])
        raise InputError("paraphrase index is not a number", path=path, row=position + 1, column=INDEX_COLUMN, value=frame[INDEX_COLUMN].iloc[position])
    fractional = indices != np.round(indices)
    if fractional.any():
        position = int(np.flatnonzero(fractional.to_numpy())[0])
        raise InputError("paraphrase index is not a whole number", path=path, row=position + 1, column=INDEX_COLUMN, value=frame[INDEX_COLUMN].iloc[position])

    values = np.empty((len(frame), len(model_columns)))
    for j, column in enumerate(model_columns):
        numeric = pd.to_numeric(frame[column], errors="coerce")
        non_numeric = numeric.isna() & frame[column].notna()
        if non_numeric.any():
            position = int(np.flatnonzero(non_numeric.to_numpy())[0])
            raise InputError(
                "accuracy is not a number",
                path=path,
                row=position + 1,
                column=str(column),
                value=frame[column].iloc[position],
                hint="accuracies must be numbers between 0 and 1",
            )
        out_of_range = (numeric < 0) | (numeric > 1)
        if out_of_range.any():
            position = int(np.flatnonzero(out_of_range.to_numpy())[0])
            raise InputError(
                "accuracy is outside [0, 1]",
                path=path,
                row=position + 1,
                column=str(column),
                value=float(numeric.iloc[position]),
                hint="accuracies must be proportions between 0 and 1, not percentages",
            )
        values[:, j] = numeric.to_numpy(dtype=float)

    metadata, stated = _read_metadata(root, benchmark, task, report)
    n_examples = _example_count(values, stated or DEFAULT_EXAMPLES, path, report, task)

    models = [str(c)[: -len(MODEL_SUFFIX)] for c in model_columns]
    report.cells_read += values.size
    records = []
    kept_rows = 0
    for i, index in enumerate(indices.astype(int)):
        info = metadata.get(int(index))
        if info is None:
            raise InputError(
                "paraphrase index has no metadata (template, validity flag)",
                path=path,
                row=i + 1,
                column=INDEX_COLUMN,
                value=int(index),
                hint=f"check that '{AGGREGATED_DIR}/{benchmark}/{task}.json' belongs to the same release",
            )
        if not info.get("valid", False) and not include_invalid:
            report.drop(INVALID_REASON, rows=1, cells=len(models), where=f"{path.name} row {i + 1} (paraphrase {index})")
            continue
        kept_rows += 1
        for j, model in enumerate(models):
            accuracy = values[i, j]
            if np.isnan(accuracy):
                report.drop(EMPTY_REASON, rows=0, cells=1, where=f"{path.name} row {i + 1} column {model_columns[j]}")
                continue
            records.append((model, task, str(int(index)), int(round(accuracy * n_examples)), n_examples))
    report.add_file(path, rows_read=len(frame), rows_kept=kept_rows)
    cells = pd.DataFrame(records, columns=["model", "task", "perturbation", "n_correct", "n_total"])
    report.cells_kept += len(cells)

    info_rows = []
    for index, info in metadata.items():
        info_rows.append(
            {
                "task": task,
                "perturbation": str(index),
                "paraphrase": info.get("paraphrase", ""),
                "generation_method": info.get("generation_method", ""),
                "valid": bool(info.get("valid", False)),
                "is_default": bool(info.get("is_default", False)),
                "prompt_format": info.get("prompt_format", ""),
            }
        )
    perturbations = pd.DataFrame(info_rows).set_index(["task", "perturbation"])
    return cells, perturbations


@register_loader("multi-prompt", "Mizrahi et al. (TACL 2024) paraphrase accuracies: folders of per-task CSV files")
def load(
    source: str | Path,
    *,
    include_invalid: bool = False,
    tasks: list[str] | None = None,
    benchmarks: list[str] | None = None,
    dataset: str = "multi-prompt-eval",
) -> tuple[Any, IngestReport]:
    """Read the multi-prompt accuracies into a nested (task-local paraphrase) tensor.

    Parameters
    ----------
    source
        The repository folder or its ``data/`` folder.
    include_invalid
        Keep paraphrases that the manual check marked invalid (default: drop them).
    tasks, benchmarks
        Read only these tasks or benchmarks (``"BBH"``, ``"LMentry"``).
    dataset
        Name stored in the tensor.
    """
    source = Path(source)
    if not source.exists():
        raise InputError("folder not found", path=source, hint="pass the folder that holds the multi-prompt data")
    root = _data_root(source)
    report = IngestReport(
        loader="multi-prompt",
        dataset=dataset,
        options={"include_invalid": include_invalid, "tasks": tasks, "benchmarks": benchmarks, "source": str(source)},
    )
    benchmark_dirs = sorted(p for p in (root / ACCURACY_DIR).iterdir() if p.is_dir())
    if benchmarks:
        unknown = sorted(set(benchmarks) - {p.name for p in benchmark_dirs})
        if unknown:
            raise InputError(f"unknown benchmark(s) {', '.join(unknown)}; found: {', '.join(p.name for p in benchmark_dirs)}", path=root / ACCURACY_DIR)
        benchmark_dirs = [p for p in benchmark_dirs if p.name in benchmarks]

    cell_frames, perturbation_frames, task_rows = [], [], []
    seen_tasks: set[str] = set()
    for benchmark_dir in benchmark_dirs:
        for path in sorted(benchmark_dir.glob("*.csv")):
            if tasks and path.stem not in tasks:
                continue
            cells, perturbations = _read_task(root, benchmark_dir.name, path, include_invalid, report)
            log.info("read %s/%s: %d cells kept", benchmark_dir.name, path.stem, len(cells))
            cell_frames.append(cells)
            perturbation_frames.append(perturbations)
            task_rows.append({"task": path.stem, "benchmark": benchmark_dir.name})
            seen_tasks.add(path.stem)
    if tasks:
        unknown = sorted(set(tasks) - seen_tasks)
        if unknown:
            raise InputError(f"task(s) not found: {', '.join(unknown)}", path=root / ACCURACY_DIR, hint="task names are the CSV file names without .csv")
    if not cell_frames:
        raise InputError("no accuracy files found", path=root / ACCURACY_DIR, hint="expected <benchmark>/<task>.csv files")

    records = pd.concat(cell_frames, ignore_index=True)
    if records.empty:
        raise InputError(
            "no accuracy values left after dropping invalid paraphrases and empty cells",
            path=root / ACCURACY_DIR,
            hint="check the files or pass include_invalid=True",
        )
    ds = _tensor.from_counts(
        records,
        dataset=dataset,
        metric="accuracy",
        structure="nested",
        task_info=pd.DataFrame(task_rows).set_index("task"),
        perturbation_info=pd.concat(perturbation_frames),
        source=str(root / ACCURACY_DIR),
        attrs={
            "source": "Mizrahi et al., State of What Art? A Call for Multi-Prompt LLM Evaluation, TACL 2024",
            "perturbation_kind": "instruction paraphrase",
            "include_invalid": int(include_invalid),
        },
    )
    return ds, report
