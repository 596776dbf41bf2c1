"""Loader for DOVE and DOVE_Lite, per-example results under prompt perturbations.

DOVE_Lite (Hugging Face ``nlphuji/DOVE_Lite``, gated, CDLA-Permissive-2.0)
is laid out as ``{model}/{language}/{N}_shot/{benchmark}.parquet``. Each row
is one model answer to one example under one prompt configuration, with the
columns ``dataset``, ``sample_index``, ``model``, ``dimensions_1:
enumerator``, ``dimensions_2: separator``, ``dimensions_3: choices_order``,
``dimensions_4: instruction_phrasing_text``, ``dimensions_5: shots``,
``generated_text``, ``closest_answer``, ``ground_truth`` and ``score``. The
full DOVE spells the choice fields ``mc_enumerator``, ``mc_separator`` and
``mc_choices_order``; both spellings, and the bare names, are accepted.

The five dimensions are perturbation factors shared across tasks (the
structure is ``"crossed"``); the task is the ``dataset`` column. Local files
are aggregated to counts inside DuckDB, which streams them with a bounded
memory limit. The perturbation label names every factor; the instruction
text enters the label as the first 8 hex digits of its SHA-1, and the full
text is kept in the ``instruction_phrasing`` coordinate.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._logging import get_logger
from ..errors import InputError, RobustscopeError
from . import long_table, register_loader
from .manifest import IngestReport

log = get_logger("ingest.dove")

HUB_PREFIX = "hf://"
HUB_REPOSITORY = "nlphuji/DOVE_Lite"
FACTORS = ("enumerator", "separator", "choices_order", "instruction_phrasing", "shots")
# Accepted column names per factor, after removing a "dimensions_<n>: " prefix
# and an "mc_" prefix.
FACTOR_NAMES = {
    "enumerator": ("enumerator",),
    "separator": ("separator",),
    "choices_order": ("choices_order",),
    "instruction_phrasing": ("instruction_phrasing_text", "instruction_phrasing"),
    "shots": ("shots",),
}
REQUIRED = ("dataset", "sample_index", "model", "score")
PREFIX = re.compile(r"^dimensions_\d+:\s*")
SHOT_FOLDER = re.compile(r"^(\d+)_shot$")
INSTRUCTION_DIGITS = 8


def _normalise(column: str) -> str:
    name = PREFIX.sub("", column.strip())
    return name[3:] if name.startswith("mc_") else name


def match_factor_columns(columns: Sequence[str]) -> dict[str, str]:
    """Return factor name -> column for the DOVE columns present, accepting every spelling."""
    found: dict[str, str] = {}
    for column in columns:
        name = _normalise(column)
        for factor, spellings in FACTOR_NAMES.items():
            if name in spellings and factor not in found:
                found[factor] = column
    return found


def instruction_id(text: object) -> str:
    """Return the short, stable label of an instruction text (first hex digits of its SHA-1)."""
    return hashlib.sha1(str(text).encode("utf-8")).hexdigest()[:INSTRUCTION_DIGITS]


def _layout(path: Path) -> tuple[str | None, int | None]:
    """Return (language, shots) from a ``{model}/{language}/{N}_shot/{benchmark}.parquet`` path."""
    match = SHOT_FOLDER.match(path.parent.name)
    if not match:
        return None, None
    return path.parent.parent.name, int(match.group(1))


def _select_files(files: list[Path], models: Sequence[str] | None, languages: Sequence[str] | None, shots: Sequence[int] | None) -> list[Path]:
    selected = []
    for path in files:
        language, n_shots = _layout(path)
        if languages and language not in languages:
            continue
        if shots is not None and n_shots is not None and n_shots not in shots:
            continue
        if models and language is not None and path.parent.parent.parent.name not in models:
            continue
        selected.append(path)
    return selected


def _download_from_hub(repository: str, token: str | None, patterns: Sequence[str] | None, folder: Path) -> list[Path]:
    """Stream a hub dataset through the ``datasets`` library into local Parquet chunks.

    Raises
    ------
    RobustscopeError
        When the hub cannot be reached or access is refused.
    """
    try:
        import datasets
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as error:
        raise RobustscopeError(f"reading from the hub needs the 'datasets' package: {error}") from error

    try:
        stream = datasets.load_dataset(
            repository,
            data_files=list(patterns) if patterns else None,
            split="train",
            streaming=True,
            token=token,
        )
        paths: list[Path] = []
        for number, batch in enumerate(stream.iter(batch_size=500_000)):
            path = folder / f"chunk-{number:05d}.parquet"
            pq.write_table(pa.Table.from_pydict(batch), path)
            paths.append(path)
    except Exception as error:  # network, authentication and gating errors come from several libraries
        raise RobustscopeError(
            f"access to the Hugging Face dataset {repository!r} failed: {type(error).__name__}: {error}. "
            "The dataset is gated: accept its terms on the dataset page, then pass token=... (or set HF_TOKEN), "
            "or download its Parquet files and pass the local folder as the source"
        ) from error
    if not paths:
        raise RobustscopeError(f"the Hugging Face dataset {repository!r} returned no rows for the patterns {patterns}")
    return paths


@register_loader("dove", "DOVE and DOVE_Lite per-example Parquet files (local or from the Hugging Face hub)")
def load(
    source: str | Path | Sequence[str | Path],
    *,
    hub: bool = False,
    token: str | None = None,
    data_files: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    languages: Sequence[str] | None = None,
    shots: Sequence[int] | None = None,
    per_example: bool = False,
    dataset: str = "dove",
    duplicates: str = "error",
    memory_limit: str = long_table.DEFAULT_MEMORY_LIMIT,
    threads: int | None = None,
) -> tuple[Any, IngestReport]:
    """Read DOVE or DOVE_Lite Parquet files into a crossed tensor.

    Parameters
    ----------
    source
        A Parquet file, a list of them, or a folder in the DOVE layout; or
        ``"hf://nlphuji/DOVE_Lite"`` to stream from the hub.
    hub
        Read ``source`` (a repository id) from the Hugging Face hub.
    token
        Hugging Face access token for the gated dataset.
    data_files
        Glob patterns inside the hub repository (e.g.
        ``["Llama-3.2-1B-Instruct/en/0_shot/*.parquet"]``).
    models, languages, shots
        Read only files under these model, language or shot folders.
    per_example
        Keep the ``example`` dimension with the score and the
        ``closest_answer`` prediction (loads the selected rows into memory),
        instead of aggregating to counts in DuckDB (default).
    dataset
        Name stored in the tensor.
    duplicates
        Policy for repeated (model, task, configuration, example) rows with
        different scores: ``"error"``, ``"first"``, ``"last"`` or ``"mean"``.
    memory_limit, threads
        DuckDB settings for the aggregation.

    Raises
    ------
    InputError
        On missing columns, unreadable files, or scores that are not 0/1.
    RobustscopeError
        When the hub cannot be reached or the dataset's gate refuses access.
    """
    source_text = str(source) if isinstance(source, (str, Path)) else ""
    options = {
        "hub": hub or source_text.startswith(HUB_PREFIX),
        "data_files": list(data_files or []),
        "models": list(models or []),
        "languages": list(languages or []),
        "shots": list(shots) if shots is not None else None,
        "per_example": per_example,
        "duplicates": duplicates,
        "source": source_text or [str(p) for p in source],
    }
    report = IngestReport(loader="dove", dataset=dataset, options=options)

    if options["hub"]:
        repository = source_text[len(HUB_PREFIX) :] if source_text.startswith(HUB_PREFIX) else source_text or HUB_REPOSITORY
        with tempfile.TemporaryDirectory(prefix="robustscope-dove-") as folder:
            files = _download_from_hub(repository, token, data_files, Path(folder))
            report.note(f"read {repository} from the Hugging Face hub in {len(files)} chunks")
            ds = _load_files(files, report, per_example, dataset, duplicates, memory_limit, threads, repository)
        return ds, report

    files = [p for p in long_table.list_files(source) if p.suffix.lower() in long_table.PARQUET_SUFFIXES]
    selected = _select_files(files, models, languages, shots)
    if not selected:
        raise InputError(
            "no DOVE Parquet files match the source and filters",
            path=source_text or None,
            hint="expected {model}/{language}/{N}_shot/{benchmark}.parquet files; check the models, languages and shots options",
        )
    return _load_files(selected, report, per_example, dataset, duplicates, memory_limit, threads, source_text), report


def _load_files(
    files: list[Path],
    report: IngestReport,
    per_example: bool,
    dataset: str,
    duplicates: str,
    memory_limit: str,
    threads: int | None,
    source: str,
) -> Any:
    connection = long_table._connect(memory_limit, threads)
    found = long_table.parquet_columns(connection, files)
    types = long_table._column_types(connection, files)
    connection.close()
    missing = [c for c in REQUIRED if c not in found]
    factor_columns = match_factor_columns(found)
    missing += [FACTOR_NAMES[f][0] for f in FACTORS if f not in factor_columns and f != "shots"]
    if missing:
        raise InputError(
            f"missing DOVE column(s) {', '.join(missing)}",
            path=files[0],
            hint=f"columns found: {', '.join(found)}; DOVE files need dataset, sample_index, model, score and the "
            "dimension columns ('dimensions_1: enumerator' or 'mc_enumerator', and so on)",
        )

    languages = {_layout(p)[0] for p in files}
    quote = long_table._sql_identifier
    task = quote("dataset")
    if len(languages - {None}) > 1:
        task = f"(regexp_extract(filename, '([^/]+)/[0-9]+_shot/[^/]+$', 1) || '/' || {quote('dataset')})"
        report.note(f"files span the languages {', '.join(sorted(languages - {None}))}; task labels are '<language>/<dataset>'")
    factor_sql = {f: quote(factor_columns[f]) for f in FACTORS if f in factor_columns}
    if "shots" not in factor_sql:
        factor_sql["shots"] = "TRY_CAST(regexp_extract(filename, '([0-9]+)_shot/[^/]+$', 1) AS INTEGER)"
        report.note("no shots column: the number of shots is read from the '<N>_shot' folder name")
    factor_sql = {f: factor_sql[f] for f in FACTORS}
    spec = long_table.ParquetAggregate(
        expressions={"model": quote("model"), "task": task, "example": quote("sample_index"), "score": quote("score")},
        factors=factor_sql,
    )

    if per_example:
        records = _read_examples(files, spec, "closest_answer" in found, memory_limit, threads, report)
        kind = "examples"
    else:
        records = long_table.aggregate_parquet(
            files,
            spec,
            score_type=types["score"],
            metric="accuracy",
            duplicates=duplicates,
            report=report,
            memory_limit=memory_limit,
            threads=threads,
        )
        kind = "counts"
    if records.empty:
        raise InputError("no rows left after dropping empty values", path=files[0])

    texts = records["instruction_phrasing"].dropna().unique()
    label_values = {"instruction_phrasing": {text: instruction_id(text) for text in texts}}
    return long_table.build_tensor(
        records,
        kind,
        list(FACTORS),
        "crossed",
        dataset,
        "accuracy",
        duplicates,
        source or str(files[0].parent),
        report,
        label_values=label_values,
        attrs={
            "source": "DOVE, Hugging Face nlphuji/DOVE_Lite or nlphuji/DOVE, CDLA-Permissive-2.0",
            "perturbation_kind": "prompt format: enumerator, separator, choices order, instruction phrasing, shots",
        },
    )


def _read_examples(
    files: list[Path],
    spec: long_table.ParquetAggregate,
    has_prediction: bool,
    memory_limit: str,
    threads: int | None,
    report: IngestReport,
) -> pd.DataFrame:
    """Read the per-example rows (score and closest answer) of the selected files into pandas."""
    connection = long_table._connect(memory_limit, threads)
    quote = long_table._sql_identifier
    selects = [f"{spec.expressions[r]} AS {quote(r)}" for r in ("model", "task", "example", "score")]
    selects += [f"{expression} AS {quote(name)}" for name, expression in spec.factors.items()]
    if has_prediction:
        selects.append(f"{quote('closest_answer')} AS prediction")
    selects += ["filename AS _file", "file_row_number + 1 AS _row"]
    query = f"SELECT {', '.join(selects)} FROM {long_table._parquet_source(files)}"
    try:
        frame = connection.execute(query).df()
    except Exception as error:
        raise InputError(f"cannot read the Parquet files: {error}", path=files[0]) from error
    finally:
        connection.close()

    kept_frames = []
    for file_name, part in frame.groupby("_file", sort=False):
        path = Path(file_name)
        scores = long_table.parse_scores(part, "score", path)
        outside = (scores < 0) | (scores > 1)
        if outside.any():
            position = int(np.flatnonzero(outside.to_numpy())[0])
            raise InputError("score is outside [0, 1]", path=path, row=int(part["_row"].iloc[position]), column="score", value=part["score"].iloc[position])
        part = part.assign(score=scores)
        empty = part[["model", "task", "example", "score"] + list(FACTORS)].isna().any(axis=1)
        for name in ("model", "task"):
            empty |= part[name].astype(str).str.strip().eq("")
        if empty.any():
            report.drop("empty model, task, example, score or factor value", rows=int(empty.sum()), where=f"{path.name} row {int(part.loc[empty, '_row'].iloc[0])}")
        report.add_file(path, rows_read=len(part), rows_kept=int((~empty).sum()))
        kept_frames.append(part.loc[~empty])
    records = pd.concat(kept_frames, ignore_index=True) if kept_frames else frame.iloc[0:0]
    return records.drop(columns=["_file", "_row"])
