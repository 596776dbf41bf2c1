"""Rebuild the example reports committed under reports/ from the shipped data.

Run from the repository root after `make report` (which writes
reports/multi-prompt-eval/):

    .venv/bin/python reports/build_examples.py [--only NAME ...]

Steps (each is skipped when its output exists, so a rerun resumes):

* ``helm-classic``: ingest the HELM classic collection (binary-metric
  scenarios), fit ``location-scale-few-runs`` (for the comparison) and
  ``perturbation-factors`` (plain against worst-case runs).
* ``heldout``: refit the multi-prompt data without one model and check that
  model against the fit of the others (``check/``).
* ``compare``: the multi-prompt fit against the HELM classic fit.
* ``nested``: the four nested alternatives on the multi-prompt data, ranked
  by PSIS-LOO (reuses the main job's fit for the full model).
* ``spline``: the multi-prompt data with the spline competence term.
* ``factors``: the perturbation-factor model on the multi-prompt data.
* ``promptbench``: the PromptBench accuracy datasets whose example counts the
  reported percentages pin down (see ``PROMPTBENCH_EXAMPLES``), fitted with
  ``location-scale-few-groups`` (the default model with non-centred spread
  effects, for 4 models and 6 tasks).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import robustscope as rs
from robustscope import tensor as _tensor
from robustscope.check import check_new, write_check_report
from robustscope.fit import fit
from robustscope.pipeline import report
from robustscope.report.compare import compare
from robustscope.sweep import sweep

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "reports"
MAIN = REPORTS / "multi-prompt-eval"
HELD_OUT_MODEL = "vicuna-13b"
HELD_OUT_SEED = 20260205
# PromptBench gives accuracies to 0.01% without example counts. For these
# datasets every reported accuracy is a whole number of correct answers out
# of this many examples (the smallest such count); the other accuracy
# datasets fit no single count and are left out of the binomial fit.
PROMPTBENCH_EXAMPLES = {"cola": 1000, "mnli": 1000, "qnli": 1000, "qqp": 1000, "math": 160, "wnli": 71}


def helm_classic() -> Path:
    out = REPORTS / "helm-classic"
    tensor_path = out / "tensor.nc"
    if not tensor_path.exists():
        rs.ingest(ROOT / "data" / "helm-classic", "every-eval-ever", output=tensor_path, metric_kind="binary", dataset="helm-classic")
    posterior = out / "posterior.nc"
    if not posterior.exists():
        fit(tensor_path, "location-scale-few-runs", output=posterior, progress=False)
    report(posterior, out, tensor=tensor_path)
    factors_out = REPORTS / "helm-classic-factors"
    if not (factors_out / "posterior.nc").exists():
        fit(tensor_path, "perturbation-factors", output=factors_out / "posterior.nc", progress=False)
    report(factors_out / "posterior.nc", factors_out, tensor=tensor_path)
    return posterior


def heldout() -> None:
    out = REPORTS / "multi-prompt-heldout"
    full = _tensor.load(MAIN / "tensor.nc")
    others = [m for m in full["model"].values.tolist() if m != HELD_OUT_MODEL]
    tensor_path = out / "tensor.nc"
    if not tensor_path.exists():
        without = full.sel(model=others)
        without.attrs["dataset"] = f"multi-prompt-eval without {HELD_OUT_MODEL}"
        _tensor.save(without, tensor_path)
    posterior = out / "posterior.nc"
    if not posterior.exists():
        # NOTE: before the sampler started from data-based values, one of the
        # four chains of this fit stalled with the specification's seed (over
        # 30 minutes of one core). It now finishes with that seed too, at 15
        # leapfrog steps per draw in every chain. The committed report was
        # built with the next seed, so this keeps it.
        fit(tensor_path, "location-scale", output=posterior, seed=HELD_OUT_SEED, progress=False)
    report(posterior, out, tensor=tensor_path)
    new = full.sel(model=[HELD_OUT_MODEL])
    new.attrs["dataset"] = f"multi-prompt-eval, {HELD_OUT_MODEL} only"
    table = check_new(posterior, new)
    write_check_report(table, out / "check", fit=posterior)


def comparison() -> None:
    compare(
        [MAIN / "posterior.nc", REPORTS / "helm-classic" / "posterior.nc"],
        REPORTS / "compare-multi-prompt-vs-helm-classic",
        labels=["multi-prompt-eval (location-scale)", "helm-classic (location-scale-few-runs)"],
    )


def nested() -> None:
    out = REPORTS / "multi-prompt-nested"
    fits = out / "fits"
    fits.mkdir(parents=True, exist_ok=True)
    base = fits / "multi-prompt-eval__location-scale.nc"
    if not base.exists():
        shutil.copyfile(MAIN / "posterior.nc", base)
    # With the default 1000 + 800 iterations the model-only and neither fits
    # miss the tail-ESS threshold (353 and 234), so the sweep samples longer.
    # NOTE: before the sampler started from data-based values, one chain of
    # the neither fit stalled with the specification's seed, as in the
    # held-out fit. The committed comparison was built with the next seed, so
    # this keeps it.
    sweep([MAIN / "tensor.nc"], ["location-scale"], out, nested=True, tune=1500, draws=1500, seed=HELD_OUT_SEED)


def spline() -> None:
    out = REPORTS / "multi-prompt-spline"
    posterior = out / "posterior.nc"
    if not posterior.exists():
        fit(MAIN / "tensor.nc", "location-scale-spline", output=posterior)
    report(posterior, out, tensor=MAIN / "tensor.nc")


def factors() -> None:
    out = REPORTS / "multi-prompt-factors"
    posterior = out / "posterior.nc"
    if not posterior.exists():
        fit(MAIN / "tensor.nc", "perturbation-factors", output=posterior)
    report(posterior, out, tensor=MAIN / "tensor.nc")


def promptbench() -> None:
    out = REPORTS / "promptbench"
    tensor_path = out / "tensor.nc"
    if not tensor_path.exists():
        rs.ingest(
            ROOT / "data" / "promptbench-adv-prompts",
            "promptbench",
            output=tensor_path,
            n_examples=PROMPTBENCH_EXAMPLES,
            tasks=sorted(PROMPTBENCH_EXAMPLES),
        )
    posterior = out / "posterior.nc"
    if not posterior.exists():
        # With 4 models and 6 tasks the centred default diverges in the spread
        # effects, so this specification non-centres them.
        fit(tensor_path, "location-scale-few-groups", output=posterior, progress=False)
    report(posterior, out, tensor=tensor_path)


STEPS = {"helm-classic": helm_classic, "heldout": heldout, "compare": comparison, "nested": nested, "spline": spline, "factors": factors, "promptbench": promptbench}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(STEPS), help="run only these steps")
    args = parser.parse_args(argv)
    if not (MAIN / "posterior.nc").exists():
        print("reports/multi-prompt-eval/posterior.nc is missing: run `make report` first", file=sys.stderr)
        return 2
    for name in args.only or list(STEPS):
        print(f"== {name}", flush=True)
        STEPS[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
