"""Loader for Inspect AI evaluation logs (``.eval`` and ``.json``).

Logs are read with ``inspect_ai.log.read_eval_log``; the package
``inspect-ai`` is an optional extra (``pip install 'robustscope[inspect]'``)
imported only when this loader runs. A folder is searched recursively and
every log in it lands in one tensor.

Per sample the loader takes the model (``eval.model``), the task
(``eval.task``), the example (the sample id, or a metadata field), one
score and the output completion as the prediction. Score values map to
numbers as follows: ``C`` (correct) 1, ``I`` (incorrect) 0, ``P`` (partial)
0.5, ``N`` (no answer) 0, booleans 1/0, and numbers as they are.

The perturbation is built from the factors named in ``perturbation``:

``"task_args"``
    every task argument (one factor per argument name);
``"task_args:<name>"``
    one task argument;
``"metadata:<key>"``
    a field of the sample metadata;
``"temperature"``, ``"seed"``
    the generation config value;
``"model_generate_config"``
    every generation config field that changes outputs (one factor per
    field; connection and retry settings are ignored);
``"epoch"``
    the sample epoch.

Each factor becomes a 1-D coordinate on the perturbation dimension and the
label joins ``name=value`` pairs with ``|``; a value a log does not set is
``unset``. The structure is crossed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .. import tensor as _tensor
from .._logging import get_logger
from ..errors import InputError, RobustscopeError
from . import register_loader
from .manifest import IngestReport

log = get_logger("ingest.inspect_ai")

LETTER_SCORES = {"C": 1.0, "I": 0.0, "P": 0.5, "N": 0.0}
SIMPLE_FACTORS = ("task_args", "temperature", "seed", "epoch", "model_generate_config")
# Generation config fields that control transport, not the model's output.
OPERATIONAL_FIELDS = frozenset(
    {"max_connections", "max_retries", "timeout", "attempt_timeout", "batch", "cache_prompt", "extra_headers", "extra_body"}
)
INDEX_FILE = "logs.json"
UNSET = "unset"
NO_SCORE_REASON = "sample has no score from the chosen scorer"
ERROR_REASON = "sample ended with an error"


def _import_reader():
    try:
        from inspect_ai.log import read_eval_log
    except ImportError as error:
        raise RobustscopeError(
            "the Inspect loader needs the package inspect-ai: pip install 'robustscope[inspect]'"
        ) from error
    return read_eval_log


def _find_logs(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    found = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix in (".eval", ".json") and p.name != INDEX_FILE)
    if not found:
        raise InputError("no .eval or .json log found in this folder or below it", path=source, hint="pass an Inspect log folder or log file")
    return found


def _check_factors(perturbation: Sequence[str]) -> list[str]:
    factors = list(perturbation)
    if not factors:
        raise InputError("perturbation needs at least one factor", hint=f"use one or several of {', '.join(SIMPLE_FACTORS)}, 'task_args:<name>' or 'metadata:<key>'")
    for factor in factors:
        if factor in SIMPLE_FACTORS or factor.startswith(("metadata:", "task_args:")) and factor.split(":", 1)[1]:
            continue
        raise InputError(
            f"unknown perturbation factor {factor!r}",
            value=factor,
            hint=f"use one or several of {', '.join(SIMPLE_FACTORS)}, 'task_args:<name>' or 'metadata:<key>'",
        )
    return factors


def _score_number(value: Any, path: Path, sample: str, scorer: str) -> float:
    """Convert an Inspect score value to a number (see the module documentation)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str) and value in LETTER_SCORES:
        return LETTER_SCORES[value]
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = math.nan
    else:
        number = math.nan
    if not math.isfinite(number):
        raise InputError(
            f"score of scorer {scorer!r} is not C, I, P, N, a boolean or a finite number",
            path=path,
            column=f"sample {sample}",
            value=value,
            hint="for scorers that return a dictionary pass score_key='<key>'",
        )
    return number


def _generate_config(eval_log: Any) -> dict[str, Any]:
    """Merge the plan's generation config with the one given to ``eval()``."""
    merged: dict[str, Any] = {}
    plan = getattr(eval_log, "plan", None)
    if plan is not None and getattr(plan, "config", None) is not None:
        merged.update(plan.config.model_dump(exclude_none=True))
    spec_config = getattr(eval_log.eval, "model_generate_config", None)
    if spec_config is not None:
        merged.update(spec_config.model_dump(exclude_none=True))
    return merged


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _run_factors(factors: list[str], task_args: dict[str, Any], config: dict[str, Any]) -> dict[str, str]:
    """Return the factor values fixed for a whole log (all except metadata and epoch)."""
    values: dict[str, str] = {}
    for factor in factors:
        if factor == "task_args":
            for name, value in sorted(task_args.items()):
                values[f"task_args.{name}"] = _text(value)
        elif factor.startswith("task_args:"):
            name = factor.split(":", 1)[1]
            values[f"task_args.{name}"] = _text(task_args[name]) if name in task_args else UNSET
        elif factor in ("temperature", "seed"):
            values[factor] = _text(config[factor]) if factor in config else UNSET
        elif factor == "model_generate_config":
            for name, value in sorted(config.items()):
                if name not in OPERATIONAL_FIELDS:
                    values[f"generate_config.{name}"] = _text(value)
    return values


def _choose_scorer(names: set[str], option: str | None, path: Path) -> str:
    if option is not None:
        return option
    if len(names) == 1:
        return next(iter(names))
    raise InputError(
        f"the logs use several scorers ({', '.join(sorted(names))}) and none was chosen",
        path=path,
        hint="pass scorer='<name>'",
    )


def _read_log(
    read_eval_log: Any,
    path: Path,
    factors: list[str],
    scorer_option: str | None,
    score_key: str | None,
    example: str,
    report: IngestReport,
) -> tuple[list[dict[str, Any]], set[str]]:
    try:
        eval_log = read_eval_log(str(path))
    except Exception as error:  # inspect-ai raises several types for unreadable logs
        raise InputError(f"cannot read the file as an Inspect log: {error}", path=path) from error
    if eval_log.status != "success":
        report.note(f"{path.name}: log status is {eval_log.status!r}; only its scored samples are read")
    samples = eval_log.samples or []
    scorer_names = {name for sample in samples for name in (sample.scores or {})}
    task_args = dict(eval_log.eval.task_args or {})
    run_values = _run_factors(factors, task_args, _generate_config(eval_log))

    records = []
    # A log without scores has no scorer, so its samples are dropped below.
    scorer = _choose_scorer(scorer_names, scorer_option, path) if scorer_names or scorer_option else None
    for sample in samples:
        where = f"{path.name} sample {sample.id} epoch {sample.epoch}"
        if sample.error is not None:
            report.drop(ERROR_REASON, where=where)
            continue
        score = (sample.scores or {}).get(scorer) if scorer else None
        if score is None:
            report.drop(NO_SCORE_REASON, where=where)
            continue
        value = score.value
        if isinstance(value, dict):
            if score_key is None or score_key not in value:
                raise InputError(
                    f"scorer {scorer!r} returns a dictionary; keys present: {', '.join(map(str, value))}",
                    path=path,
                    column=f"sample {sample.id}",
                    hint="pass score_key='<key>'",
                )
            value = value[score_key]
        metadata = sample.metadata or {}
        if str(sample.id).strip() == "":
            raise InputError("sample id is empty", path=path, column="id", value=sample.id, hint="every sample needs a non-empty id, which labels the example")
        if example == "id":
            example_label = str(sample.id)
        else:
            key = example.split(":", 1)[1]
            if key not in metadata:
                raise InputError(f"sample metadata has no key {key!r}", path=path, column=f"sample {sample.id}", hint="check the example option")
            example_label = _text(metadata[key])
        values = dict(run_values)
        for factor in factors:
            if factor == "epoch":
                values["epoch"] = str(sample.epoch)
            elif factor.startswith("metadata:"):
                key = factor.split(":", 1)[1]
                values[f"metadata.{key}"] = _text(metadata[key]) if key in metadata else UNSET
        records.append(
            {
                "model": str(eval_log.eval.model),
                "task": str(eval_log.eval.task),
                "example": example_label,
                "score": _score_number(value, path, str(sample.id), scorer),
                "prediction": sample.output.completion if sample.output is not None else "",
                "factors": values,
            }
        )
    report.add_file(path, rows_read=len(samples), rows_kept=len(records))
    return records, scorer_names


@register_loader("inspect", "Inspect AI evaluation logs (.eval or .json), one file or a folder of them")
def load(
    source: str | Path,
    *,
    perturbation: str | Sequence[str] = ("task_args",),
    scorer: str | None = None,
    score_key: str | None = None,
    example: str = "id",
    duplicates: str = "error",
    dataset: str = "inspect",
) -> tuple[Any, IngestReport]:
    """Read Inspect AI logs into a per-example tensor with a crossed perturbation.

    Parameters
    ----------
    source
        One ``.eval`` or ``.json`` log, or a folder searched recursively
        (Inspect's ``logs.json`` listing is skipped).
    perturbation
        One factor or a list of factors (see the module documentation).
    scorer
        Scorer whose score is read. Default: the only scorer in the logs; a
        log with several scorers needs a choice.
    score_key
        Key to read when the scorer's value is a dictionary.
    example
        ``"id"`` (the sample id, default) or ``"metadata:<key>"``.
    duplicates
        Policy for samples that fall into the same cell twice (for example
        epochs when ``"epoch"`` is not a factor): ``"error"``, ``"first"``,
        ``"last"`` or ``"mean"``.
    dataset
        Name stored in the tensor.

    Returns
    -------
    tuple of (xarray.Dataset, IngestReport)
        The tensor (score 0 to 1 for C/I/P/N scorers, else the scorer's own
        scale) and the ingestion report.

    Raises
    ------
    RobustscopeError
        When inspect-ai is not installed.
    InputError
        When no log is found, a log cannot be read, the scorer is ambiguous
        or missing, or a score value is not a number.
    """
    read_eval_log = _import_reader()
    factors = _check_factors([perturbation] if isinstance(perturbation, str) else perturbation)
    if example != "id" and not (example.startswith("metadata:") and example.split(":", 1)[1]):
        raise InputError(f"unknown example option {example!r}", value=example, hint="use 'id' or 'metadata:<key>'")
    source = Path(source)
    if not source.exists():
        raise InputError("path not found", path=source, hint="pass an Inspect log file or a folder of logs")

    report = IngestReport(
        loader="inspect",
        dataset=dataset,
        options={
            "source": str(source),
            "perturbation": factors,
            "scorer": scorer,
            "score_key": score_key,
            "example": example,
            "duplicates": duplicates,
        },
    )
    records: list[dict[str, Any]] = []
    all_scorers: set[str] = set()
    log_paths = _find_logs(source)
    for path in log_paths:
        log_records, names = _read_log(read_eval_log, path, factors, scorer, score_key, example, report)
        records.extend(log_records)
        all_scorers.update(names)
    if scorer is not None and scorer not in all_scorers:
        raise InputError(
            f"scorer {scorer!r} not found; scorers present: {', '.join(sorted(all_scorers)) or 'none'}",
            path=source,
            hint="pass scorer='<name>' with one of the scorers present",
        )
    used = scorer if scorer is not None else _choose_scorer(all_scorers, None, source)
    if not records:
        raise InputError(
            "no scored samples were read",
            path=log_paths[0] if len(log_paths) == 1 else source,
            hint="check that the logs contain scored samples",
        )

    factor_names = sorted({name for record in records for name in record["factors"]})
    rows = []
    for record in records:
        values = {name: record["factors"].get(name, UNSET) for name in factor_names}
        label = "|".join(f"{name}={values[name]}" for name in factor_names) or "default"
        rows.append({**{k: v for k, v in record.items() if k != "factors"}, "perturbation": label, **values})
    frame = pd.DataFrame(rows)
    perturbation_info = frame[["perturbation", *factor_names]].drop_duplicates("perturbation").set_index("perturbation") if factor_names else None

    ds = _tensor.from_examples(
        frame[["model", "task", "perturbation", "example", "score", "prediction"]],
        dataset=dataset,
        metric=str(used),
        structure="crossed",
        perturbation_info=perturbation_info,
        duplicates=duplicates,
        source=str(source),
        attrs={"source": "Inspect AI evaluation logs", "perturbation_kind": ",".join(factors)},
    )
    report.cells_read = report.cells_kept = int(frame.groupby(["model", "task", "perturbation"]).ngroups)
    log.info("read %d samples from %d logs in %s", len(frame), len(report.files), source)
    return ds, report
