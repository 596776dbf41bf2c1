"""Benchmark: one log-density-and-gradient evaluation of the default model, elementwise graph against fused kernel.

The default location-scale model (``models/location-scale.yaml``) is built
twice on the same tensor, once with the collapsed binomial likelihood as an
elementwise PyTensor graph (``quadrature.FUSED_KERNEL = False``) and once
as one ``MarginalLogpOp`` node (``quadrature.FUSED_KERNEL = True``). Each is
compiled with ``nutpie.compile_pymc_model`` (Numba backend), and the
benchmark calls the compiled C function that nutpie's sampler calls, which
returns the log density and its gradient at one point.

Both functions are evaluated at the same point, nutpie's initial point for
seed 0, and must agree there. Timing is interleaved: each repeat times
``--evaluations`` calls of one function and then of the other, and the
order alternates between repeats, so drifts in machine load reach both.
The table reports the median, minimum and maximum time per evaluation over
the repeats and the ratio of the medians.

Usage::

    python benchmarks/bench_likelihood_kernel.py [--repeats 7] [--evaluations 200]
    python benchmarks/bench_likelihood_kernel.py --simulated --no-write   # a quick check on simulated data
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

VARIANTS = ("elementwise graph", "fused kernel")
OUTPUT = _common.DOCS_DIR / "likelihood_kernel.md"


class LogpGradient:
    """nutpie's compiled log density and gradient of one model, callable at a fixed point."""

    def __init__(self, compiled: Any, point: np.ndarray):
        self._function = compiled.compiled_logp_func.ctypes
        self._user_data = compiled.user_data
        self.point = np.ascontiguousarray(point, dtype=np.float64)
        self.gradient = np.empty_like(self.point)
        self.logp = np.zeros(1)
        double_pointer = ctypes.POINTER(ctypes.c_double)
        self._arguments = (
            ctypes.c_uint64(self.point.size),
            self.point.ctypes.data_as(double_pointer),
            self.gradient.ctypes.data_as(double_pointer),
            self.logp.ctypes.data_as(double_pointer),
            ctypes.c_void_p(self._user_data.ctypes.data),
        )

    def __call__(self) -> None:
        status = self._function(*self._arguments)
        if status != 0:
            raise RuntimeError(
                f"nutpie's log density function returned error code {status} at the benchmark point "
                "(1: an exception, 3: a non-finite gradient, 4: a non-finite log density)"
            )

    def time_per_evaluation(self, evaluations: int) -> float:
        """Return the mean wall time in seconds of ``evaluations`` consecutive calls."""
        start = time.perf_counter()
        for _ in range(evaluations):
            self()
        return (time.perf_counter() - start) / evaluations


def build_functions(data: Any, spec: Any) -> tuple[dict[str, LogpGradient], dict[str, float]]:
    """Compile the model once per variant and return the callable functions and the compile times in seconds."""
    import nutpie

    from robustscope.models import location_scale, quadrature

    compiled = {}
    compile_seconds = {}
    previous = quadrature.FUSED_KERNEL
    try:
        for variant in VARIANTS:
            quadrature.FUSED_KERNEL = variant == "fused kernel"
            model = location_scale.build_model(data, spec)
            start = time.perf_counter()
            compiled[variant] = nutpie.compile_pymc_model(model)
            compile_seconds[variant] = time.perf_counter() - start
    finally:
        quadrature.FUSED_KERNEL = previous

    point = compiled[VARIANTS[0]].initial_point_func(0)
    functions = {variant: LogpGradient(model, point) for variant, model in compiled.items()}
    return functions, compile_seconds


def compare_at_point(functions: dict[str, LogpGradient]) -> dict[str, float]:
    """Evaluate both functions once and return their log densities and the largest gradient difference."""
    for function in functions.values():
        function()
    reference, fused = (functions[variant] for variant in VARIANTS)
    scale = float(np.max(np.abs(reference.gradient)))
    return {
        "logp_elementwise": float(reference.logp[0]),
        "logp_fused": float(fused.logp[0]),
        "max_abs_gradient_difference": float(np.max(np.abs(reference.gradient - fused.gradient))),
        "max_abs_gradient": scale,
    }


def time_interleaved(functions: dict[str, LogpGradient], repeats: int, evaluations: int) -> dict[str, list[float]]:
    """Return, per variant, the time per evaluation in seconds of each repeat."""
    for function in functions.values():
        function.time_per_evaluation(max(1, evaluations // 10))
    times: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    for repeat in range(repeats):
        order = VARIANTS if repeat % 2 == 0 else VARIANTS[::-1]
        for variant in order:
            times[variant].append(functions[variant].time_per_evaluation(evaluations))
    return times


def render(
    info: dict[str, Any],
    source: str,
    sizes: dict[str, int],
    times: dict[str, list[float]],
    compile_seconds: dict[str, float],
    check: dict[str, float],
    repeats: int,
    evaluations: int,
) -> str:
    """Return the Markdown page of one run."""
    medians = {variant: statistics.median(values) for variant, values in times.items()}
    ratio = medians["elementwise graph"] / medians["fused kernel"]
    lines = [
        "# Likelihood kernel: elementwise graph against fused kernel",
        "",
        f"Script: `python benchmarks/bench_likelihood_kernel.py --repeats {repeats} --evaluations {evaluations}`.",
        "",
        f"Data: {source}. {sizes['pairs']:,} (model, task) pairs, {sizes['cells']:,} cells, "
        f"{sizes['patterns']:,} distinct (pair, n, k) patterns, {sizes['nodes']} Gauss-Hermite nodes, "
        f"{sizes['dimensions']:,} unconstrained parameters. Model: `location-scale` specification.",
        "",
        "Each time is one call of the C function that `nutpie.compile_pymc_model` compiles (Numba backend), "
        "which returns the log density and its gradient, at nutpie's initial point for seed 0. "
        f"Each repeat times {evaluations} consecutive calls of one variant and then of the other, "
        f"alternating the order, {repeats} repeats.",
        "",
        *_common.machine_lines(info),
        "",
        "| likelihood | median (ms) | min (ms) | max (ms) | compile (s) |",
        "|---|---|---|---|---|",
    ]
    for variant in VARIANTS:
        values = times[variant]
        lines.append(
            f"| {variant} | {medians[variant] * 1e3:.3f} | {min(values) * 1e3:.3f} | {max(values) * 1e3:.3f} | {compile_seconds[variant]:.1f} |"
        )
    per_repeat = [slow / fast for slow, fast in zip(times["elementwise graph"], times["fused kernel"], strict=True)]
    lines += [
        "",
        f"Ratio of the medians (elementwise / fused): **{ratio:.2f}**. "
        f"Median of the per-repeat ratios: {statistics.median(per_repeat):.2f}.",
        "",
        f"At the benchmark point the log densities are {check['logp_elementwise']:.10f} (elementwise) and "
        f"{check['logp_fused']:.10f} (fused), and the gradients differ by at most "
        f"{check['max_abs_gradient_difference']:.2e} (largest gradient entry {check['max_abs_gradient']:.3g}).",
        "",
        "The machine runs other jobs at the same time, so single times are noisy. "
        "Compare the medians and the ratio. Compile times depend on the state of the PyTensor and Numba caches.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(_common.ROOT / "data" / "multi-prompt-eval"), help="multi-prompt data folder to ingest")
    parser.add_argument("--simulated", action="store_true", help="use a small simulated tensor instead of --data")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per variant (default 7)")
    parser.add_argument("--evaluations", type=int, default=200, help="calls per timed repeat (default 200)")
    parser.add_argument("--no-write", action="store_true", help=f"print the table only, without writing {OUTPUT.relative_to(_common.ROOT)}")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.evaluations < 1:
        parser.error(f"--repeats and --evaluations must be at least 1, got {args.repeats} and {args.evaluations}")

    import robustscope
    from robustscope.models import location_scale
    from robustscope.specs import load_spec

    info = _common.machine_info()
    if args.simulated:
        from robustscope.simulate import simulate_location_scale

        ds, _ = simulate_location_scale(models=8, tasks=8, perturbations=30, seed=0)
        source = "simulated with `simulate_location_scale(models=8, tasks=8, perturbations=30, seed=0)`"
    else:
        ds = robustscope.ingest(args.data, "multi-prompt")
        source = f"`{Path(args.data).name}` (multi-prompt format)"
    data = location_scale.prepare_data(ds)
    spec = load_spec("location-scale")

    functions, compile_seconds = build_functions(data, spec)
    check = compare_at_point(functions)
    if not np.isclose(check["logp_elementwise"], check["logp_fused"], rtol=1e-9, atol=1e-8):
        raise RuntimeError(f"the two likelihoods disagree at the benchmark point: {check}")
    times = time_interleaved(functions, args.repeats, args.evaluations)

    sizes = {
        "pairs": int(data.n_pairs),
        "cells": int(len(data.cell_k)),
        "patterns": int(len(data.unique_k)),
        "nodes": int(spec.quadrature_nodes),
        "dimensions": int(functions[VARIANTS[0]].point.size),
    }
    markdown = render(info, source, sizes, times, compile_seconds, check, args.repeats, args.evaluations)
    print(markdown, end="")
    if not args.no_write:
        from robustscope._io import write_text

        write_text(OUTPUT, markdown)
        print(f"wrote {OUTPUT.relative_to(_common.ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
