"""The ``robustscope`` command line: a thin layer over the Python functions of the same names."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from . import __version__
from ._logging import LOGGER_NAME
from .errors import DiagnosticsFailed, RobustscopeError

EXIT_ERROR = 2
EXIT_DIAGNOSTICS = 3


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _key_values(items: list[str] | None, what: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise RobustscopeError(f"invalid {what} {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        result[key.strip()] = _parse_value(value)
    return result


def _loader_options(args: argparse.Namespace) -> dict[str, Any]:
    options = _key_values(args.option, "--option")
    if getattr(args, "include_invalid", False):
        options["include_invalid"] = True
    if getattr(args, "tasks", None):
        options["tasks"] = args.tasks
    if getattr(args, "map", None):
        options["mapping"] = {k: str(v) for k, v in _key_values(args.map, "--map").items()}
    if getattr(args, "factor", None):
        options["factors"] = args.factor
    if getattr(args, "dataset", None):
        options["dataset"] = args.dataset
    return options


def _add_loader_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", default="multi-prompt", help="loader name (see `robustscope formats`); default: multi-prompt")
    parser.add_argument("--include-invalid", action="store_true", help="multi-prompt: keep paraphrases the manual check marked invalid (default: drop them)")
    parser.add_argument("--tasks", nargs="+", metavar="TASK", help="read only these tasks")
    parser.add_argument("--dataset", help="name stored in the tensor and shown in reports (default: the loader's)")
    parser.add_argument("--map", action="append", metavar="ROLE=COLUMN", help="long-table: column for a role (model, task, perturbation, example, score, ...); repeatable")
    parser.add_argument("--factor", action="append", metavar="COLUMN", help="long-table: a perturbation factor column; repeatable")
    parser.add_argument("--option", action="append", metavar="KEY=VALUE", help="any other loader keyword argument; VALUE is read as JSON when it parses; repeatable")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text}")
    return value


def _add_sampler_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spec", default="location-scale", help="model specification: a name in models/ or a YAML path (default: location-scale)")
    parser.add_argument("--chains", type=_positive_int, help="number of chains (default: the specification's, 4)")
    parser.add_argument("--draws", type=_positive_int, help="draws per chain after tuning (default: the specification's)")
    parser.add_argument("--tune", type=_positive_int, help="tuning steps per chain (default: the specification's)")
    parser.add_argument("--seed", type=int, help="random seed of the sampler (default: the specification's)")
    parser.add_argument("--no-progress", action="store_true", help="hide the sampler's progress bar")
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="reuse fits stored in DIR, keyed by a hash of the tensor, specification, sampler settings and package versions (default: no cache)",
    )
    parser.add_argument("--no-cache", action="store_true", help="with --cache-dir: fit again and replace the stored fit")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``robustscope`` command."""
    parser = argparse.ArgumentParser(prog="robustscope", description="Bayesian analysis of LLM evaluation robustness.")
    parser.add_argument("--version", action="version", version=f"robustscope {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    commands = parser.add_subparsers(dest="command", required=True)

    ingest = commands.add_parser("ingest", help="read evaluation logs into a tensor (.nc) with its manifest (.manifest.json)")
    ingest.add_argument("source", nargs="+", help="file(s) or folder(s) in the loader's format")
    ingest.add_argument("-o", "--output", required=True, help="tensor file to write (NetCDF, e.g. tensor.nc)")
    _add_loader_arguments(ingest)

    fit = commands.add_parser("fit", help="fit a model specification to a tensor and write the posterior (.nc)")
    fit.add_argument("tensor", help="tensor file written by `robustscope ingest`")
    fit.add_argument("-o", "--output", required=True, help="posterior file to write (NetCDF DataTree)")
    fit.add_argument("--accept-failed", action="store_true", help="exit 0 even when the fit failed diagnostics (the posterior is written either way)")
    _add_sampler_arguments(fit)

    report = commands.add_parser("report", help="write the HTML and Markdown report, summary.json and figures of a posterior")
    report.add_argument("posterior", help="posterior file written by `robustscope fit`")
    report.add_argument("-o", "--output", required=True, help="folder to write the report into")
    report.add_argument("--tensor", help="tensor file, for the descriptive published-style statistics")
    report.add_argument("--accept-failed", action="store_true", help="exit 0 even when the fit failed diagnostics")

    run = commands.add_parser("run", help="ingest, fit and report in one step")
    run.add_argument("source", nargs="+", help="file(s) or folder(s) in the loader's format")
    run.add_argument("-o", "--output", required=True, help="folder for the tensor, posterior and report")
    run.add_argument("--accept-failed", action="store_true", help="exit 0 even when the fit failed diagnostics")
    _add_loader_arguments(run)
    _add_sampler_arguments(run)

    add = commands.add_parser("add", help="merge new logs into an existing tensor")
    add.add_argument("tensor", help="existing tensor file")
    add.add_argument("source", nargs="+", help="new logs in the loader's format")
    add.add_argument("-o", "--output", help="merged tensor file (default: replace TENSOR atomically)")
    add.add_argument("--policy", default="error", choices=["error", "first", "last", "mean"], help="what to do with conflicting duplicate cells (default: error)")
    _add_loader_arguments(add)

    compare = commands.add_parser("compare", help="compare two or more fits side by side (HTML, Markdown, JSON, figures)")
    compare.add_argument("fits", nargs="+", help="posterior files written by `robustscope fit` or `robustscope run`")
    compare.add_argument("-o", "--output", required=True, help="folder to write compare.html, compare.md, compare.json and figures/ into")
    compare.add_argument("--label", action="append", help="name of each fit in the report, in the order given (default: the file names); repeatable")
    compare.add_argument("--seed", type=int, default=0, help="seed for pairing the draws of independent fits (default: 0)")

    check = commands.add_parser("check", help="check whether new models or tasks are as robust as their competence predicts")
    check.add_argument("fit", help="posterior file of the fit to check against")
    check.add_argument("source", nargs="+", help="results of the new models or tasks, in the loader's format")
    check.add_argument("-o", "--output", required=True, help="folder to write check.html, check.md and check.json into")
    check.add_argument("--prob", type=float, default=0.89, help="mass of the central predictive interval; observations outside it are flagged (default: 0.89)")
    check.add_argument("--seed", type=int, default=0, help="seed of the predictive simulation (default: 0)")
    check.add_argument("--refit", action="store_true", help="also merge the new results into the fitted tensor, refit, and write a before-and-after comparison")
    check.add_argument("--tensor", help="with --refit: the tensor the fit was made from (default: tensor.nc beside the posterior)")
    _add_loader_arguments(check)

    sweep = commands.add_parser("sweep", help="fit several specifications to several tensors (resumable) and compare them with PSIS-LOO")
    sweep.add_argument("tensors", nargs="+", help="tensor files written by `robustscope ingest`")
    sweep.add_argument("-o", "--output", required=True, help="folder for fits/, fits.csv, loo_<tensor>.csv/.md and compare/")
    sweep.add_argument("--spec", dest="specs", action="append", help="a specification name or YAML path; repeatable (default: location-scale)")
    sweep.add_argument("--nested", action="store_true", help="expand each location-scale specification into its four nested alternatives (competence and model identity, either alone, neither)")
    sweep.add_argument("--no-compare", action="store_true", help="skip the side-by-side comparison report")
    for flag, text in (("--chains", "number of chains"), ("--draws", "draws per chain"), ("--tune", "tuning steps per chain"), ("--seed", "random seed")):
        sweep.add_argument(flag, type=_positive_int if flag != "--seed" else int, help=f"{text} (default: each specification's)")
    sweep.add_argument("--no-progress", action="store_true", help="hide the sampler's progress bar")

    commands.add_parser("formats", help="list the registered loaders")
    commands.add_parser("specs", help="list the model specifications found in models/")
    return parser


def _configure_logging(args: argparse.Namespace) -> None:
    from rich.logging import RichHandler

    level = logging.INFO
    if args.verbose:
        level = logging.DEBUG
    elif args.quiet:
        level = logging.WARNING
    handler = RichHandler(show_path=False, show_time=False, markup=False, rich_tracebacks=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers = [h for h in logger.handlers if isinstance(h, logging.NullHandler)] + [handler]
    logger.setLevel(level)
    logger.propagate = False


def _source(args: argparse.Namespace) -> Any:
    return args.source[0] if len(args.source) == 1 else [Path(s) for s in args.source]


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "formats":
        from .ingest import list_loaders

        for name, description in list_loaders().items():
            print(f"{name:18s} {description}")
        return 0
    if args.command == "specs":
        from .specs import list_specs

        for name, path in list_specs().items():
            print(f"{name:24s} {path}")
        return 0
    if args.command == "ingest":
        from .ingest import ingest

        ingest(_source(args), args.format, output=args.output, **_loader_options(args))
        return 0
    if args.command == "fit":
        settings = {"chains": args.chains, "draws": args.draws, "tune": args.tune, "seed": args.seed, "output": args.output, "progress": not args.no_progress}
        if args.cache_dir:
            from .cache import cached_fit

            trace, _ = cached_fit(args.tensor, args.spec, cache_dir=args.cache_dir, no_cache=args.no_cache, **settings)
        else:
            from .fit import fit

            trace = fit(args.tensor, args.spec, **settings)
        from .diagnostics import check_fit, log_checks, summarize

        checks = check_fit(trace)
        log_checks(checks)
        diagnostics = summarize(checks)
        if not diagnostics["passed"] and not args.accept_failed:
            raise DiagnosticsFailed(f"the fit failed diagnostics ({', '.join(diagnostics['failed_checks'])}); the posterior was written to {args.output}")
        return 0
    if args.command == "report":
        from .pipeline import report

        summary = report(args.posterior, args.output, tensor=args.tensor)
        if not summary["diagnostics"]["passed"] and not args.accept_failed:
            raise DiagnosticsFailed(f"the fit failed diagnostics ({', '.join(summary['diagnostics']['failed_checks'])}); see {args.output}")
        return 0
    if args.command == "run":
        from .pipeline import run

        run(
            _source(args),
            args.output,
            format=args.format,
            spec=args.spec,
            chains=args.chains,
            draws=args.draws,
            tune=args.tune,
            seed=args.seed,
            accept_failed=args.accept_failed,
            progress=not args.no_progress,
            cache_dir=args.cache_dir,
            no_cache=args.no_cache,
            **_loader_options(args),
        )
        return 0
    if args.command == "compare":
        from .report.compare import compare

        compare(args.fits, args.output, labels=args.label, seed=args.seed)
        return 0
    if args.command == "check":
        from .check import check_and_refit, check_new, write_check_report
        from .ingest import ingest

        new = ingest(_source(args), args.format, **_loader_options(args))
        if args.refit:
            tensor = args.tensor or str(Path(args.fit).with_name("tensor.nc"))
            check_and_refit(args.fit, tensor, new, args.output, prob=args.prob, seed=args.seed)
        else:
            table = check_new(args.fit, new, prob=args.prob, seed=args.seed)
            write_check_report(table, args.output, fit=args.fit)
        return 0
    if args.command == "sweep":
        from .sweep import sweep

        result = sweep(
            args.tensors,
            args.specs or ["location-scale"],
            args.output,
            nested=args.nested,
            compare_report=not args.no_compare,
            chains=args.chains,
            draws=args.draws,
            tune=args.tune,
            seed=args.seed,
            progress=not args.no_progress,
        )
        failed = result["fits"].index[~result["fits"]["diagnostics_passed"]].tolist()
        if failed:
            raise DiagnosticsFailed(f"fits that failed diagnostics: {', '.join(failed)}; all fits were written to {args.output}")
        return 0
    if args.command == "add":
        from .ingest.merge import add_files

        add_files(args.tensor, _source(args), format=args.format, output=args.output, policy=args.policy, **_loader_options(args))
        return 0
    raise RobustscopeError(f"unknown command {args.command!r}")


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return the exit status (0 ok, 2 error, 3 failed diagnostics)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args)
    log = logging.getLogger(LOGGER_NAME)
    try:
        return _dispatch(args)
    except DiagnosticsFailed as error:
        log.error("%s", error)
        return EXIT_DIAGNOSTICS
    except RobustscopeError as error:
        log.error("%s", error)
        return EXIT_ERROR
    except OSError as error:
        log.error("cannot read or write %s: %s", error.filename or "a file", error.strerror or error)
        return EXIT_ERROR
    except KeyboardInterrupt:
        log.error("interrupted; outputs already written are complete, none is half-written")
        return 130


if __name__ == "__main__":
    sys.exit(main())
