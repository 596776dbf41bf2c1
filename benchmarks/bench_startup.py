"""Benchmark: time from ``import robustscope`` to the first posterior draw, with cold and warm compile caches.

Each measurement is a fresh Python process that imports robustscope, makes
a tensor, builds the default location-scale model and samples one draw
after one tuning step with nutpie (``robustscope.fit.sample_model``). It
records the time of each step from just before ``import robustscope``.

* cold: the compile caches start empty. ``PYTENSOR_FLAGS`` sets
  ``base_compiledir`` to a new temporary folder, which moves PyTensor's
  ``compiledir`` and the Numba cache of its Numba backend (PyTensor 3.3
  keeps that cache under ``base_compiledir/numba``), and
  ``NUMBA_CACHE_DIR`` points Numba's own cache into the same folder.
* warm: a second process with the same folders, right after the cold one.

Python's bytecode caches and the operating system's file cache are not
emptied, so "cold" means cold compile caches, not a freshly booted machine.

Usage::

    python benchmarks/bench_startup.py --quick
    python benchmarks/bench_startup.py [--repeats 3] [--shipped]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

# The child imports nothing before robustscope, so the import step is measured whole.
CHILD = """
import json, sys, time
started = time.perf_counter()
import robustscope
from robustscope.fit import sample_model
from robustscope.models.location_scale import build_model, prepare_data
from robustscope.specs import load_spec
imported = time.perf_counter()
options = json.loads(sys.argv[1])
if options["shipped"]:
    from robustscope.ingest import ingest
    ds = ingest(options["data"], "multi-prompt")
else:
    from robustscope.simulate import simulate_location_scale
    ds, _ = simulate_location_scale(**options["size"], seed=0)
data = prepare_data(ds)
tensor_ready = time.perf_counter()
spec = load_spec("location-scale").with_sampler(chains=1, tune=1, draws=1, cores=1)
model = build_model(data, spec)
built = time.perf_counter()
trace, timings = sample_model(model, spec, progress=False)
drawn = time.perf_counter()
print(json.dumps({
    "import_seconds": imported - started,
    "tensor_seconds": tensor_ready - imported,
    "build_seconds": built - tensor_ready,
    "compile_seconds": timings["compile_seconds"],
    "first_draw_seconds": timings["sampling_seconds"],
    "to_first_draw_seconds": drawn - started,
    "pairs": int(data.n_pairs),
    "cells": int(len(data.cell_k)),
}))
"""

SIMULATED_SIZE = {"models": 8, "tasks": 8, "perturbations": 30, "n_examples": 100}
STEPS = ("import_seconds", "tensor_seconds", "build_seconds", "compile_seconds", "first_draw_seconds", "to_first_draw_seconds")


def cache_environment(folder: Path) -> dict[str, str]:
    """Return this process's environment with PyTensor's and Numba's caches moved into ``folder``."""
    env = dict(os.environ)
    flags = [flag for flag in env.get("PYTENSOR_FLAGS", "").split(",") if flag and not flag.startswith(("base_compiledir=", "compiledir="))]
    flags.append(f"base_compiledir={folder / 'pytensor'}")
    env["PYTENSOR_FLAGS"] = ",".join(flags)
    env["NUMBA_CACHE_DIR"] = str(folder / "numba")
    return env


def measure_pair(options: dict[str, Any], cap_seconds: float) -> dict[str, Any]:
    """Run one cold and one warm process on a new cache folder; return both outcomes."""
    folder = Path(tempfile.mkdtemp(prefix="robustscope-startup-"))
    try:
        env = cache_environment(folder)
        cold = _common.run_child(["-c", CHILD, json.dumps(options)], timeout=cap_seconds, env=env)
        warm = _common.run_child(["-c", CHILD, json.dumps(options)], timeout=cap_seconds, env=env)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    for outcome in (cold, warm):
        if outcome["status"] != "finished":
            raise SystemExit(f"startup measurement failed ({outcome['status']}); its error output:\n{outcome['stderr_tail']}")
        del outcome["stderr_tail"]
    return {"cold": cold, "warm": warm}


def medians(runs: list[dict[str, Any]], kind: str) -> dict[str, float]:
    """Return the median of each step over ``runs`` for ``kind`` (``"cold"`` or ``"warm"``), plus the process wall time."""
    values = {step: statistics.median(run[kind]["result"][step] for run in runs) for step in STEPS}
    values["process_seconds"] = statistics.median(run[kind]["wall_seconds"] for run in runs)
    return values


def markdown_report(summary: dict[str, dict[str, float]], runs: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """Return the Markdown fragment with the median of each step, cold and warm."""
    label = " (quick mode: one repeat; not a result)" if meta["quick"] else ""
    lines = [
        f"# Time to the first draw{label}",
        "",
        f"Script: `python benchmarks/bench_startup.py {meta['command_line']}`; {meta['repeats']} cold and {meta['repeats']} warm runs, median reported.",
        f"Data: {meta['data']}; {meta['pairs']} (model, task) pairs, {meta['cells']:,} cells. "
        "Sampler: nutpie, 1 chain, 1 tuning step, 1 draw.",
        "",
        *_common.machine_lines(meta["machine"]),
        "",
        "| compile caches | import (s) | make tensor (s) | build model (s) | compile (s) | first draw (s) | import to first draw (s) | process wall time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind in ("cold", "warm"):
        row = summary[kind]
        lines.append(
            f"| {kind} | {row['import_seconds']:.1f} | {row['tensor_seconds']:.1f} | {row['build_seconds']:.1f} | {row['compile_seconds']:.1f} "
            f"| {row['first_draw_seconds']:.1f} | {row['to_first_draw_seconds']:.1f} | {row['process_seconds']:.1f} |"
        )
    all_cold = ", ".join(f"{run['cold']['result']['to_first_draw_seconds']:.1f}" for run in runs)
    all_warm = ", ".join(f"{run['warm']['result']['to_first_draw_seconds']:.1f}" for run in runs)
    lines += [
        "",
        f"Import to first draw, every run: cold {all_cold}; warm {all_warm} seconds. "
        "Cold runs start with empty PyTensor and Numba caches (`PYTENSOR_FLAGS=base_compiledir=<new folder>`, "
        "`NUMBA_CACHE_DIR=<same folder>`); each warm run reuses the caches its cold run filled. "
        "Process wall time adds the interpreter start and the exit.",
    ]
    return "\n".join(lines)


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one cold and one warm run, to check that the script works")
    parser.add_argument("--repeats", type=int, default=3, help="cold and warm pairs to run (median reported; quick: 1)")
    parser.add_argument("--shipped", action="store_true", help="use the shipped multi-prompt tensor instead of a small simulated one")
    parser.add_argument("--data", type=Path, default=_common.ROOT / "data" / "multi-prompt-eval", help="multi-prompt data folder for --shipped")
    parser.add_argument("--cap-minutes", type=float, default=15.0, help="wall-time cap per process in minutes")
    parser.add_argument("--output-dir", type=Path, default=_common.DOCS_DIR, help="folder for startup.md and startup.json")
    return parser.parse_args()


def main() -> None:
    args = parse_arguments()
    repeats = 1 if args.quick else args.repeats
    options = {"shipped": args.shipped, "data": str(args.data), "size": SIMULATED_SIZE}
    machine = _common.machine_info()

    runs = []
    for repeat in range(repeats):
        pair = measure_pair(options, args.cap_minutes * 60)
        runs.append(pair)
        cold = pair["cold"]["result"]["to_first_draw_seconds"]
        warm = pair["warm"]["result"]["to_first_draw_seconds"]
        print(f"repeat {repeat + 1}: cold {cold:.1f} s, warm {warm:.1f} s to the first draw", flush=True)

    if args.shipped:
        description = "the shipped multi-prompt tensor, ingested in the child"
    else:
        size = SIMULATED_SIZE
        description = (
            f"simulated in the child with `robustscope.simulate.simulate_location_scale`: {size['models']} models x "
            f"{size['tasks']} tasks x {size['perturbations']} perturbations, {size['n_examples']} examples per cell"
        )
    first = runs[0]["cold"]["result"]
    summary = {"cold": medians(runs, "cold"), "warm": medians(runs, "warm")}
    meta = {
        "quick": args.quick,
        "command_line": " ".join(sys.argv[1:]),
        "repeats": repeats,
        "data": description,
        "pairs": first["pairs"],
        "cells": first["cells"],
        "machine": machine,
    }
    markdown = markdown_report(summary, runs, meta)
    markdown_path, json_path = _common.write_outputs(args.output_dir, "startup", markdown, {**meta, "medians": summary, "runs": runs})
    print(markdown)
    print(f"wrote {markdown_path} and {json_path}")


if __name__ == "__main__":
    main()
