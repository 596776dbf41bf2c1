"""A run killed with SIGKILL leaves every output either complete or absent.

A completed run first fills the output folder. A second run into a copy of
that folder is killed when its log shows that it reached a phase
(ingestion, sampling or report writing). The test then checks that every
output file in the folder loads, and that the outputs of later phases are
byte for byte those of the completed run.

The only leftovers allowed are the temporary files of
:func:`robustscope._io.atomic_path` (``.<target name>.<random>.tmp``):
SIGKILL skips its clean-up, so they stay behind. The tests record them
instead of failing on them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from robustscope import tensor as T
from robustscope.fit import load_posterior

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data" / "multi-prompt-eval"
RUN_TIMEOUT = 300

# Logs each record on its own line on stderr, then runs the main job on two
# tasks with the fast specification and few draws.
SCRIPT = textwrap.dedent(
    """
    import logging
    import sys

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    from robustscope.pipeline import run

    run(
        sys.argv[1],
        sys.argv[2],
        format="multi-prompt",
        spec="location-scale-fast",
        chains=2,
        draws=100,
        tune=100,
        seed=11,
        accept_failed=True,
        progress=False,
        tasks=["snarks", "navigate"],
    )
    """
)

PHASE_LINES = {
    "ingestion": "robustscope.ingest.multi_prompt: read BBH/",
    "sampling": "robustscope.fit: sampling with nutpie",
    "report": "robustscope.fit: wrote posterior",
}
# Files a phase has not yet rewritten when it is killed, so they must be unchanged.
UNTOUCHED = {
    "ingestion": ("posterior.nc", "report.html", "report.md", "summary.json"),
    "sampling": ("posterior.nc", "report.html", "report.md", "summary.json"),
    "report": (),
}
TEMPORARY = re.compile(r"^\.(?P<target>.+)\.[^.]+\.tmp$")


def start_run(output: Path, script: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, str(script), str(DATA), str(output)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def run_and_kill(output: Path, script: Path, line: str) -> list[str]:
    """Start a run into ``output`` and SIGKILL it when a stderr line contains ``line``; return the log."""
    process = start_run(output, script)
    log: list[str] = []
    deadline = time.monotonic() + RUN_TIMEOUT
    killed = False
    for text in process.stderr:
        log.append(text.rstrip("\n"))
        if line in text:
            os.kill(process.pid, signal.SIGKILL)
            killed = True
            break
        if time.monotonic() > deadline:
            break
    if not killed:
        process.kill()
    process.wait(timeout=60)
    process.stderr.close()
    assert killed, f"the run never logged {line!r}; last lines:\n" + "\n".join(log[-20:])
    assert process.returncode == -signal.SIGKILL
    return log


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_loads(path: Path) -> None:
    """Fail unless ``path`` is a complete output of its kind."""
    name = path.name
    if name == "tensor.nc":
        T.load(path)
    elif name == "posterior.nc":
        load_posterior(path)
    elif name.endswith(".json"):
        json.loads(path.read_text(encoding="utf-8"))
    elif name == "report.html":
        assert path.read_text(encoding="utf-8").rstrip().endswith("</html>"), path
    elif name == "report.md":
        assert path.read_text(encoding="utf-8").strip(), path
    elif name.endswith(".png"):
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n"), path
        assert data.endswith(b"IEND\xaeB`\x82"), path
    else:
        raise AssertionError(f"unexpected output file {path}")


def output_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """Return (outputs, leftover temporary files of atomic_path) under ``folder``."""
    outputs, temporary = [], []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        (temporary if TEMPORARY.match(path.name) else outputs).append(path)
    return outputs, temporary


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("script") / "run_main_job.py"
    path.write_text(SCRIPT, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def completed(tmp_path_factory, script) -> Path:
    """An output folder written by a run that finished."""
    folder = tmp_path_factory.mktemp("completed") / "out"
    process = start_run(folder, script)
    _, errors = process.communicate(timeout=RUN_TIMEOUT)
    assert process.returncode == 0, errors[-3000:]
    return folder


def test_completed_run_outputs_load(completed):
    outputs, temporary = output_files(completed)

    assert temporary == []
    names = {p.name for p in outputs}
    assert {"tensor.nc", "tensor.manifest.json", "posterior.nc", "report.html", "report.md", "summary.json"} <= names
    for path in outputs:
        check_loads(path)


@pytest.mark.parametrize("phase", ["ingestion", "sampling", "report"])
def test_kill_leaves_no_half_written_file(phase, completed, script, tmp_path):
    folder = tmp_path / "out"
    shutil.copytree(completed, folder)
    before = {p.relative_to(completed): digest(p) for p in output_files(completed)[0]}

    log = run_and_kill(folder, script, PHASE_LINES[phase])

    outputs, temporary = output_files(folder)
    for path in outputs:
        check_loads(path)
    after = {p.relative_to(folder): digest(p) for p in outputs}
    assert set(after) == set(before), "a killed run removed or added an output file"
    for name in UNTOUCHED[phase]:
        assert after[Path(name)] == before[Path(name)], f"{name} changed although the run was killed before writing it"
    for path in temporary:
        target = TEMPORARY.match(path.name).group("target")
        assert target in {p.name for p in outputs}, f"{path} is not the temporary file of an output"
    print(f"{phase}: killed after {len(log)} log lines; leftover temporary files: {[p.name for p in temporary]}")
