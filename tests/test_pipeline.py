"""The main job end to end on a real two-task subset of the shipped data, and the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from robustscope.cli import build_parser, main
from robustscope.fit import load_posterior
from robustscope.pipeline import run

TASKS = ["snarks", "navigate"]


@pytest.fixture(scope="module")
def run_output(tmp_path_factory, multi_prompt_dir):
    output = tmp_path_factory.mktemp("run")
    summary = run(multi_prompt_dir, output, tasks=TASKS, chains=2, draws=200, tune=300, seed=3, accept_failed=True, progress=False)
    return output, summary


@pytest.mark.slow
def test_run_writes_every_output(run_output):
    output, _ = run_output
    for name in ("tensor.nc", "tensor.manifest.json", "posterior.nc", "report.html", "report.md", "summary.json"):
        assert (output / name).is_file(), name
    assert (output / "figures" / "competence_robustness.png").is_file()
    assert not list(output.glob("*.tmp"))


@pytest.mark.slow
def test_summary_has_required_fields(run_output):
    output, _ = run_output
    summary = json.loads((output / "summary.json").read_text())
    assert summary["dataset"] == "multi-prompt-eval"
    assert summary["counts"]["tasks"] == 2
    assert summary["counts"]["models"] == 11
    for key in ("r_hat_max", "ess_bulk_min", "ess_tail_min", "divergences", "bfmi_min", "passed"):
        assert key in summary["diagnostics"]
    for component in ("competence", "model", "task", "residual"):
        entry = summary["variance_shares"][component]
        assert 0.0 <= entry["lower"] <= entry["mean"] <= entry["upper"] <= 1.0
    assert set(summary["competence_effect"]) == {"mean", "lower", "upper"}
    for key in ("ols_r2", "ols_slope", "spearman_rho"):
        assert key in summary["descriptive"]
    assert summary["counts"]["dropped"]


@pytest.mark.slow
def test_report_embeds_images(run_output):
    output, summary = run_output
    html = (output / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4
    assert "Diagnostics" in html
    if not summary["diagnostics"]["passed"]:
        assert "FIT FAILED DIAGNOSTICS" in html


@pytest.mark.slow
def test_report_states_bayesian_r2(run_output):
    output, _ = run_output
    summary = json.loads((output / "summary.json").read_text())
    r2 = summary["bayes_r2"]
    residual = summary["variance_shares"]["residual"]
    assert r2["mean"] == pytest.approx(1.0 - residual["mean"])
    expected = f"Bayesian R^2 of the spread submodel: {r2['mean']:.3f} [{r2['lower']:.3f}, {r2['upper']:.3f}]"
    assert expected in (output / "report.md").read_text()


@pytest.mark.slow
def test_posterior_records_provenance(run_output):
    output, _ = run_output
    trace = load_posterior(output / "posterior.nc")
    for key in ("tensor_hash", "spec", "seed", "versions", "timings"):
        assert key in trace.attrs
    assert "log_likelihood" in trace.children
    assert trace["log_likelihood"]["n_correct"].sizes["pair"] == 22


@pytest.mark.slow
def test_report_command_rewrites_report(run_output, tmp_path):
    output, _ = run_output
    status = main(["-q", "report", str(output / "posterior.nc"), "-o", str(tmp_path), "--tensor", str(output / "tensor.nc"), "--accept-failed"])
    assert status == 0
    assert (tmp_path / "report.md").is_file()


def test_every_command_has_help():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"ingest", "fit", "report", "run", "add"} <= set(commands)
    for name, sub in commands.items():
        text = sub.format_help()
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{name} {action.option_strings} has no help"
        assert "usage" in text


def test_cli_ingest_error_exits_nonzero(tmp_path):
    status = main(["-q", "ingest", str(tmp_path / "missing"), "-o", str(tmp_path / "t.nc")])
    assert status == 2


def test_cli_runs_as_module(tmp_path):
    result = subprocess.run([sys.executable, "-m", "robustscope.cli", "formats"], capture_output=True, text=True, check=True)
    assert "multi-prompt" in result.stdout
