"""Time the main job with the fused likelihood kernel against the elementwise graph, and compare the posteriors.

Runs the whole main job (``robustscope.pipeline.run`` on the shipped
multi-prompt data: ingest, fit with ``models/location-scale.yaml``, checks
and report) once per likelihood form and repeat, each in a fresh Python
process, alternating the order. The elementwise form is
``robustscope.models.quadrature.FUSED_KERNEL = False``: the PyTensor graph
of Newton steps and Gauss-Hermite nodes that NUTS differentiates through.
The fused form is the default Numba kernel that returns the same value and
its exact gradient in one pass.

Besides wall time per stage, it compares the posteriors of gamma1 and the
four variance shares. For each it reports z, the difference of the
posterior means divided by their combined Monte Carlo standard error
(``|z| < 3`` is agreement within Monte Carlo error), and the ratio of the
posterior standard deviations. Writes
``kernel_main_job.md`` and ``kernel_main_job.json`` to ``--output-dir``.

Usage::

    python benchmarks/bench_kernel_main_job.py [--repeats 1] [--output-dir docs/benchmarks]

Run it on an otherwise idle machine: each elementwise run takes several minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _common

FORMS = ("elementwise", "fused")
QUANTITIES = _common.ESS_QUANTITIES


def child(form: str, output: Path, tasks: list[str] | None) -> None:
    """Run the main job with one likelihood form and print its timings and posterior summaries as JSON."""
    import arviz as az

    from robustscope.fit import load_posterior
    from robustscope.models import quadrature
    from robustscope.pipeline import run

    quadrature.FUSED_KERNEL = form == "fused"
    start = time.perf_counter()
    summary = run(_common.ROOT / "data" / "multi-prompt-eval", output, tasks=tasks, accept_failed=True, progress=False)
    wall = time.perf_counter() - start
    posterior = load_posterior(output / "posterior.nc")["posterior"].to_dataset()
    quantities = {}
    for name in QUANTITIES:
        values = posterior[name]
        quantities[name] = {
            "mean": float(values.mean()),
            "sd": float(values.std()),
            "mcse_mean": float(az.mcse(values).values),
            "ess_bulk": float(az.ess(values).values),
        }
    timings = summary["timings"]
    diagnostics = summary["diagnostics"]
    print(
        json.dumps(
            {
                "form": form,
                "job_seconds": wall,
                "compile_seconds": timings.get("compile_seconds"),
                "sampling_seconds": timings.get("sampling_seconds"),
                "loglik_seconds": timings.get("loglik_seconds"),
                "fit_seconds": timings.get("total_seconds"),
                "passed": diagnostics["passed"],
                "r_hat_max": diagnostics["r_hat_max"],
                "ess_bulk_min": diagnostics["ess_bulk_min"],
                "ess_tail_min": diagnostics["ess_tail_min"],
                "divergences": diagnostics["divergences"],
                "quantities": quantities,
            }
        )
    )


def agreement(elementwise: dict, fused: dict) -> dict[str, dict[str, float]]:
    """Return, per quantity, the z score of the difference of posterior means and the ratio of posterior SDs."""
    table = {}
    for name in QUANTITIES:
        left = elementwise["quantities"][name]
        right = fused["quantities"][name]
        combined = (left["mcse_mean"] ** 2 + right["mcse_mean"] ** 2) ** 0.5
        table[name] = {
            "mean_elementwise": left["mean"],
            "mean_fused": right["mean"],
            "z": (right["mean"] - left["mean"]) / combined,
            "sd_ratio": right["sd"] / left["sd"],
        }
    return table


def render(runs: list[dict], info: dict) -> str:
    """Return the Markdown page for the runs."""
    lines = [
        "# The main job: fused likelihood kernel against the elementwise graph",
        "",
        f"Script: `python benchmarks/bench_kernel_main_job.py --repeats {len(runs) // 2}`. Each row is one whole main job",
        "(ingest, fit with `models/location-scale.yaml`, 4 chains x (1000 tuning + 800 draws), checks and report) in a",
        "fresh process; the two forms alternate.",
        "",
        *_common.machine_lines(info),
        "",
        "| likelihood | process | job (s) | compile (s) | sampling (s) | pointwise log likelihood (s) | max R-hat | min bulk / tail ESS | divergences | passed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        result = run["result"]
        if result is None:
            lines.append(f"| {run['form']} | {run['status']} | | | | | | | | |")
            continue
        lines.append(
            f"| {run['form']} | {run['wall_seconds']:.0f} s | {result['job_seconds']:.0f} | {_common.format_number(result['compile_seconds'])} | "
            f"{result['sampling_seconds']:.0f} | {_common.format_number(result['loglik_seconds'])} | {result['r_hat_max']:.3f} | "
            f"{result['ess_bulk_min']:.0f} / {result['ess_tail_min']:.0f} | {result['divergences']:.0f} | {result['passed']} |"
        )
    finished = {form: [run["result"] for run in runs if run["form"] == form and run["result"]] for form in FORMS}
    if all(finished[form] for form in FORMS):
        job = {form: statistics.median(result["job_seconds"] for result in finished[form]) for form in FORMS}
        sampling = {form: statistics.median(result["sampling_seconds"] for result in finished[form]) for form in FORMS}
        lines += [
            "",
            f"Median whole job: elementwise {job['elementwise']:.0f} s, fused {job['fused']:.0f} s, ratio "
            f"{job['elementwise'] / job['fused']:.2f}. Median sampling: elementwise {sampling['elementwise']:.0f} s, fused "
            f"{sampling['fused']:.0f} s, ratio {sampling['elementwise'] / sampling['fused']:.2f}.",
            "",
            "Posterior agreement (first run of each form): z is the difference of the posterior means over their combined",
            "Monte Carlo standard error.",
            "",
            "| quantity | mean, elementwise | mean, fused | z | SD ratio (fused / elementwise) |",
            "|---|---|---|---|---|",
        ]
        for name, row in agreement(finished["elementwise"][0], finished["fused"][0]).items():
            lines.append(f"| {name} | {row['mean_elementwise']:.4f} | {row['mean_fused']:.4f} | {row['z']:.2f} | {row['sd_ratio']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="runs of each likelihood form (default 1)")
    parser.add_argument("--cap-minutes", type=float, default=30.0, help="wall-time cap per run in minutes")
    parser.add_argument("--output-dir", type=Path, default=_common.DOCS_DIR, help="folder for kernel_main_job.md and .json")
    parser.add_argument("--tasks", help="comma-separated task names to fit instead of all 25 (a quick check that the script works; not a result)")
    parser.add_argument("--child", choices=FORMS, help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.run_dir, args.tasks.split(",") if args.tasks else None)
        return 0

    info = _common.machine_info()
    base = Path(tempfile.mkdtemp(prefix="robustscope-kernel-"))
    runs = []
    for repeat in range(args.repeats):
        order = FORMS if repeat % 2 == 0 else FORMS[::-1]
        for form in order:
            print(f"run {repeat + 1}/{args.repeats}: {form}", file=sys.stderr, flush=True)
            arguments = [str(Path(__file__).resolve()), "--child", form, "--run-dir", str(base / f"{form}-{repeat}")]
            if args.tasks:
                arguments += ["--tasks", args.tasks]
            outcome = _common.run_child(
                arguments,
                timeout=args.cap_minutes * 60,
            )
            runs.append({"form": form, **outcome})
    markdown = render(runs, info)
    print(markdown)
    _common.write_outputs(args.output_dir, "kernel_main_job", markdown, {"machine": info, "runs": runs})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
