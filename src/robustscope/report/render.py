"""Write the report of one fit: HTML (self-contained), Markdown, summary.json and figures."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import xarray as xr

from .. import __version__, decompose
from .._io import write_bytes, write_json, write_text
from .._logging import get_logger
from ..diagnostics import check_fit
from ..fit import pair_table
from ..metrics.descriptive import pair_metrics
from ..metrics.regression import all_measures
from . import plots
from .summary import build_summary

log = get_logger("report")


def _png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def _interval(entry: dict[str, float] | None) -> str:
    if not entry:
        return "n/a"
    return f"{entry['mean']:.3f} [{entry['lower']:.3f}, {entry['upper']:.3f}]"


def _figures(trace: xr.DataTree, tensor: xr.Dataset | None, summary: dict[str, Any], checks: pd.DataFrame) -> list[tuple[str, str, bytes]]:
    """Return (file name, caption, PNG bytes) for every figure of the report; ``checks`` is the table of :func:`check_fit`."""
    posterior = trace["posterior"].to_dataset()
    pairs = pair_table(trace)
    descriptive = None
    if tensor is not None and "n_correct" in tensor:
        descriptive = summary.get("descriptive")
    density_note = (
        f" With more than {plots.DENSITY_POINTS:,} pairs each panel shows the number of pairs per hexagonal bin (log colour scale) "
        "instead of one point per pair."
        if len(pairs) > plots.DENSITY_POINTS
        else ""
    )
    ppc_note = (
        f" {plots.MAX_PPC_PAIRS:,} of the {len(pairs):,} pairs are drawn, evenly spaced in the sorted order."
        if len(pairs) > plots.MAX_PPC_PAIRS
        else ""
    )
    figures = [
        (
            "competence_robustness.png",
            "Left: posterior mean competence (logit) and spread (logit units, log axis) of each (model, task) pair, with the "
            "posterior median of exp(gamma0 + gamma1 (mu - c0)) and its 89% band. Right: the observed mean accuracy and standard "
            "deviation of accuracy across perturbations, with the ordinary least squares line of the published style of analysis."
            + density_note,
            _png(plots.competence_robustness(trace, pairs, descriptive)),
        ),
        (
            "variance_shares.png",
            "Shares of the finite-population variance of log sigma explained by competence, model identity, task identity and the "
            "residual, with 89% intervals. The four shares sum to one in every draw.",
            _png(plots.variance_shares({"fit": decompose.share_table(posterior)})),
        ),
    ]
    if "u_model" in posterior:
        figures.append(
            (
                "model_effects.png",
                "Model identity effects u[m] on log sigma after competence and task are accounted for (89% intervals). Negative "
                "values mean a model is more robust than its competence predicts.",
                _png(plots.model_effects(decompose.effect_table(posterior, "u_model", "model"))),
            )
        )
    figures.append(
        (
            "spread_ppc.png",
            "Posterior predictive check: observed standard deviation of accuracy across perturbations per pair against its 89% "
            "posterior predictive interval; red points fall outside." + ppc_note,
            _png(plots.spread_ppc(trace)),
        )
    )
    worst = [str(checks.set_index("check").loc["r_hat_max", "detail"])] + ["gamma1", "sd_u", "sd_e", "gamma0"]
    names = list(dict.fromkeys(n for n in worst if n))
    figures.append(
        (
            "traces.png",
            "Trace and rank plots of the parameter with the worst R-hat and of the key scale parameters; overlapping chains and "
            "flat rank histograms indicate convergence.",
            _png(plots.worst_traces(trace, names)),
        )
    )
    return figures


def _tables(trace: xr.DataTree, tensor: xr.Dataset | None, checks: pd.DataFrame) -> dict[str, pd.DataFrame]:
    posterior = trace["posterior"].to_dataset()
    tables = {"diagnostics": checks, "shares": decompose.share_table(posterior)}
    if tensor is not None and "n_correct" in tensor:
        tables["descriptive"] = all_measures(pair_metrics(tensor))
    return tables


def _status_line(summary: dict[str, Any]) -> str:
    diagnostics = summary["diagnostics"]
    if diagnostics["passed"]:
        extra = f" Warnings: {', '.join(diagnostics['warnings'])}." if diagnostics["warnings"] else ""
        return f"Diagnostics passed: R-hat, bulk and tail ESS, divergences and BFMI all meet their thresholds.{extra}"
    return (
        "FIT FAILED DIAGNOSTICS: "
        + ", ".join(diagnostics["failed_checks"])
        + ". The estimates below are not reliable; rerun with more tuning or draws or change the specification."
    )


def _findings(summary: dict[str, Any]) -> list[str]:
    shares = summary["variance_shares"]
    lines = []
    effect = summary.get("competence_effect")
    if effect:
        if effect["upper"] < 0:
            direction = "narrows"
        elif effect["lower"] > 0:
            direction = "widens"
        else:
            direction = "has no clear effect on"
        lines.append(
            f"Competence {direction} the spread across perturbations: gamma1 = {_interval(effect)} "
            "(change in log sigma per logit of competence; 89% interval)."
        )
    lines.append(
        "Shares of the variance of log spread: competence "
        f"{_interval(shares['competence'])}, model identity {_interval(shares['model'])}, task identity "
        f"{_interval(shares['task'])}, residual {_interval(shares['residual'])}."
    )
    descriptive = summary.get("descriptive")
    if descriptive:
        reference = summary["published_reference"]
        lines.append(
            f"Published-style OLS of {descriptive['robustness']} on mean accuracy over {descriptive['n_points']} (model, task) "
            f"points: R^2 = {descriptive['ols_r2']:.3f}, slope = {descriptive['ols_slope']:.3f}, Spearman rho = "
            f"{descriptive['spearman_rho']:.3f}. The published analysis (output consistency on accuracy, 54 points) reports "
            f"R^2 = {reference['ols_r2']} and slope {reference['ols_slope']}; OLS treats each point as exact and independent and "
            "cannot separate model identity from task."
        )
    if summary.get("caveat"):
        lines.append(f"Caveat from the data: {summary['caveat']}")
    return lines


def _markdown(summary: dict[str, Any], tables: dict[str, pd.DataFrame], figures: list[tuple[str, str, bytes]]) -> str:
    counts = summary["counts"]
    out = [f"# Robustness report: {summary['dataset']}", "", f"**{_status_line(summary)}**", ""]
    out += ["## Findings", ""] + [f"- {line}" for line in _findings(summary)] + [""]
    out += [
        "## Data",
        "",
        f"- {counts['models']} models, {counts['tasks']} tasks, {counts['pairs']} (model, task) pairs, {counts['cells']} observed cells.",
        f"- Rows read {counts['rows_read']}, kept {counts['rows_kept']}, dropped {counts['rows_dropped']}.",
    ]
    for reason, number in (counts.get("dropped") or {}).items():
        out.append(f"- Dropped {number} rows: {reason}.")
    if counts.get("excluded_pairs"):
        out.append(f"- Pairs with fewer than two perturbations, left out of the model: {len(counts['excluded_pairs'])}.")
    out.append("")
    out += ["## Figures", ""]
    for name, caption, _ in figures:
        out += [f"![{caption}](figures/{name})", "", f"*{caption}*", ""]
    out += ["## Variance shares of log spread", "", tables["shares"].round(3).to_markdown(), ""]
    if "descriptive" in tables:
        columns = ["ols_r2", "ols_slope", "spearman_rho", "n_points", "n_excluded"]
        out += ["## Published-style descriptive regressions", "", tables["descriptive"][columns].round(3).to_markdown(), ""]
    out += ["## Diagnostics", "", tables["diagnostics"].to_markdown(index=False), ""]
    out += _provenance_markdown(summary)
    return "\n".join(out) + "\n"


def _provenance_markdown(summary: dict[str, Any]) -> list[str]:
    sampler = summary["sampler"]
    timings = summary["timings"]
    versions = ", ".join(f"{k} {v}" for k, v in summary["versions"].items())
    return [
        "## Reproducibility",
        "",
        f"- Model specification: {summary['model_spec']}; sampler {sampler['name']}, {sampler['chains']} chains x "
        f"({sampler['tune']} tuning + {sampler['draws']} draws), seed {sampler['seed']}.",
        f"- Wall time: {timings.get('total_seconds', 0):.0f} s (compile {timings.get('compile_seconds', 0):.0f} s, sampling "
        f"{timings.get('sampling_seconds', 0):.0f} s).",
        f"- Tensor hash: `{summary['tensor_hash']}`.",
        f"- Versions: {versions}.",
    ]


def _html(summary: dict[str, Any], tables: dict[str, pd.DataFrame], figures: list[tuple[str, str, bytes]]) -> str:
    failed = not summary["diagnostics"]["passed"]
    banner_class = "failed" if failed else "passed"
    counts = summary["counts"]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Robustness report: {html.escape(str(summary['dataset']))}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "th{background:#f3f3f3}.passed{background:#e6f4ea;border:1px solid #2e7d32;padding:0.6em}"
        ".failed{background:#fdecea;border:2px solid #c62828;padding:0.8em;font-weight:bold}"
        "figure{margin:1.5em 0}figcaption{font-size:0.85em;color:#555}img{max-width:100%}"
        "@media print{figure{page-break-inside:avoid}}</style></head><body>",
        f"<h1>Robustness report: {html.escape(str(summary['dataset']))}</h1>",
        f"<p class='{banner_class}'>{html.escape(_status_line(summary))}</p>",
        "<h2>Findings</h2><ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in _findings(summary)) + "</ul>",
        "<h2>Data</h2><ul>",
        f"<li>{counts['models']} models, {counts['tasks']} tasks, {counts['pairs']} (model, task) pairs, {counts['cells']} observed cells.</li>",
        f"<li>Rows read {counts['rows_read']}, kept {counts['rows_kept']}, dropped {counts['rows_dropped']}.</li>",
    ]
    for reason, number in (counts.get("dropped") or {}).items():
        parts.append(f"<li>Dropped {number} rows: {html.escape(str(reason))}.</li>")
    parts.append("</ul><h2>Figures</h2>")
    for name, caption, data in figures:
        encoded = base64.b64encode(data).decode("ascii")
        parts.append(
            f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{encoded}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    parts.append("<h2>Variance shares of log spread</h2>" + tables["shares"].round(3).to_html())
    if "descriptive" in tables:
        columns = ["ols_r2", "ols_slope", "spearman_rho", "n_points", "n_excluded"]
        parts.append("<h2>Published-style descriptive regressions</h2>" + tables["descriptive"][columns].round(3).to_html())
    parts.append("<h2>Diagnostics</h2>" + tables["diagnostics"].to_html(index=False))
    provenance = _provenance_markdown(summary)[2:]
    parts.append("<h2>Reproducibility</h2><ul>" + "".join(f"<li>{html.escape(line[2:])}</li>" for line in provenance) + "</ul>")
    parts.append(f"<p><small>robustscope {__version__}</small></p></body></html>")
    return "\n".join(parts)


def write_report(trace: xr.DataTree, output_dir: str | Path, tensor: xr.Dataset | None = None) -> dict[str, Any]:
    """Write ``report.html``, ``report.md``, ``summary.json`` and ``figures/`` into ``output_dir``.

    Every file is written atomically. Returns the summary dictionary.
    """
    output_dir = Path(output_dir)
    # The checks are the slowest step on large fits, so they run once and feed the summary, tables and figures.
    checks = check_fit(trace)
    summary = build_summary(trace, tensor, checks=checks)
    summary["robustscope_version"] = __version__
    tables = _tables(trace, tensor, checks)
    figures = _figures(trace, tensor, summary, checks)
    for name, _, data in figures:
        write_bytes(output_dir / "figures" / name, data)
    write_text(output_dir / "report.md", _markdown(summary, tables, figures))
    write_text(output_dir / "report.html", _html(summary, tables, figures))
    write_json(output_dir / "summary.json", summary)
    if not summary["diagnostics"]["passed"]:
        log.error("fit failed diagnostics: %s", ", ".join(summary["diagnostics"]["failed_checks"]))
    log.info("wrote report to %s", output_dir)
    return summary


__all__ = ["write_report"]
