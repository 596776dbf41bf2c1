"""Loader for the Every Eval Ever results schema (EvalEval coalition), versions 0.2.0 to 0.3.x.

Reads aggregate records, one JSON file per model and source::

    {"schema_version": "0.2.0", "model_info": {"id": ...},
     "evaluation_results": [
        {"evaluation_name": ..., "source_data": {...}, "metric_config": {...},
         "score_details": {"score": ..., "details": {...},
                           "uncertainty": {"num_samples": ...}},
         "generation_config": {"generation_args": {"temperature": ...,
                                                    "prompt_template": ...},
                               "additional_details": {...}}}, ...]}

and, where present, the instance-level file ``<uuid>_samples.jsonl`` beside
``<uuid>.json`` (one JSON object per line with ``sample_id``,
``evaluation.score`` or ``evaluation.is_correct`` and ``metadata``), linked to
its result by ``evaluation_result_id`` (0.3.0) or ``evaluation_name``.

The schema has no perturbation field, so perturbation labels are built from:

* HELM's robustness and fairness variants, stored in ``score_details.details``
  as ``"<scenario> - <metric> (Robustness)"`` and ``"... (Fairness)"``
  (labels ``"robustness"`` and ``"fairness"``; the plain score is
  ``"original"``). Only keys that start with ``"<scenario> - "`` count,
  because some HELM classic cells also carry a neighbouring scenario's keys;
* the generation settings ``temperature`` and ``prompt_template``
  (``generation_config.generation_args``) and the number of in-context
  examples (``generation_config.additional_details``);
* any other field the caller names with ``perturbation_fields``.

Labels are shared across tasks, so the perturbation structure is ``"crossed"``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from .. import tensor as _tensor
from ..tensor import from_scores
from .._logging import get_logger
from ..errors import InputError
from . import register_loader
from .manifest import IngestReport

log = get_logger("ingest.every_eval_ever")

SUPPORTED_MAJOR = 0
MIN_VERSION = (0, 2, 0)
MAX_KNOWN_VERSION = (0, 3, 0)
ORIGINAL = "original"
VARIANT_SUFFIXES = {"robustness": " (Robustness)", "fairness": " (Fairness)"}
DEFAULT_PERTURBATIONS = (ORIGINAL, "robustness", "fairness")
SAMPLES_SUFFIX = "_samples.jsonl"
N_SHOT_KEYS = ("n_shot", "num_fewshot", "num_shots", "n_shots", "fewshot", "shots")
# Metric names (upper-cased) whose score is the proportion of correct answers.
PROPORTION_METRICS = {"EM", "EXACT_MATCH", "QUASI_EXACT_MATCH", "ACCURACY", "ACC", "PREFIX_EXACT_MATCH", "PASS@1"}
METRIC_ALIASES = {"EM": "exact_match"}
LEVELS = ("auto", "aggregate", "example")

REASON_AGGREGATE_ROW = "leaderboard aggregate over scenarios (for example HELM's 'Mean win rate'), not a task"
REASON_NO_SCORE = "score missing or outside [min_score, max_score] (HELM writes -1 when no run exists)"
REASON_NO_VARIANT = "perturbation variant missing for this cell"
REASON_NOT_PROPORTION = "metric is not a proportion of correct answers, so it cannot be a binomial count (metric_kind='binary')"
REASON_NO_COUNT = "no example count ('# eval' detail or uncertainty.num_samples), needed for binomial counts"
REASON_NEIGHBOUR_KEY = "detail key belongs to another scenario (its prefix is not '<scenario> - ')"
REASON_NOT_SELECTED = "perturbation not selected by the perturbations option"
REASON_TASK_FILTER = "task not selected by the tasks option"
REASON_RESULT_EMPTY = "evaluation result has no usable score in any selected perturbation"
REASON_SAMPLE_NO_SCORE = "sample has neither evaluation.score nor evaluation.is_correct"
REASON_SAMPLE_UNLINKED = "sample links to no kept evaluation result"


def parse_schema_version(value: object, path: Path) -> tuple[int, int, int]:
    """Parse and check a declared ``schema_version`` such as ``"0.2.1"``.

    Raises
    ------
    InputError
        When the version is missing, not of the form ``MAJOR.MINOR.PATCH``,
        older than 0.2.0 or of an unknown major version.
    """
    if value is None:
        raise InputError("missing required field 'schema_version'", path=path, hint="every record must declare the schema version it follows")
    match = re.fullmatch(r"(\d+)\.(\d+)(?:\.(\d+))?", str(value).strip())
    if not match:
        raise InputError("schema_version is not a version number MAJOR.MINOR.PATCH", path=path, column="schema_version", value=value)
    version = (int(match.group(1)), int(match.group(2)), int(match.group(3) or 0))
    if version[0] != SUPPORTED_MAJOR:
        raise InputError(
            f"unknown major schema version {version[0]}; this loader reads versions 0.2.0 to 0.3.x",
            path=path,
            column="schema_version",
            value=value,
            hint="convert the file to a 0.x schema or use a newer robustscope",
        )
    if version < MIN_VERSION:
        raise InputError("schema_version is older than 0.2.0, the oldest version this loader reads", path=path, column="schema_version", value=value)
    return version


def read_json_file(path: Path, hint: str = "the file may be truncated; restore it from its source") -> Any:
    """Parse a JSON file, raising InputError naming the file (and line) when it is not UTF-8, empty or invalid."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"file is not UTF-8 text: {error}", path=path) from error
    if not text.strip():
        raise InputError("file is empty", path=path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(
            f"invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}",
            path=path,
            hint=hint,
        ) from error


def _get_path(record: Mapping[str, Any], dotted: str) -> Any:
    """Return the value at a dotted path (``"a.b.c"``) or None when a step is missing."""
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _detail_score(value: Any) -> float | None:
    """Return the number stored in one ``score_details.details`` entry.

    Version 0.2.x stores objects ``{"score": ...}``; 0.3.0 requires string
    values, which may contain a number or such an object encoded as JSON.
    """
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return None
    if isinstance(value, Mapping):
        value = value.get("score")
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _metric_name(result: Mapping[str, Any]) -> str:
    """Return the metric's name: ``metric_config.metric_name`` or the word before " on " in its description."""
    config = result.get("metric_config") or {}
    for key in ("metric_name", "metric_id"):
        if config.get(key):
            return str(config[key])
    description = str(config.get("evaluation_description") or "")
    match = re.match(r"\s*(.+?)\s+on\s+", description)
    if match:
        return match.group(1)
    return "score"


def _is_proportion(result: Mapping[str, Any], metric: str) -> bool:
    config = result.get("metric_config") or {}
    if str(config.get("metric_unit", "")).lower() == "proportion" and str(config.get("metric_kind", "")).lower() in ("accuracy", ""):
        return True
    return metric.upper() in PROPORTION_METRICS


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]


def _setting_values(result: Mapping[str, Any], perturbation_fields: Mapping[str, str]) -> dict[str, str]:
    """Read the generation settings that distinguish one result from another of the same task."""
    settings: dict[str, str] = {}
    arguments = _get_path(result, "generation_config.generation_args") or {}
    if isinstance(arguments, Mapping):
        if arguments.get("temperature") is not None:
            settings["temperature"] = f"{float(arguments['temperature']):g}"
        if arguments.get("prompt_template"):
            settings["prompt_template"] = str(arguments["prompt_template"])
    details = _get_path(result, "generation_config.additional_details") or {}
    if isinstance(details, Mapping):
        for key in N_SHOT_KEYS:
            if details.get(key) not in (None, ""):
                settings["n_shot"] = str(details[key])
                break
    for name, dotted in perturbation_fields.items():
        value = _get_path(result, dotted)
        if value is not None:
            settings[name] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return settings


def _settings_label(settings: Mapping[str, str]) -> str:
    parts = []
    for name in sorted(settings):
        value = settings[name]
        shown = _short_hash(value) if name == "prompt_template" or len(value) > 40 else value
        parts.append(f"{name}={shown}")
    return ",".join(parts)


def _label(variant: str, settings: Mapping[str, str]) -> str:
    suffix = _settings_label(settings)
    if not suffix:
        return variant
    return suffix if variant == ORIGINAL else f"{variant},{suffix}"


def _example_count(details: Mapping[str, Any], scenario: str, result: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """Return (examples per run, trials) from HELM's '# eval' and '# trials' details or the uncertainty block."""
    examples = _detail_score(details.get(f"{scenario} - # eval")) if details else None
    trials = _detail_score(details.get(f"{scenario} - # trials")) if details else None
    if examples is None:
        examples = _get_path(result, "score_details.uncertainty.num_samples")
        examples = float(examples) if isinstance(examples, (int, float)) and not isinstance(examples, bool) else None
    return examples, trials


def _variant_key(details: Mapping[str, Any], scenario: str, metric: str, suffix: str) -> str | None:
    """Find the detail key of one perturbation variant of this scenario's metric."""
    exact = f"{scenario} - {metric}{suffix}"
    if exact in details:
        return exact
    prefix = f"{scenario} - "
    candidates = [k for k in details if k.startswith(prefix) and k.endswith(suffix)]
    return candidates[0] if len(candidates) == 1 else None


def _is_aggregate_row(result: Mapping[str, Any], source_name: str | None) -> bool:
    name = str(result.get("evaluation_name", ""))
    dataset_name = _get_path(result, "source_data.dataset_name")
    return name.lower().startswith("mean win rate") or (source_name is not None and dataset_name == source_name)


def _find_files(source: str | Path | Sequence[str | Path]) -> list[Path]:
    sources = [source] if isinstance(source, (str, Path)) else list(source)
    files: list[Path] = []
    for item in sources:
        path = Path(item)
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files.extend(sorted(p for p in path.rglob("*.json") if p.is_file()))
        else:
            raise InputError("file or folder not found", path=path, hint="pass Every Eval Ever aggregate JSON files or a folder that contains them")
    if not files:
        raise InputError("no .json files found", path=sources[0], hint="pass a folder that contains Every Eval Ever aggregate records")
    return files


def _samples_path(path: Path, record: Mapping[str, Any]) -> Path | None:
    beside = path.with_name(path.stem + SAMPLES_SUFFIX)
    if beside.is_file():
        return beside
    declared = _get_path(record, "detailed_evaluation_results.file_path")
    if declared:
        candidate = path.with_name(Path(str(declared)).name)
        if candidate.is_file():
            return candidate
    return None


def _read_record(
    path: Path,
    report: IngestReport,
    *,
    perturbations: Sequence[str],
    perturbation_fields: Mapping[str, str],
    tasks: Sequence[str] | None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Read one aggregate record into one row per (task, perturbation) cell."""
    record = read_json_file(path)
    if not isinstance(record, Mapping):
        raise InputError("the aggregate record must be a JSON object", path=path, value=type(record).__name__)
    version = parse_schema_version(record.get("schema_version"), path)
    if version > MAX_KNOWN_VERSION:
        report.note(f"{path.name}: schema_version {record['schema_version']} is newer than 0.3.0; read with the 0.3.0 field names")

    model = _get_path(record, "model_info.id") or _get_path(record, "model_info.name")
    if not model:
        raise InputError("missing required field 'model_info.id'", path=path, column="model_info.id")
    results = record.get("evaluation_results")
    if not isinstance(results, list):
        raise InputError("missing required list 'evaluation_results'", path=path, column="evaluation_results", value=type(results).__name__)
    source_name = _get_path(record, "source_metadata.source_name")

    rows: list[dict[str, Any]] = []
    kept_results = 0
    for position, result in enumerate(results):
        where = f"{path.name} evaluation_results[{position}]"
        if not isinstance(result, Mapping):
            raise InputError("evaluation result must be a JSON object", path=path, column=f"evaluation_results[{position}]")
        scenario = result.get("evaluation_name")
        if not scenario:
            raise InputError("missing required field 'evaluation_name'", path=path, column=f"evaluation_results[{position}].evaluation_name")
        score_details = result.get("score_details")
        if not isinstance(score_details, Mapping) or "score" not in score_details:
            raise InputError(
                "missing required field 'score_details.score'",
                path=path,
                column=f"evaluation_results[{position}].score_details.score",
                value=scenario,
            )
        report.cells_read += 1
        if _is_aggregate_row(result, source_name):
            report.drop(REASON_AGGREGATE_ROW, cells=1, where=f"{where} ({scenario})")
            continue
        if tasks is not None and scenario not in tasks:
            report.drop(REASON_TASK_FILTER, cells=1, where=f"{where} ({scenario})")
            continue

        metric = _metric_name(result)
        details = score_details.get("details") if isinstance(score_details.get("details"), Mapping) else {}
        examples, trials = _example_count(details, str(scenario), result)
        settings = _setting_values(result, perturbation_fields)
        config = result.get("metric_config") or {}
        low = config.get("min_score")
        high = config.get("max_score")
        base = {
            "model": str(model),
            "task": str(scenario),
            "metric": METRIC_ALIASES.get(metric.upper(), metric),
            "proportion": _is_proportion(result, metric),
            "n_eval": examples,
            "n_trials": trials,
            "evaluation_result_id": result.get("evaluation_result_id") or scenario,
            "file": path.name,
        }

        # Some HELM classic cells also hold the variants of a neighbouring
        # scenario (NaturalQuestions (closed-book) inside the open-book cell).
        # Those scores have no plain score of their own here, so they are skipped.
        neighbour_keys = [
            k for k in details if not k.startswith(f"{scenario} - ") and any(k.endswith(s) for s in VARIANT_SUFFIXES.values())
        ]
        if neighbour_keys:
            report.drop(REASON_NEIGHBOUR_KEY, rows=0, cells=len(neighbour_keys), where=f"{where} ({scenario}): {neighbour_keys[0]}")

        variants = {ORIGINAL: _detail_score(score_details.get("score"))}
        for variant, suffix in VARIANT_SUFFIXES.items():
            key = _variant_key(details, str(scenario), metric, suffix)
            variants[variant] = None if key is None else _detail_score(details[key])

        kept_here = 0
        for variant, value in variants.items():
            label = _label(variant, settings)
            if variant not in perturbations:
                if value is not None:
                    report.drop(REASON_NOT_SELECTED, rows=0, cells=1, where=f"{where} ({scenario}, {variant})")
                continue
            if variant != ORIGINAL:
                report.cells_read += 1
            out_of_range = value is not None and (
                (isinstance(low, (int, float)) and value < low) or (isinstance(high, (int, float)) and value > high)
            )
            if value is None or out_of_range:
                reason = REASON_NO_SCORE if variant == ORIGINAL else REASON_NO_VARIANT
                report.drop(reason, rows=0, cells=1, where=f"{where} ({scenario}, {variant}, value {value!r})")
                continue
            rows.append({**base, "perturbation": label, "variant": variant, "score": value, **{f"setting_{k}": v for k, v in settings.items()}})
            kept_here += 1
        if kept_here:
            kept_results += 1
        else:
            report.drop(REASON_RESULT_EMPTY, rows=1, cells=0, where=f"{where} ({scenario})")

    report.add_file(path, rows_read=len(results), rows_kept=kept_results)
    return rows, dict(record)


def _read_samples(path: Path, report: IngestReport, links: Mapping[str, tuple[str, str, str]]) -> list[dict[str, Any]]:
    """Read an instance-level ``_samples.jsonl`` file into per-example rows.

    ``links`` maps an evaluation result id (or name) to its (model, task, perturbation).
    """
    rows: list[dict[str, Any]] = []
    read = kept = 0
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            read += 1
            try:
                sample = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"invalid JSON: {error.msg}", path=path, row=number, hint="the file may be truncated; restore it from its source") from error
            if not isinstance(sample, Mapping) or "sample_id" not in sample:
                raise InputError("missing required field 'sample_id'", path=path, row=number, column="sample_id")
            if "schema_version" in sample:
                parse_schema_version(sample["schema_version"], path)
            key = sample.get("evaluation_result_id") or sample.get("evaluation_name")
            if key not in links:
                report.drop(REASON_SAMPLE_UNLINKED, cells=0, where=f"{path.name} line {number} ({key!r})")
                continue
            evaluation = sample.get("evaluation") or {}
            score = evaluation.get("score")
            if score is None and evaluation.get("is_correct") is not None:
                score = 1.0 if evaluation["is_correct"] else 0.0
            if isinstance(score, bool):
                score = float(score)
            if not isinstance(score, (int, float)):
                report.drop(REASON_SAMPLE_NO_SCORE, where=f"{path.name} line {number}")
                continue
            model, task, perturbation = links[key]
            rows.append({"model": model, "task": task, "perturbation": perturbation, "example": str(sample["sample_id"]), "score": float(score)})
            kept += 1
    report.add_file(path, rows_read=read, rows_kept=kept)
    return rows


def _counts_from_means(cells: pd.DataFrame, report: IngestReport) -> pd.DataFrame:
    """Turn proportion scores into (n_correct, n_total) with n_total = the rounded '# eval' count."""
    counts = cells.copy()
    # NOTE: HELM's '# eval' is a mean per run, so for scenarios split into
    # sub-runs (MMLU subjects, CivilComments groups) n_total understates the
    # number of distinct examples and the counts are conservative.
    counts["n_total"] = np.rint(counts["n_eval"].astype(float)).astype(np.int64)
    counts["n_correct"] = np.rint(counts["score"].astype(float) * counts["n_total"]).astype(np.int64)
    fractional = sorted(cells.loc[cells["n_eval"] != np.rint(cells["n_eval"]), "task"].unique())
    report.note(
        "binomial counts are reconstructed from rounded mean scores: n_total is the '# eval' example count "
        "(per run; HELM averages it over sub-runs such as MMLU subjects) and n_correct = round(score * n_total)"
    )
    if fractional:
        report.note(f"tasks with a fractional mean '# eval' count, rounded to a whole number: {', '.join(fractional)}")
    return counts


@register_loader("every-eval-ever", "Every Eval Ever results (schema 0.2.0 to 0.3.x): aggregate JSON records and _samples.jsonl")
def load(
    source: str | Path | Sequence[str | Path],
    *,
    metric_kind: str | None = None,
    perturbations: Sequence[str] = DEFAULT_PERTURBATIONS,
    perturbation_fields: Mapping[str, str] | None = None,
    tasks: Sequence[str] | None = None,
    level: str = "auto",
    duplicates: str = "error",
    dataset: str | None = None,
) -> tuple[xr.Dataset, IngestReport]:
    """Read Every Eval Ever records into a crossed model x task x perturbation tensor.

    Parameters
    ----------
    source
        An aggregate JSON file, a folder searched recursively for ``*.json``,
        or a list of either.
    metric_kind
        ``"binary"`` keeps only proportion metrics (exact match, accuracy)
        that have an example count and turns them into counts;
        ``"continuous"`` keeps every metric as a score; None (default) builds
        counts when every kept task allows it and scores otherwise.
    perturbations
        Variants to keep among ``"original"``, ``"robustness"`` and
        ``"fairness"`` (default: all three).
    perturbation_fields
        Extra perturbation coordinates: a mapping from a coordinate name to
        a dotted path inside each evaluation result, for example
        ``{"seed": "generation_config.additional_details.seed"}``. Values
        that differ between results of one task become part of the label.
    tasks
        Keep only these evaluation names.
    level
        ``"aggregate"`` reads the scores of the aggregate records,
        ``"example"`` reads the linked ``_samples.jsonl`` files and
        ``"auto"`` (default) reads samples when every kept result has them.
    duplicates
        Policy for two records of the same cell: ``"error"`` (default),
        ``"first"``, ``"last"`` or ``"mean"``.
    dataset
        Name stored in the tensor (default: the source name of the records).

    Returns
    -------
    (xarray.Dataset, IngestReport)

    Raises
    ------
    InputError
        On unreadable or truncated JSON, a missing required field, an unknown
        major schema version, an unknown option value, or when nothing is left.
    """
    if level not in LEVELS:
        raise InputError(f"unknown level {level!r}; valid values: {', '.join(LEVELS)}", column="level", value=level)
    if metric_kind not in (None, *_tensor.METRIC_KINDS):
        raise InputError(f"unknown metric_kind {metric_kind!r}; valid values: binary, continuous", column="metric_kind", value=metric_kind)
    unknown = sorted(set(perturbations) - set(DEFAULT_PERTURBATIONS))
    if unknown:
        raise InputError(f"unknown perturbation(s) {', '.join(unknown)}; valid values: {', '.join(DEFAULT_PERTURBATIONS)}", column="perturbations", value=unknown)
    fields = dict(perturbation_fields or {})
    files = _find_files(source)
    report = IngestReport(
        loader="every-eval-ever",
        dataset=dataset or "every-eval-ever",
        options={
            "source": str(source),
            "metric_kind": metric_kind,
            "perturbations": list(perturbations),
            "perturbation_fields": fields,
            "tasks": list(tasks) if tasks else None,
            "level": level,
        },
    )

    rows: list[dict[str, Any]] = []
    samples_files: dict[Path, Path | None] = {}
    source_names: set[str] = set()
    for path in files:
        if path.name.endswith(SAMPLES_SUFFIX):
            continue
        file_rows, record = _read_record(path, report, perturbations=perturbations, perturbation_fields=fields, tasks=tasks)
        rows.extend(file_rows)
        samples_files[path] = _samples_path(path, record)
        name = _get_path(record, "source_metadata.source_name")
        if name:
            source_names.add(str(name))
    if not rows:
        raise InputError("no scores left after reading the records", path=files[0], hint=f"dropped: {dict(report.dropped_cells) or dict(report.dropped)}")
    if dataset is None:
        report.dataset = sorted(source_names)[0] if len(source_names) == 1 else "every-eval-ever"
    cells = pd.DataFrame(rows)
    if tasks:
        absent = sorted(set(tasks) - set(cells["task"]))
        if absent:
            raise InputError(f"task(s) not found: {', '.join(absent)}", path=files[0], hint=f"tasks: {', '.join(sorted(cells['task'].unique()))}")
    _check_settings_cross(cells, report)

    have_samples = all(samples_files.get(files_path) is not None for files_path in samples_files)
    if level == "example" and not any(samples_files.values()):
        raise InputError("no instance-level _samples.jsonl file found beside the records", path=files[0], hint="use level='aggregate'")
    if level == "example" or (level == "auto" and have_samples):
        return _example_tensor(cells, samples_files, report, metric_kind, duplicates)
    return _aggregate_tensor(cells, report, metric_kind, duplicates, source=str(source))


def _check_settings_cross(cells: pd.DataFrame, report: IngestReport) -> None:
    setting_columns = [c for c in cells.columns if c.startswith("setting_")]
    if setting_columns:
        report.note(f"perturbation labels include the generation settings {', '.join(c[len('setting_'):] for c in setting_columns)}")


def _task_info(cells: pd.DataFrame) -> pd.DataFrame:
    info = cells.groupby("task").agg(metric=("metric", "first"), proportion=("proportion", "first"))
    return info


def _perturbation_info(cells: pd.DataFrame) -> pd.DataFrame:
    columns = ["perturbation", "variant"] + [c for c in cells.columns if c.startswith("setting_")]
    info = cells[columns].drop_duplicates("perturbation").set_index("perturbation")
    info.columns = [c[len("setting_"):] if c.startswith("setting_") else c for c in info.columns]
    return info


def _aggregate_tensor(cells: pd.DataFrame, report: IngestReport, metric_kind: str | None, duplicates: str, *, source: str) -> tuple[xr.Dataset, IngestReport]:
    countable = cells["proportion"] & cells["n_eval"].notna() & (cells["n_eval"].fillna(0) > 0)
    kind = metric_kind or ("binary" if bool(countable.all()) else "continuous")
    metrics = sorted(cells["metric"].unique())
    attrs = {
        "source": "Every Eval Ever aggregate records",
        "schema": "Every Eval Ever 0.2.0 to 0.3.x",
        "perturbation_kind": "HELM robustness and fairness variants (worst case over perturbations) and generation settings",
    }
    if kind == "binary":
        for _, row in cells.loc[~cells["proportion"]].iterrows():
            report.drop(REASON_NOT_PROPORTION, rows=0, cells=1, where=f"{row['file']} ({row['task']}, {row['metric']})")
        for _, row in cells.loc[cells["proportion"] & ~countable].iterrows():
            report.drop(REASON_NO_COUNT, rows=0, cells=1, where=f"{row['file']} ({row['task']})")
        kept = cells.loc[countable]
        if kept.empty:
            raise InputError(
                "no task has a proportion metric with an example count, so no binomial counts can be built",
                path=source,
                hint="use metric_kind='continuous'",
            )
        counts = _counts_from_means(kept, report)
        kept_metrics = sorted(kept["metric"].unique())
        attrs["counts_reconstructed"] = "n_correct = round(mean score * n_total), n_total = rounded '# eval' count"
        ds = _tensor.from_counts(
            counts,
            dataset=report.dataset,
            metric=kept_metrics[0] if len(kept_metrics) == 1 else "mixed",
            structure="crossed",
            task_info=_task_info(kept),
            perturbation_info=_perturbation_info(kept),
            duplicates=duplicates,
            source=source,
            attrs=attrs,
        )
        report.cells_kept += len(kept)
        return ds, report

    if len(metrics) > 1:
        report.note(f"tasks use different metrics ({', '.join(metrics)}); the task coordinate 'metric' names each task's metric")
    ds = from_scores(
        cells,
        dataset=report.dataset,
        metric=metrics[0] if len(metrics) == 1 else "mixed",
        task_info=_task_info(cells),
        perturbation_info=_perturbation_info(cells),
        duplicates=duplicates,
        source=source,
        attrs=attrs,
    )
    report.cells_kept += len(cells)
    return ds, report


def _check_total_rows(record_path: Path, samples: Path, report: IngestReport) -> None:
    """Note a samples file with fewer or more lines than its record's ``total_rows`` declares.

    A file cut exactly at the end of a line parses cleanly, so the declared
    count is the only sign that instances are missing.
    """
    declared = _get_path(read_json_file(record_path), "detailed_evaluation_results.total_rows")
    if not isinstance(declared, int) or isinstance(declared, bool):
        return
    with samples.open("rb") as handle:
        found = sum(1 for line in handle if line.strip())
    if found != declared:
        message = (
            f"{samples.name} has {found} instance rows but {record_path.name} declares total_rows = {declared}; "
            "the file may be truncated or belong to another run"
        )
        log.warning("%s", message)
        report.note(message)


def _example_tensor(
    cells: pd.DataFrame,
    samples_files: Mapping[Path, Path | None],
    report: IngestReport,
    metric_kind: str | None,
    duplicates: str,
) -> tuple[xr.Dataset, IngestReport]:
    rows: list[dict[str, Any]] = []
    for record_path, samples in samples_files.items():
        if samples is None:
            report.note(f"{record_path.name} has no _samples.jsonl file; its aggregate scores are not in the per-example tensor")
            continue
        own = cells.loc[cells["file"] == record_path.name]
        links = {str(r["evaluation_result_id"]): (r["model"], r["task"], r["perturbation"]) for _, r in own.iterrows() if r["variant"] == ORIGINAL}
        links.update({str(r["task"]): (r["model"], r["task"], r["perturbation"]) for _, r in own.iterrows() if r["variant"] == ORIGINAL})
        rows.extend(_read_samples(samples, report, links))
        _check_total_rows(record_path, samples, report)
    if not rows:
        # Name the samples file whose rows were all dropped, not the record that points to it.
        read = [samples for samples in samples_files.values() if samples is not None]
        if len(read) == 1:
            location = read[0]
        elif read:
            location = read[0].parent
        else:
            location = next(iter(samples_files))
        reasons = "; ".join(f"{reason} (for example {', '.join(examples[:3])})" for reason, examples in report.drop_examples.items())
        raise InputError(
            "no per-example scores found in the _samples.jsonl files" + (f"; rows dropped: {reasons}" if reasons else ""),
            path=location,
        )
    records = pd.DataFrame(rows)
    metrics = sorted(cells["metric"].unique())
    ds = _tensor.from_examples(
        records,
        dataset=report.dataset,
        metric=metrics[0] if len(metrics) == 1 else "mixed",
        metric_kind=metric_kind,
        structure="crossed",
        task_info=_task_info(cells),
        duplicates=duplicates,
        source="instance-level samples",
        attrs={"source": "Every Eval Ever instance-level samples"},
    )
    report.cells_kept += int(ds["observed"].sum())
    return ds, report
