"""Loader for PromptBench's adversarial-prompt results (Zhu et al., microsoft/promptbench).

Reads the Markdown files ``<model>_<zeroshot|fewshot>.md`` (upstream folder
``promptbench/prompts/adv_prompts/``). Each file has one ``# <dataset>``
section with these subsections:

``## 10 prompts``
    ``Acc: 78.50%, prompt: <text>`` lines: 10 task-oriented prompts, a blank
    line, then 10 role-oriented prompts, each with its clean score.
``## <attack>`` (bertattack, checklist, deepwordbug, stresstest, textbugger, textfooler)
    blocks of ``Original prompt: ...``, ``Attacked prompt: b"..."`` and
    ``Original acc: X%, attacked acc: Y%, dropped acc: Z%``.
``## translation``
    ``Language: <language>, acc: X%, prompt: <text>`` lines: prompts written
    in another language and translated to English.

Tensor layout: model = the file's model, task = dataset, and perturbation =
``"<shot>/clean/<id>"``, ``"<shot>/<attack>/<id>"`` or
``"<shot>/translation/<language>/<id>"``, where ``<id>`` is the first eight hex
digits of the SHA-1 of the (original) prompt text, so a label means the same
prompt in every file. Prompts belong to one dataset, so the structure is
``"nested"``. The attacked prompt texts differ between models and are kept
in the data variable ``attacked_prompt``.

Caveat that travels with the tensor (``attrs["caveat"]``): the attacks were
run on each model's best clean prompts with a search for the worst-case
perturbation, so attacked scores are worst cases, not typical perturbations.
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from .. import tensor as _tensor
from .._logging import get_logger
from ..errors import InputError
from . import register_loader
from ..tensor import from_scores
from .manifest import IngestReport

log = get_logger("ingest.promptbench")

FILE_PATTERN = re.compile(r"^(?P<model>.+)_(?P<shot>zeroshot|fewshot)\.md$")
SHOTS = ("zeroshot", "fewshot")
ATTACKS = ("bertattack", "checklist", "deepwordbug", "stresstest", "textbugger", "textfooler")
CLEAN_SECTION = "10 prompts"
TRANSLATION_SECTION = "translation"
# Datasets whose "Acc" column is another metric (PromptBench reports BLEU for
# translation and F1 for SQuAD V2 under the same "Acc" label).
DATASET_METRICS = {"iwslt": "bleu", "un_multi": "bleu", "squad_v2": "f1"}
DEFAULT_METRIC = "accuracy"
CAVEAT = (
    "PromptBench ran each attack on the model's best clean prompts with a search for the worst-case "
    "perturbation, so attacked scores are worst cases, not typical perturbations."
)

CLEAN_LINE = re.compile(r"^Acc:\s*(?P<value>-?[\d.]+)%,\s*prompt:\s*(?P<prompt>.*)$")
TRANSLATION_LINE = re.compile(r"^Language:\s*(?P<language>[^,]+),\s*acc:\s*(?P<value>-?[\d.]+)%,\s*prompt:\s*(?P<prompt>.*)$")
RESULT_LINE = re.compile(
    r"^Original acc:\s*(?P<original>-?[\d.]+)%,\s*attacked acc:\s*(?P<attacked>-?[\d.]+)%,\s*dropped acc:\s*(?P<dropped>-?[\d.]+)%"
)

REASON_OTHER_METRIC = "dataset reports another metric than the one requested (a tensor holds one metric)"
REASON_INCOMPLETE_ATTACK = "attack entry has no attacked prompt or no accuracy line"
REASON_STRAY_LINE = "line does not have the form of its section (stray text in the upstream file)"
REASON_SHOT = "shot setting not selected by the shots option"
REASON_NOT_A_RESULTS_FILE = "file name is not <model>_<zeroshot|fewshot>.md"


def prompt_id(text: str) -> str:
    """Return the eight-hex-digit SHA-1 prefix that names a prompt in perturbation labels."""
    return hashlib.sha1(text.strip().encode("utf-8")).hexdigest()[:8]


def _decode_attacked(text: str) -> str:
    """Decode the Python bytes literal (``b"..."``) PromptBench writes for attacked prompts."""
    text = text.strip()
    if text[:2] in ('b"', "b'"):
        try:
            value = ast.literal_eval(text)
        except (SyntaxError, ValueError):
            return text[2:-1]
        if isinstance(value, bytes):
            return value.decode("utf-8", errors="replace")
    return text


def _split_lines(text: str) -> list[str]:
    """Split the file into lines, also splitting the few lines where two entries were written without a newline."""
    lines: list[str] = []
    for line in text.splitlines():
        parts = re.split(r"(?<=%)(?=Original prompt:)", line)
        lines.extend(parts)
    return lines


def _number(value: str, path: Path, number: int, column: str) -> float:
    try:
        return float(value)
    except ValueError as error:
        raise InputError("value is not a number", path=path, row=number, column=column, value=value) from error


def parse_file(path: Path, report: IngestReport) -> list[dict[str, Any]]:
    """Parse one PromptBench Markdown file into rows (one per prompt result).

    Each row has ``dataset``, ``kind`` (clean, attack name or translation),
    ``prompt`` (the clean or original prompt), ``attacked_prompt``,
    ``language``, ``prompt_type``, ``value`` (the printed number, before
    ``%``) and ``original_value`` (attack rows: the original prompt's score
    in the same attack run).

    Raises
    ------
    InputError
        When a line in a known section cannot be read or a number is invalid.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"file is not UTF-8 text: {error}", path=path, hint="PromptBench writes its result files in UTF-8") from error
    if not text.strip():
        raise InputError("file is empty", path=path)
    rows: list[dict[str, Any]] = []
    dataset: str | None = None
    section: str | None = None
    prompt_type = "task-oriented"
    pending: dict[str, Any] | None = None
    lines_read = 0

    def close_pending(where: int) -> None:
        nonlocal pending
        if pending is not None:
            report.drop(REASON_INCOMPLETE_ATTACK, rows=1, cells=1, where=f"{path.name} line {where}")
            pending = None

    for number, raw in enumerate(_split_lines(text), start=1):
        line = raw.strip()
        if line.startswith("## "):
            close_pending(number)
            section = line[3:].strip()
            prompt_type = "task-oriented"
            continue
        if line.startswith("# "):
            close_pending(number)
            heading = line[2:].strip()
            dataset = None if FILE_PATTERN.match(heading + ".md") else heading
            section = None
            continue
        if dataset is None or section is None:
            continue
        if not line:
            if section == CLEAN_SECTION and any(r["dataset"] == dataset and r["kind"] == "clean" for r in rows):
                prompt_type = "role-oriented"
            continue
        if not line.startswith(("Attacked prompt:", "Original acc:")):
            lines_read += 1
        base = {"dataset": dataset, "line": number, "attacked_prompt": "", "language": "", "original_value": np.nan}

        if section == CLEAN_SECTION:
            match = CLEAN_LINE.match(line)
            if not match:
                report.drop(REASON_STRAY_LINE, rows=1, cells=0, where=f"{path.name} line {number}: {line[:60]}")
                continue
            rows.append({**base, "kind": "clean", "prompt": match["prompt"].strip(), "prompt_type": prompt_type, "value": _number(match["value"], path, number, "Acc")})
        elif section == TRANSLATION_SECTION:
            match = TRANSLATION_LINE.match(line)
            if not match:
                report.drop(REASON_STRAY_LINE, rows=1, cells=0, where=f"{path.name} line {number}: {line[:60]}")
                continue
            rows.append(
                {
                    **base,
                    "kind": "translation",
                    "language": match["language"].strip(),
                    "prompt": match["prompt"].strip(),
                    "prompt_type": "translated",
                    "value": _number(match["value"], path, number, "acc"),
                }
            )
        elif section in ATTACKS:
            if line.startswith("Original prompt:"):
                close_pending(number)
                pending = {**base, "kind": section, "prompt": line.split(":", 1)[1].strip(), "prompt_type": "attacked"}
            elif line.startswith("Attacked prompt:") and pending is not None:
                pending["attacked_prompt"] = _decode_attacked(line.split(":", 1)[1])
            elif line.startswith("Original acc:") and pending is not None:
                match = RESULT_LINE.match(line)
                if not match:
                    raise InputError("accuracy line is not 'Original acc: X%, attacked acc: Y%, dropped acc: Z%'", path=path, row=number, value=line)
                if not pending["attacked_prompt"]:
                    close_pending(number)
                    continue
                pending["value"] = _number(match["attacked"], path, number, "attacked acc")
                pending["original_value"] = _number(match["original"], path, number, "original acc")
                rows.append(pending)
                pending = None
            else:
                # The upstream files contain a few stray lines, for example a
                # clean-prompt "Acc:" line inside an attack section or a lone "O".
                if line.startswith(("Attacked prompt:", "Original acc:")):
                    lines_read += 1
                report.drop(REASON_STRAY_LINE, rows=1, cells=0, where=f"{path.name} line {number}: {line[:60]}")
        else:
            raise InputError(f"unknown section '## {section}'", path=path, row=number, hint=f"known sections: {CLEAN_SECTION}, {', '.join(ATTACKS)}, {TRANSLATION_SECTION}")
    close_pending(len(text.splitlines()))
    # One row is one prompt result: a clean or translation line, or an attack
    # entry of three lines counted once at its "Original prompt:" line.
    report.add_file(path, rows_read=lines_read, rows_kept=len(rows))
    return rows


def _find_files(source: Path, report: IngestReport) -> list[tuple[Path, str, str]]:
    if source.is_file():
        candidates = [source]
    elif source.is_dir():
        candidates = sorted(source.rglob("*.md"))
    else:
        raise InputError("file or folder not found", path=source, hint="pass the adv_prompts folder or one <model>_<shot>.md file")
    files = []
    for path in candidates:
        match = FILE_PATTERN.match(path.name)
        if match is None:
            if path.name.lower() not in ("readme.md", "provenance.md"):
                report.drop(REASON_NOT_A_RESULTS_FILE, rows=0, where=path.name)
            continue
        files.append((path, match["model"], match["shot"]))
    if not files:
        raise InputError("no <model>_<zeroshot|fewshot>.md files found", path=source)
    return files


def _perturbation_label(row: pd.Series) -> str:
    if row["kind"] == "clean":
        return f"{row['shot']}/clean/{prompt_id(row['prompt'])}"
    if row["kind"] == "translation":
        return f"{row['shot']}/translation/{row['language']}/{prompt_id(row['prompt'])}"
    return f"{row['shot']}/{row['kind']}/{prompt_id(row['prompt'])}"


@register_loader("promptbench", "PromptBench adversarial prompts: <model>_<zeroshot|fewshot>.md result files")
def load(
    source: str | Path,
    *,
    metric: str = DEFAULT_METRIC,
    n_examples: int | dict[str, int] | None = None,
    shots: Sequence[str] = SHOTS,
    tasks: Sequence[str] | None = None,
    duplicates: str = "mean",
    dataset: str = "promptbench-adv-prompts",
) -> tuple[xr.Dataset, IngestReport]:
    """Read PromptBench's adversarial-prompt results into a nested tensor.

    Parameters
    ----------
    source
        The folder with the ``<model>_<shot>.md`` files (searched
        recursively) or one such file.
    metric
        ``"accuracy"`` (default), ``"bleu"`` (iwslt, un_multi) or ``"f1"``
        (squad_v2). Datasets that report another metric are dropped with a
        recorded reason, because a tensor holds one metric.
    n_examples
        Number of test examples behind each accuracy, one integer for every
        dataset or a mapping dataset -> integer. The files do not state it.
        With it, accuracies become counts ``round(accuracy * n)`` out of
        ``n`` for the binomial models (accuracy only); without it the tensor
        holds continuous scores.
    shots
        Shot settings to read: ``"zeroshot"``, ``"fewshot"`` or both (default).
    tasks
        Keep only these datasets.
    duplicates
        Policy when a file lists the same prompt twice in one section:
        ``"mean"`` (default), ``"first"``, ``"last"`` or ``"error"``.
    dataset
        Name stored in the tensor.

    Returns
    -------
    (xarray.Dataset, IngestReport)
        Scores are proportions (the printed percentage / 100) for accuracy
        and F1; BLEU is kept as printed (see the note in the manifest).

    Raises
    ------
    InputError
        On a missing folder, a malformed line, an unknown option value, or
        when nothing is left after filtering.
    """
    metrics = (DEFAULT_METRIC, *sorted(set(DATASET_METRICS.values())))
    if metric not in metrics:
        raise InputError(f"unknown metric {metric!r}; valid values: {', '.join(metrics)}", column="metric", value=metric)
    unknown_shots = sorted(set(shots) - set(SHOTS))
    if unknown_shots:
        raise InputError(f"unknown shot setting(s) {', '.join(unknown_shots)}; valid values: {', '.join(SHOTS)}", column="shots", value=unknown_shots)
    if n_examples is not None and metric != DEFAULT_METRIC:
        raise InputError("n_examples builds binomial counts, which only accuracy allows", column="n_examples", value=n_examples, hint="drop n_examples for bleu or f1")
    source = Path(source)
    report = IngestReport(
        loader="promptbench",
        dataset=dataset,
        options={"source": str(source), "metric": metric, "n_examples": n_examples, "shots": list(shots), "tasks": list(tasks) if tasks else None},
    )

    frames = []
    empty_files: list[Path] = []
    for path, model, shot in _find_files(source, report):
        if shot not in shots:
            report.drop(REASON_SHOT, rows=0, where=path.name)
            continue
        rows = parse_file(path, report)
        if not rows:
            empty_files.append(path)
            report.note(f"{path.name}: no prompt results found; the file may be truncated")
            continue
        frame = pd.DataFrame(rows)
        frame["model"] = model
        frame["shot"] = shot
        frame["file"] = path.name
        frame["path"] = str(path)
        frames.append(frame)
        log.info("read %s: %d prompt results", path.name, len(frame))
    if not frames and empty_files:
        raise InputError(
            "no prompt results found",
            path=empty_files[0] if len(empty_files) == 1 else source,
            value=None if len(empty_files) == 1 else [p.name for p in empty_files],
            hint="the files need a '# <dataset>' heading followed by '## <section>' headings and result lines",
        )
    if not frames:
        raise InputError("no result file left after the shots option", path=source, value=list(shots))
    table = pd.concat(frames, ignore_index=True)
    report.cells_read = len(table)

    table["metric"] = table["dataset"].map(lambda name: DATASET_METRICS.get(name, DEFAULT_METRIC))
    if tasks:
        missing = sorted(set(tasks) - set(table["dataset"]))
        if missing:
            raise InputError(f"dataset(s) not found: {', '.join(missing)}", path=source, hint=f"datasets: {', '.join(sorted(table['dataset'].unique()))}")
        outside = ~table["dataset"].isin(list(tasks))
        for name, count in table.loc[outside, "dataset"].value_counts().items():
            report.drop("dataset not selected by the tasks option", rows=0, cells=int(count), where=str(name))
        table = table.loc[~outside]
    other = table["metric"] != metric
    for (name, other_metric), count in table.loc[other].groupby(["dataset", "metric"]).size().items():
        report.drop(REASON_OTHER_METRIC, rows=0, cells=int(count), where=f"{name} reports {other_metric}")
    table = table.loc[~other].copy()
    if table.empty:
        raise InputError(f"no dataset reports the metric {metric!r}", path=source)

    if metric != "bleu":
        _check_percentages(table)

    if metric == "bleu":
        # NOTE: the files print BLEU with a '%' sign (for example 0.22%) and
        # do not state the scale, so the printed number is kept unchanged.
        table["score"] = table["value"]
        table["original_score"] = table["original_value"]
        report.note("BLEU values are kept as printed before the '%' sign; the upstream files do not state their scale")
    else:
        table["score"] = table["value"] / 100.0
        table["original_score"] = table["original_value"] / 100.0
    table["perturbation"] = table.apply(_perturbation_label, axis=1)
    table["task"] = table["dataset"]
    table["attack"] = table["kind"]

    perturbation_info = (
        table[["task", "perturbation", "shot", "attack", "prompt", "prompt_type", "language"]]
        .drop_duplicates(["task", "perturbation"])
        .set_index(["task", "perturbation"])
    )
    attrs = {
        "source": "PromptBench (Zhu et al., 2023), microsoft/promptbench prompts/adv_prompts",
        "perturbation_kind": "adversarial prompt attack, clean prompt or translated prompt",
        "caveat": CAVEAT,
        "score_scale": "printed value" if metric == "bleu" else "proportion (printed percentage / 100)",
    }
    report.note(CAVEAT)

    if n_examples is None:
        report.note("the files give no example counts, so the tensor holds continuous scores; the binomial models need counts (pass n_examples)")
        ds = from_scores(
            table,
            dataset=dataset,
            metric=metric,
            structure="nested",
            perturbation_info=perturbation_info,
            duplicates=duplicates,
            source=str(source),
            attrs=attrs,
        )
    else:
        table["n_total"] = table["task"].map(lambda name: _examples_for(n_examples, name, source))
        table["n_correct"] = np.rint(table["score"] * table["n_total"]).astype(np.int64)
        report.note(f"example counts are not in the files; n_total comes from the n_examples option ({n_examples}) and n_correct = round(accuracy * n_total)")
        attrs["counts_assumed"] = f"n_examples={n_examples}"
        ds = _tensor.from_counts(
            table,
            dataset=dataset,
            metric=metric,
            structure="nested",
            perturbation_info=perturbation_info,
            duplicates=duplicates,
            source=str(source),
            attrs=attrs,
        )
        ds["score"] = _cell_array(table, ds, "score", np.nan)
    ds["attacked_prompt"] = _cell_array(table, ds, "attacked_prompt", "")
    ds["original_score"] = _cell_array(table, ds, "original_score", np.nan)
    report.cells_kept = int(ds["observed"].sum())
    return ds, report


def _check_percentages(table: pd.DataFrame) -> None:
    """Raise InputError at the first accuracy or F1 percentage outside [0, 100], naming its file and line."""
    for column, label in (("value", "acc"), ("original_value", "original acc")):
        outside = (table[column] < 0) | (table[column] > 100)
        if outside.any():
            row = table.loc[outside].iloc[0]
            raise InputError(
                "percentage is outside [0, 100]",
                path=row["path"],
                row=int(row["line"]),
                column=label,
                value=f"{row[column]}%",
                hint="accuracy and F1 are printed as percentages; correct the line or restore the file from its source",
            )


def _examples_for(n_examples: int | dict[str, int], name: str, source: Path) -> int:
    value = n_examples.get(name) if isinstance(n_examples, dict) else n_examples
    if value is None:
        raise InputError(f"n_examples has no count for dataset {name!r}", path=source, column="n_examples", hint="give one integer or a count for every dataset")
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
        raise InputError("n_examples must be a positive integer", column="n_examples", value=value)
    return int(value)


def _cell_array(table: pd.DataFrame, ds: xr.Dataset, column: str, fill: Any) -> xr.DataArray:
    """Place one value per (model, task, perturbation) from ``table`` on the tensor's grid (first row wins)."""
    dims = _tensor.DIMS
    shape = tuple(ds.sizes[d] for d in dims)
    dtype = object if isinstance(fill, str) else float
    values = np.full(shape, fill, dtype=dtype)
    unique = table.drop_duplicates(list(dims))
    index = tuple(pd.Categorical(unique[d], categories=list(ds[d].values)).codes for d in dims)
    values[index] = unique[column].to_numpy(dtype=dtype)
    return xr.DataArray(values, dims=dims)
