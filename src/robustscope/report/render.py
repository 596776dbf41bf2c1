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
from ..specs import ModelSpec, load_spec
from ..fit import pair_table
from ..metrics.descriptive import pair_metrics
from ..metrics.regression import all_measures
from ..models import family_module
from ..prior import plot_prior_predictive, prior_predictive
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


def _family(trace: xr.DataTree) -> str:
    return str(trace.attrs.get("family", "location-scale"))


def _family_figures(trace: xr.DataTree, summary: dict[str, Any], checks: pd.DataFrame) -> list[tuple[str, str, bytes]]:
    """Return the figures of a fit of a family other than location-scale.

    The family module may provide ``report_figures(trace)``, a list of
    (file name, caption, figure); the variance shares (when the fit has
    them) and the trace plots of its key parameters follow.
    """
    module = family_module(_family(trace))
    posterior = trace["posterior"].to_dataset()
    figures = [(name, caption, _png(fig)) for name, caption, fig in getattr(module, "report_figures", lambda _: [])(trace)]
    if "share_competence" in posterior:
        figures.append(
            (
                "variance_shares.png",
                f"Shares of the finite-population variance of {summary['quantity']} explained by competence, model identity, task "
                "identity and the residual, with 89% intervals. The four shares sum to one in every draw.",
                _png(plots.variance_shares({"fit": decompose.share_table(posterior)})),
            )
        )
    worst = [str(checks.set_index("check").loc["r_hat_max", "detail"])] + list(getattr(module, "KEY_PARAMETERS", ()))[:4]
    names = [n for n in dict.fromkeys(n for n in worst if n) if n in posterior]
    figures.append(
        (
            "traces.png",
            "Trace and rank plots of the parameter with the worst R-hat and of key parameters; overlapping chains and flat rank "
            "histograms indicate convergence.",
            _png(plots.worst_traces(trace, names)),
        )
    )
    return figures


def _figures(trace: xr.DataTree, tensor: xr.Dataset | None, summary: dict[str, Any], checks: pd.DataFrame) -> list[tuple[str, str, bytes]]:
    """Return (file name, caption, PNG bytes) for every figure of the report; ``checks`` is the table of :func:`check_fit`."""
    if _family(trace) != "location-scale":
        return _family_figures(trace, summary, checks)
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
    prior_check = summary.get("prior_predictive_result")
    if prior_check is not None:
        figures.append(
            (
                "prior_predictive.png",
                f"Prior predictive check: cell accuracies (left) and each pair's SD of accuracy across perturbations (right) in "
                f"{prior_check['datasets']} tensors simulated from the priors at the size of the data (grey), against the observed "
                "values (red outline). Plausible priors put most mass strictly between 0 and 1 and cover the observed spreads.",
                _png(plot_prior_predictive(prior_check, str(summary.get("model_spec") or ""))),
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
    tables: dict[str, pd.DataFrame] = {"diagnostics": checks}
    if "share_competence" in posterior:
        tables["shares"] = decompose.share_table(posterior)
    module = family_module(_family(trace))
    for name, table in getattr(module, "report_tables", lambda _: {})(trace).items():
        tables[name] = table
    if tensor is not None and "n_correct" in tensor and _family(trace) == "location-scale":
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
    if summary.get("family", "location-scale") != "location-scale":
        return list(summary.get("findings", []))
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
    if summary.get("bayes_r2"):
        lines.append(
            f"Bayesian R^2 of the spread submodel: {_interval(summary['bayes_r2'])}. It is one minus the residual share, "
            "the part of the variance of log spread that competence, model and task explain together."
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
    prior = summary.get("prior_predictive")
    if prior:
        lines.append(
            f"Prior predictive check: {prior['prior_share_at_0_or_1']:.0%} of simulated cell accuracies lie within 0.02 of 0 or 1 "
            f"(observed: {prior['observed_share_at_0_or_1']:.0%}), and {prior['observed_spread_inside_prior_90']:.0%} of the observed "
            "spreads lie inside the central 90% of the simulated ones."
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
    if "shares" in tables:
        out += [f"## Variance shares of {summary.get('quantity', 'log spread')}", "", tables["shares"].round(3).to_markdown(), ""]
    for name, table in tables.items():
        if name not in ("shares", "descriptive", "diagnostics"):
            out += [f"## {name}", "", table.round(3).to_markdown(), ""]
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
    if "shares" in tables:
        parts.append(f"<h2>Variance shares of {html.escape(str(summary.get('quantity', 'log spread')))}</h2>" + tables["shares"].round(3).to_html())
    for name, table in tables.items():
        if name not in ("shares", "descriptive", "diagnostics"):
            parts.append(f"<h2>{html.escape(name)}</h2>" + table.round(3).to_html())
    if "descriptive" in tables:
        columns = ["ols_r2", "ols_slope", "spearman_rho", "n_points", "n_excluded"]
        parts.append("<h2>Published-style descriptive regressions</h2>" + tables["descriptive"][columns].round(3).to_html())
    parts.append("<h2>Diagnostics</h2>" + tables["diagnostics"].to_html(index=False))
    provenance = _provenance_markdown(summary)[2:]
    parts.append("<h2>Reproducibility</h2><ul>" + "".join(f"<li>{html.escape(line[2:])}</li>" for line in provenance) + "</ul>")
    parts.append(f"<p><small>robustscope {__version__}</small></p></body></html>")
    return "\n".join(parts)


# Tensors simulated from the priors for the prior predictive check of a report.
PRIOR_DATASETS = 10


def write_report(trace: xr.DataTree, output_dir: str | Path, tensor: xr.Dataset | None = None) -> dict[str, Any]:
    """Write ``report.html``, ``report.md``, ``summary.json`` and ``figures/`` into ``output_dir``.

    Every file is written atomically. Returns the summary dictionary.
    """
    output_dir = Path(output_dir)
    # The checks are the slowest step on large fits, so they run once and feed the summary, tables and figures.
    checks = check_fit(trace)
    summary = build_summary(trace, tensor, checks=checks)
    summary["robustscope_version"] = __version__
    if tensor is not None and "n_correct" in tensor and _family(trace) == "location-scale":
        spec = ModelSpec.from_dict(json.loads(trace.attrs["spec"])) if trace.attrs.get("spec") else load_spec("location-scale")
        result = prior_predictive(spec, tensor, datasets=PRIOR_DATASETS, seed=0)
        summary["prior_predictive_result"] = result
        summary["prior_predictive"] = {
            "datasets": result["datasets"],
            "prior_share_at_0_or_1": float(result["table"].loc["prior accuracy", "share_at_0_or_1"]),
            "observed_share_at_0_or_1": float(result["table"].loc["observed accuracy", "share_at_0_or_1"]),
            "observed_spread_inside_prior_90": result["observed_spread_inside_prior_90"],
            "table": {
                row: {key: (None if pd.isna(value) else float(value)) for key, value in values.items()}
                for row, values in result["table"].round(4).to_dict(orient="index").items()
            },
        }
    tables = _tables(trace, tensor, checks)
    figures = _figures(trace, tensor, summary, checks)
    for name, _, data in figures:
        write_bytes(output_dir / "figures" / name, data)
    write_text(output_dir / "report.md", _markdown(summary, tables, figures))
    write_text(output_dir / "report.html", _html(summary, tables, figures))
    summary.pop("prior_predictive_result", None)
    write_json(output_dir / "summary.json", summary)
    if not summary["diagnostics"]["passed"]:
        log.error("fit failed diagnostics: %s", ", ".join(summary["diagnostics"]["failed_checks"]))
    log.info("wrote report to %s", output_dir)
    return summary


__all__ = ["write_report"]
