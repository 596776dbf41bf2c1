"""Benchmark: how robustscope's default fit grows with the size of the tensor.

Simulates tensors with ``robustscope.simulate.simulate_location_scale`` on a
ladder of sizes with 100 examples per cell. The ladder runs from 10 models x
20 tasks x 10 perturbations (2,000 cells) to 200 x 500 x 50 (5,000,000
cells). Each tensor is fitted with ``robustscope.fit.fit`` and the default
specification at fixed short chains. Each fit runs in a fresh Python process that reads the
saved tensor, so its peak memory (``VmHWM`` of the child) belongs to that
fit alone. It reports the fit's wall time with its parts (compilation,
sampling, pointwise log likelihood) and the peak memory, then fits the
growth exponents ``b`` of ``time = a * cells^b`` and ``memory = a *
cells^b`` by least squares on the logarithms of the sizes that finished.

The cost of the collapsed likelihood grows with the number of distinct
(pair, n, k) count patterns rather than with the cells, so the table lists
both.

Sampling time is the number of gradient evaluations times the cost of one.
To tell the two apart, each fit also records the mean number of leapfrog
steps per draw (after warm-up) and times the model's compiled log density
and gradient on its own (the median of repeated single-threaded calls at
the initial point). ``--gradient-sizes`` measures only that cost, and the
memory to build and compile the model, on sizes too large to fit here (the
whole ladder up to 200 x 500 x 50 takes minutes this way).

NOTE: ``fit`` computes the posterior predictive check on arrays of (draws x
cells) and the pointwise log likelihood on chunks of (100 draws x patterns x
quadrature nodes), all float64. At 200 x 500 x 50 with 400 draws the first
is 16 GB per array, so the largest sizes can stop at the memory limit, which
the table then records.

Usage::

    python benchmarks/bench_scaling.py --quick
    python benchmarks/bench_scaling.py [--largest 100x200x40] [--chains 2 --tune 200 --draws 200]
    python benchmarks/bench_scaling.py --largest 70x150x30 --gradient-sizes 100x200x40 200x500x50
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

LADDER = ((10, 20, 10), (20, 50, 20), (50, 100, 25), (100, 200, 40), (200, 500, 50))
QUICK_LADDER = ((3, 4, 6), (4, 6, 10), (6, 10, 12))
N_EXAMPLES = 100
SAMPLER = {"chains": 2, "tune": 200, "draws": 200}
QUICK_SAMPLER = {"chains": 1, "tune": 50, "draws": 50}


def parse_size(text: str) -> tuple[int, int, int]:
    """Parse ``MODELSxTASKSxPERTURBATIONS`` (for example ``100x200x40``)."""
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: expected MODELSxTASKSxPERTURBATIONS with positive whole numbers, for example 100x200x40")
    models, tasks, perturbations = (int(part) for part in parts)
    if models < 2 or tasks < 2 or perturbations < 2:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: the model needs at least 2 models, 2 tasks and 2 perturbations")
    return models, tasks, perturbations


def ladder(args: argparse.Namespace) -> list[tuple[int, int, int]]:
    """Return the sizes to run: the ladder up to ``--largest`` cells, with ``--largest`` itself at the end."""
    sizes = list(QUICK_LADDER if args.quick else LADDER)
    if args.largest is None:
        return sizes
    limit = int(np.prod(args.largest))
    sizes = [size for size in sizes if int(np.prod(size)) <= limit]
    if args.largest not in sizes:
        sizes.append(args.largest)
    return sizes


def growth_exponent(cells: list[float], values: list[float]) -> float | None:
    """Return the least-squares slope of log(values) on log(cells), or None with fewer than two points."""
    if len(cells) < 2:
        return None
    slope, _ = np.polyfit(np.log(cells), np.log(values), 1)
    return float(slope)


def gradient_cost(tensor_path: str, min_seconds: float = 2.0, min_calls: int = 5) -> dict[str, float]:
    """Build and compile the default model for a saved tensor and time one log density and gradient evaluation.

    Returns the build and compile times, the number of unconstrained
    parameters and the median seconds per call over at least ``min_calls``
    calls and ``min_seconds`` seconds, at the sampler's initial point.
    """
    import nutpie

    from robustscope import tensor as _tensor
    from robustscope.models.location_scale import build_model, initial_point, prepare_data
    from robustscope.specs import load_spec

    spec = load_spec("location-scale")
    start = time.perf_counter()
    data = prepare_data(_tensor.load(tensor_path))
    model = build_model(data, spec)
    build = time.perf_counter() - start
    start = time.perf_counter()
    compiled = nutpie.compile_pymc_model(model, initial_points=initial_point(data, spec, model))
    compile_seconds = time.perf_counter() - start
    point = np.asarray(compiled.initial_point_func(0), dtype=float)
    logp_and_grad = compiled.logp_func
    logp_and_grad(point)  # the first call may still compile
    calls = []
    begin = time.perf_counter()
    while len(calls) < min_calls or time.perf_counter() - begin < min_seconds:
        tick = time.perf_counter()
        logp_and_grad(point)
        calls.append(time.perf_counter() - tick)
    return {
        "build_seconds": build,
        "gradient_compile_seconds": compile_seconds,
        "parameters": int(point.size),
        "gradient_seconds": float(np.median(calls)),
        "gradient_calls": len(calls),
    }


def child_main(tensor_path: str, settings: dict[str, Any]) -> None:
    """Fit one saved tensor (or only time its gradient) and print one JSON line with the timings and peak memory."""
    import resource

    from robustscope.fit import fit
    from robustscope.specs import load_spec

    if settings.get("gradient_only"):
        result = {**gradient_cost(tensor_path), "peak_memory_mib": _common.peak_memory_mib()}
        print(json.dumps(result))
        return
    spec = load_spec("location-scale").with_sampler(**settings)
    start = time.perf_counter()
    trace = fit(tensor_path, spec, progress=False)
    wall = time.perf_counter() - start
    timings = json.loads(trace.attrs["timings"])
    stats = trace["sample_stats"]
    divergences = int(np.asarray(stats["diverging"]).sum())
    steps = float(np.asarray(stats["n_steps"]).mean()) if "n_steps" in stats else None
    fit_memory = _common.peak_memory_mib()
    result = {
        "fit_seconds": wall,
        "timings": timings,
        "pairs": int(trace["posterior"].sizes["pair"]),
        "divergences": divergences,
        "mean_leapfrog_steps": steps,
        **gradient_cost(tensor_path),
        "peak_memory_mib": fit_memory,
        # ru_maxrss of waited-for children is in KiB on Linux. nutpie samples in threads, so this is usually 0.
        "children_peak_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }
    print(json.dumps(result))


def simulate(size: tuple[int, int, int], seed: int, folder: Path) -> tuple[Path, dict[str, Any]]:
    """Simulate a tensor of ``size``, save it in ``folder`` and return its path and counts."""
    from robustscope import tensor as _tensor
    from robustscope.models.location_scale import prepare_data
    from robustscope.simulate import simulate_location_scale

    models, tasks, perturbations = size
    start = time.perf_counter()
    ds, _ = simulate_location_scale(models=models, tasks=tasks, perturbations=perturbations, n_examples=N_EXAMPLES, seed=seed)
    data = prepare_data(ds)
    path = folder / f"tensor-{models}x{tasks}x{perturbations}.nc"
    _tensor.save(ds, path)
    return path, {
        "cells": int(len(data.cell_k)),
        "pairs": int(data.n_pairs),
        "patterns": int(len(data.unique_k)),
        "simulate_seconds": time.perf_counter() - start,
    }


def _row_head(row: dict[str, Any]) -> str:
    """Return the first five cells of a table row: size, cells, pairs, count patterns and status."""
    size = "x".join(map(str, row["size"]))
    return f"| {size} | {row['cells']:,} | {row['pairs']:,} | {row['patterns']:,} | {row['status']} "


def markdown_report(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """Return the Markdown fragment with the table and the fitted exponents."""
    label = " (quick mode: tiny sizes, very short chains; not a result)" if meta["quick"] else ""
    sampler = meta["sampler"]
    lines = [
        f"# Scaling of the default fit with the tensor size{label}",
        "",
        f"Script: `python benchmarks/bench_scaling.py {meta['command_line']}`.",
        f"Data: `robustscope.simulate.simulate_location_scale`, {N_EXAMPLES} examples per cell, seed {meta['seed']}. "
        f"Fit: `robustscope.fit.fit` with `models/location-scale.yaml`, chains x (tuning + draws) = {sampler['chains']} x "
        f"({sampler['tune']} + {sampler['draws']}), one fresh process per size.",
        "",
        *_common.machine_lines(meta["machine"]),
        "",
        "| models x tasks x perturbations | cells | pairs | distinct count patterns | status | fit wall time (s) "
        "| compile (s) | sampling (s) | log likelihood (s) | peak memory (MiB) | leapfrog steps per draw | one gradient (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        head = _row_head(row)
        result = row["result"]
        if result is None:
            lines.append(head + f"| — | — | — | — | {row['peak_tree_rss_mib']:,.0f} (sampled) | — | — |")
            continue
        timings = result["timings"]
        gradient_ms = result["gradient_seconds"] * 1000 if result.get("gradient_seconds") else None
        lines.append(
            head
            + f"| {result['fit_seconds']:.1f} | {_common.format_number(timings.get('compile_seconds'))} "
            + f"| {_common.format_number(timings.get('sampling_seconds'))} | {_common.format_number(timings.get('loglik_seconds'))} "
            + f"| {result['peak_memory_mib']:,.0f} | {_common.format_number(result.get('mean_leapfrog_steps'))} "
            + f"| {_common.format_number(gradient_ms, 2)} |"
        )
    gradient_rows = meta.get("gradient_rows", [])
    if gradient_rows:
        lines += [
            "",
            "Gradient only (`--gradient-sizes`): the model is built and compiled and its log density and gradient timed, "
            "without sampling.",
            "",
            "| models x tasks x perturbations | cells | pairs | distinct count patterns | status | parameters "
            "| build (s) | compile (s) | one gradient (ms) | peak memory (MiB) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in gradient_rows:
            head = _row_head(row)
            result = row["result"]
            if result is None:
                lines.append(head + f"| — | — | — | — | {row['peak_tree_rss_mib']:,.0f} (sampled) |")
                continue
            lines.append(
                head
                + f"| {result['parameters']:,} | {result['build_seconds']:.1f} | {result['gradient_compile_seconds']:.1f} "
                + f"| {result['gradient_seconds'] * 1000:.2f} | {result['peak_memory_mib']:,.0f} |"
            )
    exponents = meta["exponents"]
    lines += [
        "",
        "Growth exponents b in `y = a * cells^b`, least squares on the logarithms of the sizes that finished "
        f"({exponents['sizes']} sizes): fit wall time {_common.format_number(exponents['fit_seconds'], 2)}, "
        f"sampling time {_common.format_number(exponents['sampling_seconds'], 2)}, "
        f"peak memory {_common.format_number(exponents['peak_memory'], 2)}, "
        f"leapfrog steps per draw {_common.format_number(exponents.get('leapfrog_steps'), 2)}; "
        f"one gradient {_common.format_number(exponents.get('gradient_seconds'), 2)} "
        f"(over {exponents.get('gradient_sizes', 0)} sizes, the gradient-only ones included).",
        "",
        "Fit wall time covers `robustscope.fit.fit` after the imports: reading the tensor, building and compiling the model, "
        "sampling, the pointwise log likelihood and the posterior predictive check. Peak memory is the fit process's `VmHWM`. "
        "Small sizes are dominated by the fixed compile time, so the exponents describe this ladder, not an asymptote.",
    ]
    return "\n".join(lines)


def run_size(size: tuple[int, int, int], settings: dict[str, Any], folder: Path, args: argparse.Namespace, memory_limit: float | None) -> dict[str, Any]:
    """Simulate a tensor of ``size``, run the child on it with ``settings`` and return the table row."""
    path, counts = simulate(size, args.seed, folder)
    task = "timing the gradient" if settings.get("gradient_only") else "fitting"
    print(f"{'x'.join(map(str, size))}: {counts['cells']:,} cells, {counts['patterns']:,} distinct count patterns; {task}", flush=True)
    outcome = _common.run_child(
        [__file__, "--child", str(path), "--settings", json.dumps(settings)],
        timeout=args.cap_minutes * 60,
        memory_limit_gib=memory_limit,
    )
    path.unlink()
    row = {"size": list(size), **counts, **outcome}
    if row["status"] == "finished":
        del row["stderr_tail"]
    else:
        print(outcome["stderr_tail"], file=sys.stderr)
    return row


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="three tiny sizes and very short chains, to check that the script works")
    parser.add_argument("--largest", type=parse_size, help="largest size to run, MODELSxTASKSxPERTURBATIONS (default: the whole ladder, up to 200x500x50)")
    parser.add_argument("--chains", type=int, help=f"chains per fit (default {SAMPLER['chains']}; quick {QUICK_SAMPLER['chains']})")
    parser.add_argument("--tune", type=int, help=f"tuning iterations per chain (default {SAMPLER['tune']}; quick {QUICK_SAMPLER['tune']})")
    parser.add_argument("--draws", type=int, help=f"draws per chain (default {SAMPLER['draws']}; quick {QUICK_SAMPLER['draws']})")
    parser.add_argument("--seed", type=int, default=20260204, help="seed of the simulation and the sampler")
    parser.add_argument("--cap-minutes", type=float, default=120.0, help="wall-time cap per size in minutes; larger sizes are skipped after a size passes it")
    parser.add_argument("--memory-limit-gb", type=float, default=None, help="kill a fit whose resident memory passes this many GiB (default: 80%% of the machine's memory)")
    parser.add_argument(
        "--gradient-sizes",
        type=parse_size,
        nargs="+",
        help="after the fits, sizes MODELSxTASKSxPERTURBATIONS at which only the log density and gradient are timed",
    )
    parser.add_argument("--output-dir", type=Path, default=_common.DOCS_DIR, help="folder for the Markdown and JSON results")
    parser.add_argument("--name", default="scaling", help="file name stem of the results (default: scaling)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_arguments()
    if args.child:
        child_main(args.child, json.loads(args.settings))
        return

    defaults = QUICK_SAMPLER if args.quick else SAMPLER
    sampler = {key: getattr(args, key) or defaults[key] for key in ("chains", "tune", "draws")}
    machine = _common.machine_info()
    memory_limit = args.memory_limit_gb
    if memory_limit is None and machine["memory_gib"]:
        memory_limit = 0.8 * machine["memory_gib"]

    rows = []
    gradient_rows = []
    with tempfile.TemporaryDirectory(prefix="robustscope-bench-") as folder:
        for size in ladder(args):
            row = run_size(size, {**sampler, "seed": args.seed}, Path(folder), args, memory_limit)
            rows.append(row)
            fitted = row["result"]["fit_seconds"] if row["result"] else None
            print(f"{'x'.join(map(str, size))}: {row['status']}, fit {_common.format_number(fitted)} s", flush=True)
            if row["status"] != "finished":
                # A larger tensor would run out of time or memory too.
                break
        for size in args.gradient_sizes or []:
            row = run_size(size, {"gradient_only": True}, Path(folder), args, memory_limit)
            if row["result"] is not None:
                print(f"{'x'.join(map(str, size))}: one gradient {row['result']['gradient_seconds'] * 1000:.2f} ms", flush=True)
            gradient_rows.append(row)

    finished = [row for row in rows if row["result"] is not None]
    cells = [row["cells"] for row in finished]
    with_steps = [row for row in finished if row["result"].get("mean_leapfrog_steps")]
    timed = [row for row in [*finished, *gradient_rows] if row["result"] is not None and row["result"].get("gradient_seconds")]
    exponents = {
        "sizes": len(finished),
        "fit_seconds": growth_exponent(cells, [row["result"]["fit_seconds"] for row in finished]),
        "sampling_seconds": growth_exponent(cells, [row["result"]["timings"]["sampling_seconds"] for row in finished]),
        "peak_memory": growth_exponent(cells, [row["result"]["peak_memory_mib"] for row in finished]),
        "leapfrog_steps": growth_exponent([row["cells"] for row in with_steps], [row["result"]["mean_leapfrog_steps"] for row in with_steps]),
        "gradient_seconds": growth_exponent([row["cells"] for row in timed], [row["result"]["gradient_seconds"] for row in timed]),
        "gradient_sizes": len(timed),
    }
    meta = {
        "quick": args.quick,
        "command_line": " ".join(sys.argv[1:]),
        "seed": args.seed,
        "sampler": sampler,
        "memory_limit_gib": memory_limit,
        "cap_minutes": args.cap_minutes,
        "machine": machine,
        "exponents": exponents,
        "gradient_rows": gradient_rows,
    }
    markdown = markdown_report(rows, meta)
    markdown_path, json_path = _common.write_outputs(args.output_dir, args.name, markdown, {**meta, "rows": rows})
    print(markdown)
    print(f"wrote {markdown_path} and {json_path}")


if __name__ == "__main__":
    main()
