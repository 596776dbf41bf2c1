"""Time the main job on the shipped multi-prompt data and report ESS per second.

Runs ``robustscope run`` (ingest, fit, report) once per specification given,
in this process, and prints a Markdown table: wall time of each stage,
sampling time, and bulk ESS per second of sampling for gamma1 and the
variance shares. Usage::

    python benchmarks/bench_main_job.py [--spec location-scale --spec location-scale-fast] [--output DIR]

Run it on an otherwise idle machine; other processes on the same cores
lengthen every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import arviz as az

from robustscope.fit import load_posterior
from robustscope.pipeline import run

ROOT = Path(__file__).resolve().parents[1]
QUANTITIES = ("gamma1", "share_competence", "share_model", "share_task", "share_residual")


def measure(spec: str, output: Path) -> dict:
    start = time.perf_counter()
    summary = run(ROOT / "data" / "multi-prompt-eval", output, spec=spec, accept_failed=True, progress=False)
    wall = time.perf_counter() - start
    trace = load_posterior(output / "posterior.nc")
    posterior = trace["posterior"].to_dataset()
    sampling = summary["timings"]["sampling_seconds"]
    ess = {name: float(az.ess(posterior[name]).values) for name in QUANTITIES}
    return {
        "spec": spec,
        "wall_seconds": wall,
        "compile_seconds": summary["timings"].get("compile_seconds"),
        "sampling_seconds": sampling,
        "fit_seconds": summary["timings"].get("total_seconds"),
        "ess_per_second": {name: value / sampling for name, value in ess.items()},
        "ess": ess,
        "diagnostics_passed": summary["diagnostics"]["passed"],
        "r_hat_max": summary["diagnostics"]["r_hat_max"],
        "ess_bulk_min": summary["diagnostics"]["ess_bulk_min"],
        "divergences": summary["diagnostics"]["divergences"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", action="append", help="specification to time (repeatable); default: location-scale")
    parser.add_argument("--output", help="folder for the run outputs (default: a temporary folder)")
    args = parser.parse_args()
    specs = args.spec or ["location-scale"]
    base = Path(args.output) if args.output else Path(tempfile.mkdtemp(prefix="robustscope-bench-"))
    results = [measure(spec, base / spec) for spec in specs]
    print(f"cores: {os.cpu_count()}")
    print("| spec | wall (s) | compile (s) | sampling (s) | ESS/s gamma1 | ESS/s competence share | ESS/s model share | passed |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        e = r["ess_per_second"]
        print(
            f"| {r['spec']} | {r['wall_seconds']:.0f} | {r['compile_seconds']:.0f} | {r['sampling_seconds']:.0f} | "
            f"{e['gamma1']:.1f} | {e['share_competence']:.1f} | {e['share_model']:.1f} | {r['diagnostics_passed']} |"
        )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
