"""Benchmark: ingesting a long DOVE_Lite-style Parquet table, robustscope (DuckDB) against pandas.

Writes a synthetic table in the DOVE_Lite schema and layout
(``{model}/en/0_shot/{benchmark}.parquet``, written row group by row group
with pyarrow so that writing stays in bounded memory), then measures in one
run, each measurement in a fresh subprocess:

* robustscope: ``robustscope.ingest.dove.load(folder)``, which aggregates to
  (model, task, perturbation) counts inside DuckDB;
* pandas: ``pandas.read_parquet(folder, columns=...)`` of the nine columns
  the tensor needs, then ``groupby(...)["score"].agg(["sum", "count"])``.

Reports wall time, rows per second and peak resident memory (the child's
``ru_maxrss``) as the median of the repeats. The pandas child is killed
when its resident memory passes ``--pandas-limit-gb``; the script then says
so and measures pandas on a smaller table whose size it prints.

Usage::

    python benchmarks/bench_ingest_parquet.py --rows 20000000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

MODELS = ("Llama-3.2-1B-Instruct", "OLMoE-1B-7B-0924-Instruct", "Mistral-7B-Instruct-v0.3", "Meta-Llama-3-8B-Instruct")
BENCHMARKS = ("mmlu.abstract_algebra", "ai2_arc.arc_challenge", "hellaswag", "openbook_qa", "social_iqa")
ENUMERATORS = ("capitals", "lowercase", "numbers", "roman", "greek")
SEPARATORS = ("\n", "; ", ", ", " | ", " OR ")
CHOICES_ORDERS = ("none", "shortest_to_longest")
INSTRUCTIONS = tuple(
    f"Instruction variant {i}: the following are multiple choice questions (with answers) about the topic. Answer with the letter."
    for i in range(5)
)
ANSWERS = ("A", "B", "C", "D")
ROW_GROUP = 250_000
PANDAS_COLUMNS = [
    "dataset",
    "sample_index",
    "model",
    "dimensions_1: enumerator",
    "dimensions_2: separator",
    "dimensions_3: choices_order",
    "dimensions_4: instruction_phrasing_text",
    "dimensions_5: shots",
    "score",
]


def _strings(values: tuple[str, ...], codes: np.ndarray) -> pa.Array:
    dictionary = pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), pa.array(values))
    return dictionary.cast(pa.string())


def write_table(folder: Path, rows: int, seed: int = 0) -> list[Path]:
    """Write about ``rows`` rows spread over one file per (model, benchmark), one row group at a time."""
    rng = np.random.default_rng(seed)
    configurations = len(ENUMERATORS) * len(SEPARATORS) * len(CHOICES_ORDERS) * len(INSTRUCTIONS)
    files = [(m, b) for m in MODELS for b in BENCHMARKS]
    per_file = rows // len(files)
    examples = max(1, per_file // configurations)
    per_file = examples * configurations
    paths = []
    for model, benchmark in files:
        path = folder / model / "en" / "0_shot" / f"{benchmark}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = None
        for start in range(0, per_file, ROW_GROUP):
            index = np.arange(start, min(start + ROW_GROUP, per_file))
            configuration = index // examples
            example = index % examples
            enumerator = configuration % len(ENUMERATORS)
            separator = (configuration // len(ENUMERATORS)) % len(SEPARATORS)
            order = (configuration // (len(ENUMERATORS) * len(SEPARATORS))) % len(CHOICES_ORDERS)
            instruction = configuration // (len(ENUMERATORS) * len(SEPARATORS) * len(CHOICES_ORDERS))
            truth = example % 4
            answer = np.where(rng.random(len(index)) < 0.6, truth, rng.integers(0, 4, len(index)))
            table = pa.table(
                {
                    "dataset": pa.array(np.full(len(index), benchmark)),
                    "sample_index": pa.array(example.astype(np.int64)),
                    "model": pa.array(np.full(len(index), model)),
                    "dimensions_1: enumerator": _strings(ENUMERATORS, enumerator),
                    "dimensions_2: separator": _strings(SEPARATORS, separator),
                    "dimensions_3: choices_order": _strings(CHOICES_ORDERS, order),
                    "dimensions_4: instruction_phrasing_text": _strings(INSTRUCTIONS, instruction),
                    "dimensions_5: shots": pa.array(np.zeros(len(index), dtype=np.int64)),
                    "generated_text": _strings(tuple(f"The answer is {a}." for a in ANSWERS), answer),
                    "closest_answer": _strings(ANSWERS, answer),
                    "ground_truth": _strings(ANSWERS, truth),
                    "score": pa.array((answer == truth).astype(np.float64)),
                }
            )
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table, row_group_size=ROW_GROUP)
        writer.close()
        paths.append(path)
    return paths


ROBUSTSCOPE_CHILD = """
import json, resource, sys, time
from robustscope.ingest import dove
start = time.perf_counter()
ds, report = dove.load(sys.argv[1])
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "rows": report.rows_read, "cells": int(ds["observed"].sum()),
                  "correct": int(ds["n_correct"].where(ds["observed"]).sum()),
                  "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""

PANDAS_CHILD = """
import json, resource, sys, time
import pandas as pd
columns = json.loads(sys.argv[2])
start = time.perf_counter()
frame = pd.read_parquet(sys.argv[1], columns=columns)
keys = [c for c in columns if c not in ("score", "sample_index")]
cells = frame.groupby(keys, sort=False, observed=True)["score"].agg(["sum", "count"])
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "rows": len(frame), "cells": len(cells), "correct": int(cells["sum"].sum()),
                  "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def run_child(code: str, arguments: list[str], limit_gb: float | None) -> dict | None:
    """Run one measurement in a fresh Python process; return None when it passed the memory limit."""
    import psutil

    process = subprocess.Popen([sys.executable, "-c", code, *arguments], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watched = psutil.Process(process.pid)
    killed = False
    while process.poll() is None:
        try:
            rss = watched.memory_info().rss
        except psutil.NoSuchProcess:
            break
        if limit_gb is not None and rss > limit_gb * 2**30:
            process.kill()
            killed = True
            break
        time.sleep(0.05)
    stdout, stderr = process.communicate()
    if killed:
        return None
    if process.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{stderr}")
    return json.loads(stdout.strip().splitlines()[-1])


def measure(code: str, arguments: list[str], repeats: int, limit_gb: float | None) -> dict | None:
    results = []
    for _ in range(repeats):
        result = run_child(code, arguments, limit_gb)
        if result is None:
            return None
        results.append(result)
    seconds = statistics.median(r["seconds"] for r in results)
    return {
        "rows": results[0]["rows"],
        "cells": results[0]["cells"],
        "correct": results[0]["correct"],
        "seconds_median": seconds,
        "seconds_all": [round(r["seconds"], 2) for r in results],
        "rows_per_second": results[0]["rows"] / seconds,
        "peak_rss_mib_median": statistics.median(r["peak_rss_kib"] for r in results) / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000_000, help="rows in the synthetic table")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per tool (median reported)")
    parser.add_argument("--pandas-repeats", type=int, default=None, help="repeats for pandas (default: --repeats)")
    parser.add_argument("--pandas-limit-gb", type=float, default=16.0, help="kill the pandas child above this resident memory")
    parser.add_argument("--folder", type=Path, default=None, help="where to write the table (default: a temporary folder, deleted afterwards)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()

    folder = args.folder or Path(tempfile.mkdtemp(prefix="robustscope-bench-"))
    try:
        start = time.perf_counter()
        paths = write_table(folder, args.rows)
        total_rows = sum(pq.ParquetFile(p).metadata.num_rows for p in paths)
        size = sum(p.stat().st_size for p in paths)
        print(f"wrote {total_rows:,} rows in {len(paths)} files ({size / 2**20:.0f} MiB) in {time.perf_counter() - start:.1f} s", flush=True)

        ours = measure(ROBUSTSCOPE_CHILD, [str(folder)], args.repeats, None)
        print("robustscope:", json.dumps(ours), flush=True)
        pandas_rows = total_rows
        theirs = measure(PANDAS_CHILD, [str(folder), json.dumps(PANDAS_COLUMNS)], args.pandas_repeats or args.repeats, args.pandas_limit_gb)
        if theirs is None:
            print(f"pandas passed {args.pandas_limit_gb} GB resident memory on {total_rows:,} rows; measuring on a quarter of the files", flush=True)
            subset = Path(tempfile.mkdtemp(prefix="robustscope-bench-subset-"))
            for path in paths[: len(paths) // 4]:
                target = subset / path.relative_to(folder)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(path, target)
            pandas_rows = sum(pq.ParquetFile(p).metadata.num_rows for p in subset.rglob("*.parquet"))
            theirs = measure(PANDAS_CHILD, [str(subset), json.dumps(PANDAS_COLUMNS)], args.pandas_repeats or args.repeats, None)
            shutil.rmtree(subset)
        print("pandas:", json.dumps(theirs), flush=True)

        figures = {
            "rows": total_rows,
            "files": len(paths),
            "parquet_mib": size / 2**20,
            "pandas_rows": pandas_rows,
            "cpu_count": os.cpu_count(),
            "robustscope": ours,
            "pandas": theirs,
            "throughput_ratio": ours["rows_per_second"] / theirs["rows_per_second"],
            "memory_ratio": theirs["peak_rss_mib_median"] / ours["peak_rss_mib_median"],
        }
        if pandas_rows == total_rows:
            figures["same_counts"] = ours["cells"] == theirs["cells"] and ours["correct"] == theirs["correct"]
        print(json.dumps(figures, indent=2))
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
    finally:
        if args.folder is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
