"""Loader for HELM run folders (Stanford CRFM ``helm-run`` output).

A run folder contains:

``run_spec.json``
    the run's name (``"<scenario>:<args>,model=<model>"``), its
    ``adapter_spec`` (model, number of trials) and
    ``data_augmenter_spec.perturbation_specs`` (the perturbations applied);
``scenario_state.json``
    the request states; each ``instance`` has an ``id``, a ``split`` and,
    for perturbed copies, a ``perturbation`` object with a ``name``;
``per_instance_stats.json``
    one entry per (instance, perturbation, train trial) with its ``stats``
    (``{"name": {"name": metric, "split": ...}, "mean": ...}``);
``stats.json``
    aggregate statistics; ``name.perturbation`` marks HELM's robustness and
    fairness aggregates (``{"name": "robustness", "computed_on": "worst"}``)
    and single perturbations (``"typos"``, ``"dialect"``...).

``source`` is one run folder or a folder whose sub-folders are run folders.
The model comes from ``adapter_spec.model``, the task is the run name without
its ``model=`` argument, and the perturbation is the perturbation's ``name``,
or ``"original"`` for unperturbed statistics. HELM's own robustness and
fairness aggregates take the worst case over an instance's perturbations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from .. import tensor as _tensor
from .._logging import get_logger
from ..errors import InputError
from . import register_loader
from ..tensor import from_scores
from .every_eval_ever import read_json_file
from .manifest import IngestReport

log = get_logger("ingest.helm")

RUN_SPEC = "run_spec.json"
SCENARIO_STATE = "scenario_state.json"
PER_INSTANCE_STATS = "per_instance_stats.json"
STATS = "stats.json"
ORIGINAL = "original"
DEFAULT_METRIC = "exact_match"
LEVELS = ("auto", "example", "aggregate")
# HELM statistics whose per-instance value is 0 or 1 and whose mean is a proportion.
PROPORTION_METRICS = frozenset({"exact_match", "quasi_exact_match", "prefix_exact_match", "quasi_prefix_exact_match"})

REASON_SPLIT = "statistic of another split than the requested one"
REASON_NO_METRIC = "instance has no value for the requested metric"
REASON_PERTURBATION = "perturbation not selected by the perturbations option"


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise InputError(f"missing {path.name}", path=path, hint="a HELM run folder contains run_spec.json, stats.json and per_instance_stats.json")
    return read_json_file(path, hint="the file may be truncated; rerun helm-run or restore the file")


def find_run_folders(source: Path) -> list[Path]:
    """Return ``source`` if it is a run folder, else its sub-folders that are run folders.

    Raises
    ------
    InputError
        When ``source`` does not exist or contains no ``run_spec.json``.
    """
    if not source.exists():
        raise InputError("folder not found", path=source, hint="pass a HELM run folder or a folder of run folders")
    if (source / RUN_SPEC).is_file():
        return [source]
    runs = sorted(p for p in source.iterdir() if p.is_dir() and (p / RUN_SPEC).is_file()) if source.is_dir() else []
    if not runs:
        raise InputError(f"no {RUN_SPEC} found in the folder or its sub-folders", path=source, hint="pass a HELM run folder (benchmark_output/runs/<suite>/<run>)")
    return runs


def _task_name(run_name: str) -> str:
    """Return the run name without its ``model=`` and ``model_deployment=`` arguments."""
    scenario, _, arguments = run_name.partition(":")
    kept = [a for a in arguments.split(",") if a and not a.startswith(("model=", "model_deployment="))]
    return f"{scenario}:{','.join(kept)}" if kept else scenario


def _perturbation_label(value: Any) -> str:
    if not value:
        return ORIGINAL
    if isinstance(value, dict):
        return str(value.get("name") or ORIGINAL)
    return str(value)


def _read_run_spec(run: Path) -> dict[str, Any]:
    spec = _read_json(run / RUN_SPEC)
    if not isinstance(spec, dict):
        raise InputError("run_spec.json must contain a JSON object", path=run / RUN_SPEC)
    for key in ("adapter_spec", "data_augmenter_spec"):
        if spec.get(key) is not None and not isinstance(spec[key], dict):
            raise InputError(f"field {key!r} must be a JSON object", path=run / RUN_SPEC, column=key, value=type(spec[key]).__name__)
    name = spec.get("name")
    model = (spec.get("adapter_spec") or {}).get("model")
    if not name:
        raise InputError("missing required field 'name'", path=run / RUN_SPEC, column="name")
    if not model:
        raise InputError("missing required field 'adapter_spec.model'", path=run / RUN_SPEC, column="adapter_spec.model")
    specs = (spec.get("data_augmenter_spec") or {}).get("perturbation_specs") or []
    return {
        "name": str(name),
        "model": str(model),
        "task": _task_name(str(name)),
        "perturbation_specs": [str(s.get("class_name", "")).rsplit(".", 1)[-1] for s in specs if isinstance(s, dict)],
        "metric_names": [
            n for m in spec.get("metric_specs") or [] if isinstance(m, dict) and isinstance(m.get("args"), dict) for n in m["args"].get("names", [])
        ],
    }


def _instance_splits(run: Path) -> dict[str, str]:
    path = run / SCENARIO_STATE
    if not path.is_file():
        return {}
    state = _read_json(path)
    splits: dict[str, str] = {}
    for request in state.get("request_states", []) if isinstance(state, dict) else []:
        instance = request.get("instance") if isinstance(request, dict) else None
        if isinstance(instance, dict) and "id" in instance:
            splits[str(instance["id"])] = str(instance.get("split", ""))
    return splits


def _available_metrics(entries: list[dict[str, Any]]) -> list[str]:
    return sorted({str(s["name"].get("name")) for e in entries for s in e.get("stats", []) if isinstance(s.get("name"), dict)})


def _check_entries(entries: list[Any], path: Path) -> None:
    """Raise InputError at the first entry that is not an object with a list of statistic objects."""
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InputError("entry is not a JSON object", path=path, row=position + 1, value=type(entry).__name__)
        stats = entry.get("stats", [])
        if not isinstance(stats, list) or not all(isinstance(stat, dict) for stat in stats):
            raise InputError("field 'stats' must be a list of JSON objects", path=path, row=position + 1, column="stats", value=type(stats).__name__)


def _trial_index(entry: dict[str, Any], path: Path, row: int) -> int:
    value = entry.get("train_trial_index", 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError("train_trial_index is not an integer", path=path, row=row, column="train_trial_index", value=value)
    return value


def _stat_mean(stat: dict[str, Any], metric: str, path: Path, row: int | None) -> float:
    """Return a statistic's mean, raising InputError when it is not a finite number or a proportion outside [0, 1]."""
    value = stat.get("mean")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"mean of statistic {metric!r} is not a finite number", path=path, row=row, column="mean", value=value)
    if metric in PROPORTION_METRICS and not 0.0 <= value <= 1.0:
        raise InputError(f"mean of statistic {metric!r} is outside [0, 1]", path=path, row=row, column="mean", value=value)
    return float(value)


def _read_instances(run: Path, info: dict[str, Any], metric: str, split: str, report: IngestReport) -> list[dict[str, Any]]:
    path = run / PER_INSTANCE_STATS
    entries = _read_json(path)
    if not isinstance(entries, list):
        raise InputError("per_instance_stats.json must contain a JSON list", path=path)
    _check_entries(entries, path)
    available = _available_metrics(entries)
    if metric not in available:
        raise InputError(f"metric {metric!r} not found", path=path, column="stats.name.name", value=metric, hint=f"available metrics: {', '.join(available)}")
    splits = _instance_splits(run)
    trials = {_trial_index(e, path, position + 1) for position, e in enumerate(entries)}
    rows = []
    for position, entry in enumerate(entries):
        if "instance_id" not in entry:
            raise InputError("missing required field 'instance_id'", path=path, row=position + 1, column="instance_id")
        raw_id = entry["instance_id"]
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or str(raw_id).strip() == "":
            raise InputError("instance_id is empty or neither a string nor an integer", path=path, row=position + 1, column="instance_id", value=raw_id)
        instance = str(raw_id)
        perturbation = _perturbation_label(entry.get("perturbation"))
        stat = next(
            (s for s in entry.get("stats", []) if isinstance(s.get("name"), dict) and s["name"].get("name") == metric and not s["name"].get("perturbation")),
            None,
        )
        if stat is None or stat.get("count", 0) == 0:
            report.drop(REASON_NO_METRIC, where=f"{run.name} instance {instance}")
            continue
        stat_split = stat["name"].get("split") or splits.get(instance, "")
        if stat_split != split:
            report.drop(REASON_SPLIT, where=f"{run.name} instance {instance} (split {stat_split})")
            continue
        example = instance if len(trials) == 1 else f"{instance}/trial{int(entry.get('train_trial_index', 0))}"
        score = _stat_mean(stat, metric, path, position + 1)
        rows.append({"model": info["model"], "task": info["task"], "perturbation": perturbation, "example": example, "score": score})
    report.add_file(path, rows_read=len(entries), rows_kept=len(rows))
    if len(trials) > 1:
        report.note(f"{run.name}: {len(trials)} train trials; each (instance, trial) is one example labelled '<instance>/trial<k>'")
    return rows


def _read_aggregates(run: Path, info: dict[str, Any], metric: str, split: str, report: IngestReport) -> list[dict[str, Any]]:
    path = run / STATS
    entries = _read_json(path)
    if not isinstance(entries, list):
        raise InputError("stats.json must contain a JSON list", path=path)
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InputError("entry is not a JSON object", path=path, row=position + 1, value=type(entry).__name__)
    available = sorted({(e.get("name") or {}).get("name") for e in entries if isinstance(e.get("name"), dict)} - {None})
    if metric not in available:
        raise InputError(f"metric {metric!r} not found", path=path, column="name.name", value=metric, hint=f"available metrics: {', '.join(available)}")
    rows = []
    metric_entries = [(position, e) for position, e in enumerate(entries) if isinstance(e.get("name"), dict) and e["name"].get("name") == metric]
    for position, entry in metric_entries:
        name = entry["name"]
        if name.get("split") != split:
            report.drop(REASON_SPLIT, where=f"{run.name} {metric} split {name.get('split')}")
            continue
        if not entry.get("count") or entry.get("mean") is None:
            report.drop(REASON_NO_METRIC, where=f"{run.name} {metric} {_perturbation_label(name.get('perturbation'))}")
            continue
        rows.append(
            {
                "model": info["model"],
                "task": info["task"],
                "perturbation": _perturbation_label(name.get("perturbation")),
                "computed_on": str(name["perturbation"].get("computed_on", "")) if isinstance(name.get("perturbation"), dict) else "",
                "score": _stat_mean(entry, metric, path, position + 1),
            }
        )
    report.add_file(path, rows_read=len(metric_entries), rows_kept=len(rows))
    return rows


@register_loader("helm", "HELM run folders: run_spec.json, scenario_state.json, stats.json, per_instance_stats.json")
def load(
    source: str | Path,
    *,
    metric: str = DEFAULT_METRIC,
    split: str = "test",
    level: str = "auto",
    perturbations: Sequence[str] | None = None,
    dataset: str = "helm",
) -> tuple[xr.Dataset, IngestReport]:
    """Read HELM run folders into a crossed model x task x perturbation tensor.

    Parameters
    ----------
    source
        A run folder (with ``run_spec.json``) or a folder of run folders.
    metric
        HELM statistic name (default ``"exact_match"``); an unknown name
        raises an error that lists the run's metrics (``f1_score``,
        ``rouge_l``...).
    split
        Instance split to keep (default ``"test"``).
    level
        ``"example"`` reads ``per_instance_stats.json`` (example = instance
        id), ``"aggregate"`` reads ``stats.json`` including HELM's robustness
        and fairness aggregates, and ``"auto"`` (default) reads per-example
        statistics when every run has them.
    perturbations
        Keep only these perturbation labels (default: all).
    dataset
        Name stored in the tensor.

    Returns
    -------
    (xarray.Dataset, IngestReport)
        The metric is binary when every kept score is 0 or 1, otherwise
        continuous (F1, ROUGE...).

    Raises
    ------
    InputError
        On a missing or truncated file, a missing required field, an unknown
        metric (the message lists the available ones) or when nothing is left.
    """
    if level not in LEVELS:
        raise InputError(f"unknown level {level!r}; valid values: {', '.join(LEVELS)}", column="level", value=level)
    source = Path(source)
    runs = find_run_folders(source)
    report = IngestReport(
        loader="helm",
        dataset=dataset,
        options={"source": str(source), "metric": metric, "split": split, "level": level, "perturbations": list(perturbations) if perturbations else None},
    )
    per_example = level == "example" or (level == "auto" and all((run / PER_INSTANCE_STATS).is_file() for run in runs))

    rows: list[dict[str, Any]] = []
    specs = []
    for run in runs:
        info = _read_run_spec(run)
        report.add_file(run / RUN_SPEC, rows_read=1, rows_kept=1)
        specs.append({"task": info["task"], "run": info["name"], "perturbation_specs": ",".join(info["perturbation_specs"])})
        reader = _read_instances if per_example else _read_aggregates
        rows.extend(reader(run, info, metric, split, report))

    frame = pd.DataFrame(rows)
    if frame.empty:
        raise InputError(f"no {metric} statistic left for split {split!r}", path=source, hint="check the split option (test, valid)")
    report.cells_read = len(frame) if not per_example else frame.groupby(list(_tensor.DIMS)).ngroups
    if perturbations:
        outside = ~frame["perturbation"].isin(list(perturbations))
        for label, count in frame.loc[outside, "perturbation"].value_counts().items():
            report.drop(REASON_PERTURBATION, rows=int(count), where=str(label))
        frame = frame.loc[~outside]
        if frame.empty:
            raise InputError("no statistic left after the perturbations option", path=source, value=list(perturbations))

    task_info = pd.DataFrame(specs).drop_duplicates("task").set_index("task")
    attrs = {"source": "HELM run folders", "split": split, "level": "example" if per_example else "aggregate"}
    if per_example:
        present = sorted(set(frame["perturbation"]))
        report.note(
            "per-example statistics hold the perturbations present in per_instance_stats.json "
            f"({', '.join(present)}); HELM's worst-case robustness and fairness aggregates are in stats.json (level='aggregate')"
        )
        ds = _tensor.from_examples(frame, dataset=dataset, metric=metric, structure="crossed", task_info=task_info, source=str(source), attrs=attrs)
    else:
        perturbation_info = frame[["perturbation", "computed_on"]].drop_duplicates("perturbation").set_index("perturbation")
        ds = from_scores(
            frame, dataset=dataset, metric=metric, task_info=task_info, perturbation_info=perturbation_info, source=str(source), attrs=attrs
        )
    report.cells_kept = int(ds["observed"].sum())
    return ds, report
