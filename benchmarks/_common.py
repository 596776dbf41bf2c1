"""Helpers shared by the fitting benchmarks: child processes, machine facts, diagnostics and output files.

Every measurement that the benchmarks compare runs in a fresh Python process
(:func:`run_child`), so imports, compile caches and peak memory belong to
one measurement only, and a wall-time cap can stop it without stopping the
benchmark.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DOCS_DIR = ROOT / "docs" / "benchmarks"

# Packages whose versions decide the figures; missing ones are recorded as "not installed".
VERSION_PACKAGES = (
    "robustscope",
    "pymc",
    "pytensor",
    "nutpie",
    "numba",
    "arviz",
    "arviz-stats",
    "numpy",
    "xarray",
    "bambi",
    "formulae",
    "numpyro",
    "jax",
    "jaxlib",
)

# Posterior quantities whose bulk ESS per second each benchmark reports.
ESS_QUANTITIES = ("gamma1", "share_competence", "share_model", "share_task", "share_residual")

# How often the child's resident memory is sampled, in seconds.
POLL_SECONDS = 0.1


def package_versions() -> dict[str, str]:
    """Return the Python version and the installed version of each package in ``VERSION_PACKAGES``."""
    versions = {"python": platform.python_version()}
    for name in VERSION_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def machine_info() -> dict[str, Any]:
    """Return the core counts, total memory, one-minute load average and package versions of this machine."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    memory_gib = None
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 2**20, 1)
    return {
        "cpu_count": os.cpu_count(),
        "usable_cores": usable,
        "memory_gib": memory_gib,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "platform": platform.platform(),
        "versions": package_versions(),
    }


def machine_lines(info: dict[str, Any]) -> list[str]:
    """Return Markdown lines that state the machine and package versions of a run."""
    versions = info["versions"]
    listed = ", ".join(f"{name} {version}" for name, version in versions.items() if version != "not installed")
    return [
        f"Machine: {info['cpu_count']} CPU cores ({info['usable_cores']} usable by the process), "
        f"{info['memory_gib']} GiB memory, load average {info['load_average_1min']} at the start; {info['platform']}.",
        "",
        f"Versions: {listed}.",
    ]


def _tree_rss(process: Any) -> int:
    """Return the resident memory in bytes of ``process`` and all its descendants."""
    import psutil

    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def run_child(
    arguments: list[str],
    *,
    timeout: float | None = None,
    memory_limit_gib: float | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run ``python ARGUMENTS`` in a new process group and watch its time and memory.

    The child must print one JSON object as the last line of its standard
    output. The whole process group is killed when the wall time passes
    ``timeout`` seconds or the summed resident memory of the child and its
    descendants passes ``memory_limit_gib``.

    Returns
    -------
    dict
        ``status`` (``"finished"``, ``"timed out"``, ``"memory limit"`` or
        ``"failed"``), ``wall_seconds`` (from start to exit, interpreter
        start included), ``peak_tree_rss_mib``, ``result`` (the parsed JSON
        or None) and ``stderr_tail``. ``peak_tree_rss_mib`` is the largest
        sampled sum of resident memory over the process tree. Samples are
        ``POLL_SECONDS`` apart, so a shorter peak can be missed.
    """
    import psutil

    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    watched = psutil.Process(process.pid)
    peak = 0
    status = "finished"

    # Read the pipes in threads so that a chatty child cannot block on a full pipe.
    captured: dict[str, str] = {}

    def drain(name: str, stream: Any) -> None:
        captured[name] = stream.read()

    readers = [threading.Thread(target=drain, args=(name, stream), daemon=True) for name, stream in (("stdout", process.stdout), ("stderr", process.stderr))]
    for reader in readers:
        reader.start()

    while process.poll() is None:
        try:
            peak = max(peak, _tree_rss(watched))
        except psutil.NoSuchProcess:
            break
        elapsed = time.perf_counter() - start
        if timeout is not None and elapsed > timeout:
            status = "timed out"
            break
        if memory_limit_gib is not None and peak > memory_limit_gib * 2**30:
            status = "memory limit"
            break
        time.sleep(POLL_SECONDS)

    if status != "finished":
        # The child leads its own process group, so this stops its sampler workers too.
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    wall = time.perf_counter() - start
    for reader in readers:
        reader.join()

    result = None
    stdout = captured.get("stdout", "")
    if status == "finished":
        lines = [line for line in stdout.strip().splitlines() if line.strip()]
        if process.returncode != 0 or not lines:
            status = "failed"
        else:
            try:
                result = json.loads(lines[-1])
            except json.JSONDecodeError:
                status = "failed"
    return {
        "status": status,
        "returncode": process.returncode,
        "wall_seconds": wall,
        "peak_tree_rss_mib": peak / 2**20,
        "result": result,
        "stderr_tail": captured.get("stderr", "")[-3000:],
    }


def peak_memory_mib() -> float:
    """Return this process's peak resident memory in MiB (``VmHWM`` from /proc, else ``ru_maxrss``)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def check_posterior(posterior: Any, sample_stats: Any) -> dict[str, Any]:
    """Apply robustscope's convergence checks to a posterior and its sampler statistics.

    ``posterior`` is an ``xarray.Dataset`` on (chain, draw, ...) that holds
    only the parameters to check. ``sample_stats`` contains ``diverging`` and,
    where the sampler records it, ``energy``. Returns the dictionary of
    :func:`robustscope.diagnostics.summarize` (R-hat at most 1.01, bulk and
    tail ESS at least 400, no divergences, BFMI at least 0.3).
    """
    import xarray as xr

    from robustscope import diagnostics

    tree = xr.DataTree.from_dict({"posterior": posterior, "sample_stats": sample_stats})
    checks = diagnostics.check_fit(tree)
    summary = diagnostics.summarize(checks)
    details = checks.set_index("check")["detail"].to_dict()
    summary["worst_parameters"] = {name: details.get(name, "") for name in ("r_hat_max", "ess_bulk_min", "ess_tail_min")}
    return summary


def bulk_ess(posterior: Any, names: tuple[str, ...] = ESS_QUANTITIES) -> dict[str, float | None]:
    """Return the bulk ESS of each scalar quantity in ``names`` (None where it is absent or not finite)."""
    import arviz as az

    values: dict[str, float | None] = {}
    for name in names:
        if name not in posterior:
            values[name] = None
            continue
        ess = float(np.asarray(az.ess(posterior[name], method="bulk")))
        values[name] = ess if np.isfinite(ess) else None
    return values


def write_outputs(directory: Path, stem: str, markdown: str, payload: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``stem.md`` and ``stem.json`` into ``directory`` and return both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    markdown_path = directory / f"{stem}.md"
    json_path = directory / f"{stem}.json"
    markdown_path.write_text(markdown.rstrip() + "\n")
    json_path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    return markdown_path, json_path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def format_number(value: float | None, digits: int = 1) -> str:
    """Return ``value`` with ``digits`` decimals, or an em dash when it is missing."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "—"
    return f"{value:,.{digits}f}"
