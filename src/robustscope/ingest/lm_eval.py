"""Loader for lm-evaluation-harness output folders (``lm_eval --log_samples``).

The harness writes, per run, into ``<output>/<model_name_sanitized>/``::

    results_<timestamp>.json
        keys ``results``, ``configs`` (one task configuration per task),
        ``n-shot``, ``n-samples``, ``config`` (model, model_args and the
        seeds random_seed, numpy_seed, torch_seed, fewshot_seed) and, from
        lm-eval 0.4.3 on, ``model_name``
    samples_<task>_<timestamp>.jsonl
        one JSON object per document and filter: ``doc_id``, ``doc_hash``,
        ``prompt_hash``, ``target``, ``resps``, ``filtered_resps``,
        ``filter``, ``metrics`` (the metric names) and one number per metric
        such as ``acc`` or ``exact_match``

The loader walks the source folder for ``results_*.json`` files, reads the
samples file of every task those results list (same timestamp, same
folder) and builds a per-example tensor (example = ``doc_id``) whose score
is one metric and whose prediction is the filtered response as text.

What a perturbation is depends on the option ``perturbation``:

``"task"``
    Each lm-eval task is a variant of a base task (``math_perturbed_full``
    and ``math_rephrased_full`` are variants of ``math``). The tensor's task
    is the base task and its perturbation is the lm-eval task name. The base
    task comes from ``task_groups`` when given, else from the group in
    ``group_subtasks`` that lists the variant, else from the longest common
    name prefix of all variants. Structure: nested.
``"prompt_hash"``
    The prompt template. Its label is the first 12 hex digits of the SHA-256
    of the task's template fields in ``configs`` (``doc_to_text``,
    ``doc_to_choice``, ``doc_to_target``, ``description``, the delimiters
    and ``gen_prefix``). The per-row ``prompt_hash`` is not used as a label
    because it hashes the full prompt, which differs for every document.
    Structure: nested.
``"n_shot"``
    The number of few-shot examples, from ``n-shot``. Structure: crossed.
``"seed"``
    The four seeds of ``config`` in the order of lm-eval's ``--seed`` option
    (random, numpy, torch, fewshot), for example ``"0,1234,1234,1234"``.
    Structure: crossed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from .. import tensor as _tensor
from .._logging import get_logger
from ..errors import InputError
from . import register_loader
from .manifest import IngestReport

log = get_logger("ingest.lm_eval")

PERTURBATIONS = ("task", "prompt_hash", "n_shot", "seed")
DEFAULT_METRICS = ("acc", "exact_match")
# Per-document metrics that lm-eval logs as a proportion of 0 to 1 (0/1 for one document).
PROPORTION_METRICS = frozenset({"acc", "acc_norm", "exact_match"})
SEED_KEYS = ("random_seed", "numpy_seed", "torch_seed", "fewshot_seed")
PROMPT_FIELDS = (
    "doc_to_text",
    "doc_to_choice",
    "doc_to_target",
    "description",
    "target_delimiter",
    "fewshot_delimiter",
    "gen_prefix",
)
RESULTS_PATTERN = re.compile(r"^results_(?P<timestamp>.+)\.json$")
MODEL_ARG_KEYS = ("peft", "delta", "pretrained", "model", "path", "engine")
OTHER_FILTER_REASON = "row for a filter other than the chosen one"
MISSING_SAMPLES_REASON = "task listed in the results has no samples file"
MISSING_SAMPLES_POLICIES = ("error", "skip")


def _find_results(source: Path) -> list[Path]:
    if source.is_file():
        if not RESULTS_PATTERN.match(source.name):
            raise InputError(
                "not an lm-eval results file (expected results_<timestamp>.json)",
                path=source,
                hint="pass the output folder of `lm_eval --output_path ... --log_samples` or one results file",
            )
        return [source]
    found = sorted(p for p in source.rglob("results_*.json") if RESULTS_PATTERN.match(p.name))
    if not found:
        raise InputError(
            "no results_<timestamp>.json file found in this folder or below it",
            path=source,
            hint="run lm_eval with --output_path and --log_samples, and pass that output folder",
        )
    return found


def _read_results(path: Path) -> dict[str, Any]:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise InputError(f"invalid JSON at line {error.lineno}: {error.msg}", path=path) from error
    except UnicodeDecodeError as error:
        raise InputError(f"file is not UTF-8 text: {error}", path=path) from error
    if not isinstance(payload, dict) or not isinstance(payload.get("results"), dict):
        raise InputError("results file has no 'results' object", path=path, hint="pass a results_*.json written by lm-evaluation-harness")
    return payload


def _model_name(results: Mapping[str, Any], path: Path) -> str:
    """Return the model name: ``model_name``, else the model argument in ``config.model_args``."""
    name = results.get("model_name")
    if isinstance(name, str) and name:
        return name
    config = results.get("config") or {}
    model_args = config.get("model_args")
    if isinstance(model_args, Mapping):
        for key in MODEL_ARG_KEYS:
            if model_args.get(key):
                return str(model_args[key])
    elif isinstance(model_args, str):
        pairs = dict(part.split("=", 1) for part in model_args.split(",") if "=" in part)
        for key in MODEL_ARG_KEYS:
            if pairs.get(key):
                return pairs[key]
    if config.get("model"):
        return str(config["model"])
    raise InputError(
        "model name not found (no 'model_name', no model in 'config.model_args' or 'config.model')",
        path=path,
        hint="the results file looks incomplete; rerun lm_eval or add 'model_name'",
    )


def _task_names(results: Mapping[str, Any]) -> list[str]:
    """Return the evaluated tasks: those with a configuration, which excludes groups."""
    configs = results.get("configs")
    if isinstance(configs, Mapping) and configs:
        return sorted(configs)
    groups = {name for name, members in (results.get("group_subtasks") or {}).items() if members}
    return sorted(name for name in results["results"] if name not in groups)


def _seed_label(results: Mapping[str, Any]) -> str:
    config = results.get("config") or {}
    return ",".join(str(config.get(key)) for key in SEED_KEYS)


def _prompt_label(config: Mapping[str, Any]) -> tuple[str, str]:
    """Return a short hash of the task's prompt template fields and its ``doc_to_text``."""
    fields = {key: config.get(key) for key in PROMPT_FIELDS}
    text = json.dumps(fields, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12], str(config.get("doc_to_text", ""))


def _prediction_text(filtered: Any) -> str:
    """Return the filtered response as text.

    Generation tasks log ``[text]``; the text is returned. Log-likelihood
    tasks log one ``[log-likelihood, is_greedy]`` pair per choice; the index
    of the most likely choice is returned as text. Other shapes are returned
    as compact JSON.
    """
    if isinstance(filtered, str):
        return filtered
    if isinstance(filtered, list) and len(filtered) == 1 and isinstance(filtered[0], str):
        return filtered[0]
    if isinstance(filtered, list) and filtered and all(isinstance(item, list) and len(item) == 2 for item in filtered):
        try:
            likelihoods = [float(item[0]) for item in filtered]
        except (TypeError, ValueError):
            likelihoods = []
        if likelihoods:
            return str(max(range(len(likelihoods)), key=likelihoods.__getitem__))
    return json.dumps(filtered, ensure_ascii=False, separators=(",", ":"))


def _read_samples(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """Return ``(line number, row)`` for every non-empty line of a samples file."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(
                    f"invalid JSON at column {error.colno}: {error.msg}",
                    path=path,
                    row=number,
                    hint="each line of a samples file must be one JSON object; the file may be truncated",
                ) from error
            if not isinstance(row, dict):
                raise InputError("line is not a JSON object", path=path, row=number, value=type(row).__name__)
            rows.append((number, row))
    return rows


def _choose_filter(task: str, present: list[str], option: str | Mapping[str, str] | None, path: Path) -> str:
    requested = option.get(task) if isinstance(option, Mapping) else option
    if requested is None:
        if len(present) == 1:
            return present[0]
        raise InputError(
            f"task {task} logs several filters ({', '.join(present)}) and no filter was chosen",
            path=path,
            hint="pass filter='<name>' (or a mapping from task to filter name)",
        )
    if requested not in present:
        raise InputError(
            f"filter {requested!r} not found for task {task}; filters present: {', '.join(present)}",
            path=path,
            hint="pass one of the filters present (or a mapping from task to filter name)",
        )
    return requested


def _choose_metric(rows: list[tuple[int, dict[str, Any]]], option: str | None, path: Path) -> str:
    names: set[str] = set()
    for _, row in rows:
        names.update(str(m) for m in row.get("metrics") or [])
    if option is not None:
        if option not in names and not any(option in row for _, row in rows):
            raise InputError(
                f"metric {option!r} not found; metrics present: {', '.join(sorted(names)) or 'none'}",
                path=path,
                hint="pass metric='<name>' with one of the metrics present",
            )
        return option
    for candidate in DEFAULT_METRICS:
        if candidate in names:
            return candidate
    raise InputError(
        f"neither 'acc' nor 'exact_match' is logged; metrics present: {', '.join(sorted(names)) or 'none'}",
        path=path,
        hint="pass metric='<name>' with one of the metrics present",
    )


def _read_task_samples(
    path: Path,
    task: str,
    filter_option: str | Mapping[str, str] | None,
    metric_option: str | None,
    report: IngestReport,
) -> tuple[list[dict[str, Any]], str, str]:
    """Read one samples file; return one record per document for the chosen filter."""
    rows = _read_samples(path)
    if not rows:
        raise InputError("samples file has no rows", path=path, hint="rerun lm_eval with --log_samples")
    for number, row in rows:
        for key in ("doc_id", "filter"):
            if key not in row:
                raise InputError(f"row has no {key!r} field", path=path, row=number, hint="pass a samples file written by lm-evaluation-harness")
    filters = sorted({str(row["filter"]) for _, row in rows})
    chosen = _choose_filter(task, filters, filter_option, path)
    metric = _choose_metric(rows, metric_option, path)

    records = []
    seen: dict[str, int] = {}
    for number, row in rows:
        if str(row["filter"]) != chosen:
            report.drop(OTHER_FILTER_REASON, where=f"{path.name} line {number} (filter {row['filter']})")
            continue
        raw_id = row["doc_id"]
        if isinstance(raw_id, bool) or not isinstance(raw_id, (int, str)) or str(raw_id).strip() == "":
            raise InputError(
                "doc_id is not a document number",
                path=path,
                row=number,
                column="doc_id",
                value=raw_id,
                hint="lm-eval writes doc_id as the document's integer index",
            )
        doc_id = str(raw_id)
        if doc_id in seen:
            raise InputError(
                f"document {doc_id} appears twice for filter {chosen!r} (first at line {seen[doc_id]})",
                path=path,
                row=number,
                column="doc_id",
                value=row["doc_id"],
                hint="a samples file holds one row per document and filter; check that two runs were not concatenated",
            )
        seen[doc_id] = number
        if metric not in row:
            present = sorted(str(m) for m in row.get("metrics") or [])
            raise InputError(
                f"metric {metric!r} not found in this row; metrics present: {', '.join(present) or 'none'}",
                path=path,
                row=number,
                column=metric,
            )
        value = row[metric]
        if isinstance(value, bool):
            value = float(value)
        if not isinstance(value, (int, float)) or not math.isfinite(float(value)):
            raise InputError(
                f"metric {metric!r} is not a finite number",
                path=path,
                row=number,
                column=metric,
                value=value,
                hint="choose a per-document metric with metric='<name>'",
            )
        if metric in PROPORTION_METRICS and not 0.0 <= float(value) <= 1.0:
            raise InputError(
                f"metric {metric!r} is outside [0, 1]",
                path=path,
                row=number,
                column=metric,
                value=value,
                hint="lm-eval logs this metric as a proportion; the file may have been edited or written by another tool",
            )
        records.append(
            {
                "example": doc_id,
                "score": float(value),
                "prediction": _prediction_text(row.get("filtered_resps")),
            }
        )
    report.add_file(path, rows_read=len(rows), rows_kept=len(records))
    return records, chosen, metric


def _common_prefix(names: list[str]) -> str:
    prefix = os.path.commonprefix(names)
    return prefix.rstrip("_-. ")


def _base_tasks(variants: list[str], groups: Mapping[str, str], task_groups: Mapping[str, str] | None) -> dict[str, str]:
    """Map each variant task to its base task for ``perturbation="task"``."""
    mapping: dict[str, str] = {}
    ungrouped = []
    for variant in variants:
        if task_groups and variant in task_groups:
            mapping[variant] = str(task_groups[variant])
        elif variant in groups:
            mapping[variant] = groups[variant]
        else:
            ungrouped.append(variant)
    if ungrouped:
        base = _common_prefix(ungrouped) or "lm-eval"
        for variant in ungrouped:
            mapping[variant] = base
    return mapping


@register_loader("lm-eval", "lm-evaluation-harness output folders: results_*.json with samples_<task>_*.jsonl")
def load(
    source: str | Path | list[str | Path],
    *,
    perturbation: str = "task",
    metric: str | None = None,
    filter: str | Mapping[str, str] | None = None,
    tasks: list[str] | None = None,
    task_groups: Mapping[str, str] | None = None,
    missing_samples: str = "error",
    duplicates: str = "error",
    dataset: str = "lm-eval",
) -> tuple[Any, IngestReport]:
    """Read lm-evaluation-harness logs into a per-example tensor.

    Parameters
    ----------
    source
        An output folder of ``lm_eval --output_path DIR --log_samples``
        (searched recursively for ``results_*.json``), one results file, or
        a list of those.
    perturbation
        ``"task"`` (default), ``"prompt_hash"``, ``"n_shot"`` or ``"seed"``;
        see the module documentation.
    metric
        Per-document metric used as the score. Default: ``acc`` if logged,
        else ``exact_match``.
    filter
        Filter whose rows are read, or a mapping from task to filter. Default:
        the only filter a task logs; a task that logs several needs a choice.
    tasks
        Read only these lm-eval tasks (names as in the results file).
    task_groups
        For ``perturbation="task"``: mapping from lm-eval task to base task.
    missing_samples
        ``"error"`` (default) raises when a task in the results has no samples
        file; ``"skip"`` skips the task and records it in the manifest.
    duplicates
        Policy for two runs that give the same (model, task, perturbation,
        document): ``"error"``, ``"first"``, ``"last"`` or ``"mean"``.
    dataset
        Name stored in the tensor.

    Returns
    -------
    tuple of (xarray.Dataset, IngestReport)
        The tensor (score on the metric's own scale, 0/1 for ``acc`` and
        ``exact_match``) and the ingestion report.

    Raises
    ------
    InputError
        When no results file is found, a samples file is missing, malformed
        (file and line number) or lacks the metric, or a filter is ambiguous.
    """
    if perturbation not in PERTURBATIONS:
        raise InputError(f"unknown perturbation {perturbation!r}; valid values: {', '.join(PERTURBATIONS)}", value=perturbation)
    if missing_samples not in MISSING_SAMPLES_POLICIES:
        raise InputError(f"unknown missing_samples policy {missing_samples!r}; valid values: {', '.join(MISSING_SAMPLES_POLICIES)}")
    sources = [Path(item) for item in source] if isinstance(source, (list, tuple)) else [Path(source)]
    if not sources:
        raise InputError("no source given", hint="pass an lm-eval output folder or a results_*.json file")
    for item in sources:
        if not item.exists():
            raise InputError("path not found", path=item, hint="pass an lm-eval output folder or a results_*.json file")
    results_paths = sorted({path for item in sources for path in _find_results(item)})
    source = sources[0] if len(sources) == 1 else Path(os.path.commonpath([str(item.resolve()) for item in sources]))

    report = IngestReport(
        loader="lm-eval",
        dataset=dataset,
        options={
            "source": [str(item) for item in sources],
            "perturbation": perturbation,
            "metric": metric,
            "filter": dict(filter) if isinstance(filter, Mapping) else filter,
            "tasks": tasks,
            "task_groups": dict(task_groups) if task_groups else None,
            "missing_samples": missing_samples,
            "duplicates": duplicates,
        },
    )

    records: list[dict[str, Any]] = []
    run_rows: list[dict[str, Any]] = []
    groups: dict[str, str] = {}
    seen_tasks: set[str] = set()
    chosen_filters: dict[str, set[str]] = {}
    metrics_used: set[str] = set()
    for results_path in results_paths:
        results = _read_results(results_path)
        report.add_file(results_path, rows_read=0, rows_kept=0)
        timestamp = RESULTS_PATTERN.match(results_path.name).group("timestamp")
        model = _model_name(results, results_path)
        for group, members in (results.get("group_subtasks") or {}).items():
            for member in members or []:
                groups.setdefault(str(member), str(group))
        configs = results.get("configs") or {}
        for task in _task_names(results):
            if tasks and task not in tasks:
                continue
            samples_path = results_path.with_name(f"samples_{task}_{timestamp}.jsonl")
            if not samples_path.is_file():
                if missing_samples == "error":
                    raise InputError(
                        f"samples file for task {task} not found",
                        path=samples_path,
                        hint="run lm_eval with --log_samples, restrict the tasks with tasks=[...], or pass missing_samples='skip'",
                    )
                report.drop(MISSING_SAMPLES_REASON, rows=0, where=f"{results_path.name}: {task}")
                continue
            task_records, chosen, metric_name = _read_task_samples(samples_path, task, filter, metric, report)
            seen_tasks.add(task)
            chosen_filters.setdefault(task, set()).add(chosen)
            metrics_used.add(metric_name)

            expected = ((results.get("n-samples") or {}).get(task) or {}).get("effective")
            if isinstance(expected, int) and expected != len(task_records):
                report.note(f"{samples_path.name}: {len(task_records)} documents logged for filter {chosen!r}, but the results report {expected} evaluated")

            prompt_hash, template = _prompt_label(configs.get(task) or {})
            run = {
                "model": model,
                "variant": task,
                "n_shot": str((results.get("n-shot") or {}).get(task, "")),
                "seed": _seed_label(results),
                "prompt_hash": prompt_hash,
                "prompt_template": template,
                "filter": chosen,
            }
            run_rows.append(run)
            for record in task_records:
                records.append({**record, **run})

    if tasks:
        unknown = sorted(set(tasks) - seen_tasks)
        if unknown:
            raise InputError(f"task(s) not found in any results file: {', '.join(unknown)}", path=source)
    if not records:
        raise InputError("no samples were read", path=source, hint="check the tasks option and that lm_eval ran with --log_samples")
    if len(metrics_used) > 1:
        raise InputError(
            f"tasks use different default metrics ({', '.join(sorted(metrics_used))}); a tensor contains one metric",
            path=source,
            hint="pass metric='<name>', or ingest the tasks separately with tasks=[...]",
        )
    metric_name = metrics_used.pop()

    frame = pd.DataFrame(records)
    runs = pd.DataFrame(run_rows).drop_duplicates()
    if perturbation == "task":
        bases = _base_tasks(sorted(frame["variant"].unique()), groups, task_groups)
        frame["task"] = frame["variant"].map(bases)
        frame["perturbation"] = frame["variant"]
        report.note("perturbation is the lm-eval task; base tasks: " + "; ".join(f"{v} -> {b}" for v, b in sorted(bases.items())))
        runs["task"] = runs["variant"].map(bases)
        runs["perturbation"] = runs["variant"]
    else:
        frame["task"] = frame["variant"]
        frame["perturbation"] = frame[perturbation]
        runs["task"] = runs["variant"]
        runs["perturbation"] = runs[perturbation]

    structure = "nested" if perturbation in ("task", "prompt_hash") else "crossed"
    info_columns = ["prompt_template"] if perturbation == "prompt_hash" else []
    if perturbation == "n_shot":
        info_columns = ["n_shot"]
    index = ["task", "perturbation"] if structure == "nested" else ["perturbation"]
    perturbation_info = runs[index + info_columns].drop_duplicates(index).set_index(index) if info_columns else None
    for task, names in sorted(chosen_filters.items()):
        report.options.setdefault("filters_used", {})[task] = sorted(names)

    report.cells_read = int(runs.shape[0])
    report.cells_kept = int(runs.shape[0])
    ds = _tensor.from_examples(
        frame[["model", "task", "perturbation", "example", "score", "prediction"]],
        dataset=dataset,
        metric=metric_name,
        structure=structure,
        perturbation_info=perturbation_info,
        duplicates=duplicates,
        source=str(source),
        attrs={
            "source": "lm-evaluation-harness samples files",
            "perturbation_kind": perturbation,
        },
    )
    log.info("read %d documents from %d runs in %s", len(frame), len(runs), source)
    return ds, report
