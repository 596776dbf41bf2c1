"""Property tests of the evaluation-log loaders on generated logs.

For each of the loaders ``promptbench``, ``lm-eval``, ``helm``,
``every-eval-ever``, ``dove`` and ``inspect``, Hypothesis generates valid
results, writes them in the loader's real file format and checks two
properties:

* round trip: the tensor hash does not depend on row order, key or column
  order, how the results are split over files or folders, or line endings.
  Model and task names may be non-ASCII and long. The scores in the tensor
  are the generated ones;
* corruption: one random fault applied to a valid input either loads with
  the fault reported in the manifest (more dropped rows or cells, merged
  duplicates, conflicts or notes than the clean input gives), or raises a
  :class:`robustscope.errors.RobustscopeError` whose message names the
  changed file and, for faults inside a file, its row, column or value.
  After an error no tensor or manifest file exists, and any other exception
  type fails the test.

Every property runs ``MAX_EXAMPLES`` generated examples per run (profile
``loader-properties-logs``).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robustscope import tensor as T
from robustscope.errors import RobustscopeError
from robustscope.ingest import ingest
from robustscope.ingest.manifest import manifest_path

MAX_EXAMPLES = 25

settings.register_profile(
    "loader-properties-logs",
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
PROPERTY_SETTINGS = settings.get_profile("loader-properties-logs")

# Letters, digits and punctuation that are valid in file names and that no
# loader treats as a separator or a missing value. "é", "ß", "中" and "ü"
# check that UTF-8 text survives every format.
NAME_ALPHABET = st.sampled_from(list("abcxyzKLM019_-. éß中ü"))
short_names = st.text(NAME_ALPHABET, min_size=1, max_size=12).filter(lambda s: s.strip() == s)
# Names used inside file contents may be long. Names that end up in a file
# name stay under 255 bytes with their prefix and suffix.
long_names = st.text(NAME_ALPHABET, min_size=200, max_size=400).filter(lambda s: s.strip() == s)
file_long_names = st.text(NAME_ALPHABET, min_size=40, max_size=60).filter(lambda s: s.strip() == s)
label_names = st.one_of(short_names, short_names, long_names)
file_names = st.one_of(short_names, short_names, file_long_names)
LINE_ENDINGS = ("\n", "\r\n")


# --- shared checks -----------------------------------------------------------


def problem_count(manifest: dict[str, Any]) -> int:
    """Count every problem a manifest reports: dropped rows and cells, merged duplicates, conflicts and notes."""
    return (
        sum(manifest["dropped_rows_by_reason"].values())
        + sum(manifest["dropped_cells_by_reason"].values())
        + manifest["duplicates_merged"]
        + manifest["conflicts"]
        + len(manifest["notes"])
    )


def assert_error_located(error: RobustscopeError, changed: Path, *, whole_file: bool) -> None:
    """Check that the message names the changed file, and its row, column or value unless the fault is the whole file."""
    message = str(error)
    assert str(changed) in message, message
    if not whole_file:
        assert any(word in message for word in ("row ", "line ", "column ", "value")), message


def check_corrupted_load(
    load: Callable[[Path], Any],
    output: Path,
    *,
    kind: str,
    expectation: str,
    changed: Path,
    clean: Any,
    whole_file: bool = False,
    error_names: Path | None = None,
) -> None:
    """Load a corrupted input and check the outcome against ``expectation``.

    ``expectation`` is one of:

    * ``"error"``: must raise a located error;
    * ``"reported"``: must load and report more problems than ``clean``;
    * ``"either"``: one of the two;
    * ``"same"``: must load the clean tensor;
    * ``"tolerated"``: may load any valid tensor or raise a located error,
      for faults that can leave a valid shorter file.
 ``error_names`` is the
    path an error must name when it is not the changed file itself (a fault
    between two files is reported on their folder).
    """
    try:
        ds = load(output)
    except RobustscopeError as error:
        assert expectation in ("error", "either", "tolerated"), f"{kind}: unexpected error {error}"
        # An "either" fault can remove the only data, and the error is then about the whole input.
        assert_error_located(error, error_names or changed, whole_file=whole_file or expectation == "either")
        assert not output.exists()
        assert not manifest_path(output).exists()
        return

    assert expectation != "error", f"{kind}: loaded without an error"
    T.validate(T.load(output))
    manifest = ds.attrs["manifest"]
    clean_manifest = clean.attrs["manifest"]
    if expectation == "same":
        assert T.tensor_hash(ds) == T.tensor_hash(clean)
        assert problem_count(manifest) == problem_count(clean_manifest)
    if expectation in ("reported", "either"):
        assert problem_count(manifest) > problem_count(clean_manifest), f"{kind}: nothing reported in {manifest}"


def shuffled(items: list, rng: np.random.Generator) -> list:
    return [items[i] for i in rng.permutation(len(items))]


def shuffle_keys(value: Any, rng: np.random.Generator) -> Any:
    """Return ``value`` with the keys of every JSON object in random order."""
    if isinstance(value, dict):
        keys = shuffled(list(value), rng)
        return {key: shuffle_keys(value[key], rng) for key in keys}
    if isinstance(value, list):
        return [shuffle_keys(item, rng) for item in value]
    return value


def write_json(path: Path, payload: Any, *, indent: int | None = 2, line_ending: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(payload, ensure_ascii=False, indent=indent)
    path.write_bytes(text.replace("\n", line_ending).encode("utf-8"))
    return path


def write_jsonl(path: Path, records: list[dict], *, line_ending: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(record, ensure_ascii=False) + line_ending for record in records)
    path.write_bytes(text.encode("utf-8"))
    return path


def truncate_inside_line(path: Path, rng: np.random.Generator) -> None:
    """Cut the file inside one line, so at least that line's last character is lost."""
    raw = path.read_bytes()
    inside = [i for i in range(1, len(raw)) if raw[i - 1 : i] not in (b"\n", b"\r") and raw[i : i + 1] not in (b"\n", b"\r")]
    path.write_bytes(raw[: int(rng.choice(inside))])


def mix_line_endings(path: Path) -> None:
    """Rewrite the file with ``\\n`` and ``\\r\\n`` alternating between lines."""
    lines = path.read_bytes().replace(b"\r\n", b"\n").split(b"\n")
    ends = [b"\r\n" if number % 2 else b"\n" for number in range(len(lines) - 1)]
    path.write_bytes(b"".join(line + end for line, end in zip(lines, ends, strict=False)) + lines[-1])


# --- PromptBench Markdown ----------------------------------------------------

PB_ATTACKS = ("bertattack", "checklist", "deepwordbug", "stresstest", "textbugger", "textfooler")
PB_SHOTS = ("zeroshot", "fewshot")
# Prompt text: any letters and punctuation except the "%" that the loader
# uses to split lines written without a newline.
prompt_texts = st.text(st.sampled_from(list("abcdefgh ,.:'?éß中XYZ019")), min_size=1, max_size=60).filter(lambda s: s.strip() != "")
pb_datasets = st.text(st.sampled_from(list("abcxyz_019é")), min_size=1, max_size=10).filter(
    lambda s: not s.endswith(PB_SHOTS) and s not in ("iwslt", "un_multi", "squad_v2")
)
percent = st.integers(0, 10_000)


@st.composite
def promptbench_results(draw: st.DrawFn) -> dict:
    """Models x shots x datasets with clean, attacked and translated prompt results (values in 1/100 %)."""
    models = draw(st.lists(file_names, min_size=1, max_size=2, unique=True))
    shots = draw(st.lists(st.sampled_from(PB_SHOTS), min_size=1, max_size=2, unique=True))
    datasets = {}
    for name in draw(st.lists(pb_datasets, min_size=1, max_size=2, unique=True)):
        prompts = draw(st.lists(prompt_texts, min_size=2, max_size=7, unique_by=lambda s: s.strip()))
        task_count = draw(st.integers(1, len(prompts) - 1))
        attacks = draw(st.lists(st.sampled_from(PB_ATTACKS), max_size=2, unique=True))
        languages = draw(st.lists(st.sampled_from(["chinese", "français", "deutsch"]), max_size=2, unique=True))
        datasets[name] = {
            "task": prompts[:task_count],
            "role": prompts[task_count:],
            "attacks": {attack: prompts[:1] for attack in attacks},
            "translation": {language: prompts[-1] for language in languages},
        }
    files = {}
    for model in models:
        for shot in shots:
            values = {}
            for name, parts in datasets.items():
                for prompt in parts["task"] + parts["role"]:
                    values[(name, "clean", prompt)] = draw(percent)
                for attack, originals in parts["attacks"].items():
                    for prompt in originals:
                        values[(name, attack, prompt)] = (draw(percent), draw(percent), draw(prompt_texts))
                for language, prompt in parts["translation"].items():
                    values[(name, f"translation/{language}", prompt)] = draw(percent)
            files[(model, shot)] = values
    return {"datasets": datasets, "files": files}


def _pb_value(hundredths: int) -> str:
    return f"{hundredths / 100:.2f}%"


def promptbench_text(data: dict, model: str, shot: str, rng: np.random.Generator | None) -> list[str]:
    """Return the lines of one ``<model>_<shot>.md`` file; ``rng`` shuffles datasets, sections and entries."""
    values = data["files"][(model, shot)]
    order = (lambda items: shuffled(list(items), rng)) if rng is not None else list
    lines = [f"# {model}_{shot}", ""]
    for name in order(data["datasets"]):
        parts = data["datasets"][name]
        lines += [f"# {name}", "", "## 10 prompts", ""]
        lines += [f"Acc: {_pb_value(values[(name, 'clean', p)])}, prompt: {p}" for p in order(parts["task"])]
        lines += [""]
        lines += [f"Acc: {_pb_value(values[(name, 'clean', p)])}, prompt: {p}" for p in order(parts["role"])]
        lines += [""]
        for attack in order(parts["attacks"]):
            lines += [f"## {attack}", ""]
            for prompt in order(parts["attacks"][attack]):
                original, attacked, attacked_text = values[(name, attack, prompt)]
                lines += [
                    f"Original prompt: {prompt}",
                    f"Attacked prompt: {attacked_text.encode('utf-8')!r}",
                    f"Original acc: {_pb_value(original)}, attacked acc: {_pb_value(attacked)}, dropped acc: {_pb_value(original - attacked)}",
                    "",
                ]
        if parts["translation"]:
            lines += ["## translation", ""]
            for language in order(parts["translation"]):
                prompt = parts["translation"][language]
                lines += [f"Language: {language}, acc: {_pb_value(values[(name, f'translation/{language}', prompt)])}, prompt: {prompt}"]
            lines += [""]
    return lines


def write_promptbench(
    data: dict,
    root: Path,
    *,
    rng: np.random.Generator | None = None,
    line_ending: str = "\n",
    subfolders: bool = False,
) -> Path:
    """Write every ``<model>_<shot>.md`` file under ``root``, optionally each in its own sub-folder."""
    for number, (model, shot) in enumerate(data["files"]):
        folder = root / f"part{number}" if subfolders else root
        folder.mkdir(parents=True, exist_ok=True)
        lines = promptbench_text(data, model, shot, rng)
        (folder / f"{model}_{shot}.md").write_bytes(line_ending.join(lines).encode("utf-8"))
    return root


@PROPERTY_SETTINGS
@given(
    data=promptbench_results(),
    seed=st.integers(0, 2**32 - 1),
    line_ending=st.sampled_from(LINE_ENDINGS),
    subfolders=st.booleans(),
)
def test_promptbench_round_trip(data, seed, line_ending, subfolders):
    from robustscope.ingest.promptbench import prompt_id

    with tempfile.TemporaryDirectory() as folder:
        canonical = ingest(write_promptbench(data, Path(folder) / "canonical"), "promptbench")
        changed = write_promptbench(
            data, Path(folder) / "changed", rng=np.random.default_rng(seed), line_ending=line_ending, subfolders=subfolders
        )
        ds = ingest(changed, "promptbench")

    assert T.tensor_hash(ds) == T.tensor_hash(canonical)
    assert ds.attrs["manifest"]["rows"]["dropped"] == 0
    assert ds.attrs["manifest"]["duplicates_merged"] == 0
    for (model, shot), values in data["files"].items():
        for (name, kind, prompt), value in values.items():
            label = f"{shot}/{kind}/{prompt_id(prompt)}"
            score = float(ds["score"].sel(model=model, task=name, perturbation=label))
            expected = (value[1] if isinstance(value, tuple) else value) / 10_000
            assert score == pytest.approx(expected, abs=1e-12)


PB_CORRUPTIONS = (
    "truncate",
    "wrong_type",
    "out_of_range",
    "negative",
    "duplicate_identical",
    "duplicate_conflicting",
    "stray_header",
    "empty_file",
    "nan",
    "invalid_utf8",
    "mixed_line_endings",
)


def corrupt_promptbench(path: Path, kind: str, rng: np.random.Generator) -> tuple[str, bool]:
    """Apply one fault to a PromptBench file; return the expectation and whether it concerns the whole file."""
    lines = path.read_text(encoding="utf-8").split("\n")
    clean = [number for number, line in enumerate(lines) if line.startswith("Acc: ")]
    row = int(rng.choice(clean))
    value_end = lines[row].index("%")
    expectation = "error"
    if kind == "truncate":
        raw = path.read_bytes()
        path.write_bytes(raw[: int(rng.integers(1, len(raw)))])
        return "tolerated", True
    if kind == "wrong_type":
        lines[row] = "Acc: high" + lines[row][value_end:]
        expectation = "reported"
    elif kind == "out_of_range":
        lines[row] = "Acc: 150.00" + lines[row][value_end:]
    elif kind == "negative":
        lines[row] = "Acc: -5.00" + lines[row][value_end:]
    elif kind == "duplicate_identical":
        lines.insert(row, lines[row])
        expectation = "reported"
    elif kind == "duplicate_conflicting":
        old = float(lines[row][len("Acc: ") : value_end])
        lines.insert(row, f"Acc: {(old + 1) % 100:.2f}" + lines[row][value_end:])
        expectation = "reported"
    elif kind == "stray_header":
        lines.insert(row, "Acc, prompt")
        expectation = "reported"
    elif kind == "empty_file":
        path.write_bytes(b"")
        return "error", True
    elif kind == "nan":
        lines[row] = "Acc: nan" + lines[row][value_end:]
        expectation = "reported"
    elif kind == "invalid_utf8":
        path.write_bytes("\n".join(lines).encode("utf-8").replace(b"Acc: ", b"Acc\xff: ", 1))
        return "error", True
    elif kind == "mixed_line_endings":
        mix_line_endings(path)
        return "same", False
    else:
        raise AssertionError(kind)
    path.write_text("\n".join(lines), encoding="utf-8")
    return expectation, False


@PROPERTY_SETTINGS
@given(data=promptbench_results(), kind=st.sampled_from(PB_CORRUPTIONS), seed=st.integers(0, 2**32 - 1))
def test_promptbench_corruption_reported(data, kind, seed):
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as folder:
        root = write_promptbench(data, Path(folder) / "results")
        clean = ingest(root, "promptbench")
        changed = sorted(root.glob("*.md"))[0]
        expectation, whole_file = corrupt_promptbench(changed, kind, rng)
        check_corrupted_load(
            lambda output: ingest(root, "promptbench", output=output),
            Path(folder) / "out" / "tensor.nc",
            kind=kind,
            expectation=expectation,
            changed=changed,
            clean=clean,
            whole_file=whole_file,
        )


# --- lm-evaluation-harness output folders -------------------------------------

LM_TIMESTAMPS = ("2026-01-02T03-04-05.000001", "2026-01-02T03-04-06.000002", "2026-01-02T03-04-07.000003")
lm_task_names = st.text(st.sampled_from(list("abcxyz_019éß")), min_size=1, max_size=30).filter(lambda s: not s.startswith("_"))


@st.composite
def lm_eval_runs(draw: st.DrawFn) -> dict:
    """One to three runs, each with its own model, shot count and seed, and 0/1 ``acc`` per document."""
    count = draw(st.integers(1, 3))
    models = draw(st.lists(label_names, min_size=count, max_size=count, unique=True))
    shots = draw(st.lists(st.integers(0, 5), min_size=count, max_size=count, unique=True))
    tasks = draw(st.lists(lm_task_names, min_size=1, max_size=3, unique=True))
    runs = []
    for model, n_shot, timestamp in zip(models, shots, LM_TIMESTAMPS, strict=False):
        run_tasks = draw(st.lists(st.sampled_from(tasks), min_size=1, max_size=len(tasks), unique=True))
        documents = {task: draw(st.lists(st.sampled_from([0, 1]), min_size=1, max_size=6)) for task in run_tasks}
        runs.append({"model": model, "n_shot": n_shot, "seed": n_shot * 7, "timestamp": timestamp, "documents": documents})
    return {"runs": runs, "perturbation": draw(st.sampled_from(["task", "prompt_hash", "n_shot", "seed"]))}


def lm_eval_results(run: dict) -> dict:
    tasks = sorted(run["documents"])
    return {
        "results": {task: {"alias": task, "acc,none": float(np.mean(run["documents"][task]))} for task in tasks},
        "group_subtasks": {task: [] for task in tasks},
        "configs": {
            task: {"task": task, "doc_to_text": f"Question about {task}: {{{{question}}}}", "target_delimiter": " ", "num_fewshot": run["n_shot"]}
            for task in tasks
        },
        "n-shot": {task: run["n_shot"] for task in tasks},
        "n-samples": {task: {"original": len(run["documents"][task]), "effective": len(run["documents"][task])} for task in tasks},
        "config": {
            "model": "hf",
            "model_args": {"pretrained": run["model"]},
            "random_seed": run["seed"],
            "numpy_seed": 1234,
            "torch_seed": 1234,
            "fewshot_seed": 1234,
        },
        "model_name": run["model"],
    }


def lm_eval_samples(run: dict, task: str) -> list[dict]:
    return [
        {
            "doc_id": doc_id,
            "doc": {"question": f"q{doc_id}"},
            "target": "1",
            "resps": [[str(score)]],
            "filtered_resps": [str(score)],
            "filter": "none",
            "metrics": ["acc"],
            "doc_hash": f"{doc_id:064x}",
            "prompt_hash": f"{doc_id + 1:064x}",
            "acc": score,
        }
        for doc_id, score in enumerate(run["documents"][task])
    ]


def write_lm_eval(
    data: dict,
    root: Path,
    *,
    rng: np.random.Generator | None = None,
    line_ending: str = "\n",
    one_folder: bool = False,
) -> Path:
    """Write each run as ``<root>/<run>/<model>/results_<timestamp>.json`` and its samples files.

    ``rng`` shuffles sample rows and JSON keys. ``one_folder`` puts every
    run into one folder, where the timestamps keep the files apart.
    """
    for number, run in enumerate(data["runs"]):
        folder = root / "runs" / "model" if one_folder else root / f"run{number}" / "model"
        results = lm_eval_results(run)
        if rng is not None:
            results = shuffle_keys(results, rng)
        write_json(folder / f"results_{run['timestamp']}.json", results, line_ending=line_ending)
        for task in run["documents"]:
            rows = lm_eval_samples(run, task)
            if rng is not None:
                rows = shuffle_keys(shuffled(rows, rng), rng)
            write_jsonl(folder / f"samples_{task}_{run['timestamp']}.jsonl", rows, line_ending=line_ending)
    return root


@PROPERTY_SETTINGS
@given(data=lm_eval_runs(), seed=st.integers(0, 2**32 - 1), line_ending=st.sampled_from(LINE_ENDINGS), one_folder=st.booleans())
def test_lm_eval_round_trip(data, seed, line_ending, one_folder):
    perturbation = data["perturbation"]
    with tempfile.TemporaryDirectory() as folder:
        canonical = ingest(write_lm_eval(data, Path(folder) / "canonical"), "lm-eval", perturbation=perturbation)
        changed = write_lm_eval(data, Path(folder) / "changed", rng=np.random.default_rng(seed), line_ending=line_ending, one_folder=one_folder)
        ds = ingest(changed, "lm-eval", perturbation=perturbation)

    assert T.tensor_hash(ds) == T.tensor_hash(canonical)
    assert ds.attrs["manifest"]["rows"]["dropped"] == 0
    cells = T.observed_cells(ds)
    expected = sorted(
        (run["model"], sum(scores), len(scores)) for run in data["runs"] for scores in run["documents"].values()
    )
    assert sorted(zip(cells["model"], cells["n_correct"], cells["n_total"], strict=True)) == expected


LM_CORRUPTIONS = (
    "truncate_samples",
    "truncate_results",
    "wrong_type",
    "out_of_range",
    "duplicate_identical",
    "duplicate_conflicting",
    "stray_header",
    "empty_doc_id",
    "missing_doc_id",
    "nan",
    "drop_last_line",
    "mixed_line_endings",
)


def corrupt_lm_eval(root: Path, kind: str, rng: np.random.Generator) -> tuple[str, Path, bool]:
    """Apply one fault to the first run; return the expectation, the changed file and whether the fault is the whole file."""
    samples = sorted(root.glob("run0/model/samples_*.jsonl"))[0]
    results = next(root.glob("run0/model/results_*.json"))
    lines = samples.read_text(encoding="utf-8").splitlines()
    row = int(rng.integers(len(lines)))
    record = json.loads(lines[row])
    expectation = "error"
    if kind == "truncate_samples":
        truncate_inside_line(samples, rng)
        return "error", samples, False
    if kind == "truncate_results":
        truncate_inside_line(results, rng)
        return "error", results, True
    if kind == "wrong_type":
        record["acc"] = "correct"
        lines[row] = json.dumps(record)
    elif kind == "out_of_range":
        record["acc"] = 7
        lines[row] = json.dumps(record)
    elif kind == "duplicate_identical":
        lines.insert(row, lines[row])
    elif kind == "duplicate_conflicting":
        record["acc"] = 1 - record["acc"]
        lines.insert(row, json.dumps(record))
    elif kind == "stray_header":
        lines.insert(row, "doc_id,filter,acc")
    elif kind == "empty_doc_id":
        record["doc_id"] = ""
        lines[row] = json.dumps(record)
    elif kind == "missing_doc_id":
        del record["doc_id"]
        lines[row] = json.dumps(record)
    elif kind == "nan":
        record["acc"] = float("nan")
        lines[row] = json.dumps(record)
    elif kind == "drop_last_line":
        # A valid but shorter file: the results file still counts every document.
        lines = lines[:-1]
        if not lines:
            samples.write_text("", encoding="utf-8")
            return "error", samples, True
        expectation = "reported"
    elif kind == "mixed_line_endings":
        mix_line_endings(samples)
        return "same", samples, False
    else:
        raise AssertionError(kind)
    samples.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return expectation, samples, False


@PROPERTY_SETTINGS
@given(data=lm_eval_runs(), kind=st.sampled_from(LM_CORRUPTIONS), seed=st.integers(0, 2**32 - 1))
def test_lm_eval_corruption_reported(data, kind, seed):
    rng = np.random.default_rng(seed)
    perturbation = data["perturbation"]
    with tempfile.TemporaryDirectory() as folder:
        root = write_lm_eval(data, Path(folder) / "logs")
        clean = ingest(root, "lm-eval", perturbation=perturbation)
        expectation, changed, whole_file = corrupt_lm_eval(root, kind, rng)
        check_corrupted_load(
            lambda output: ingest(root, "lm-eval", perturbation=perturbation, output=output),
            Path(folder) / "out" / "tensor.nc",
            kind=kind,
            expectation=expectation,
            changed=changed,
            clean=clean,
            whole_file=whole_file,
        )


# --- HELM run folders --------------------------------------------------------

HELM_PERTURBATIONS = ("typos", "dialect", "synonym")
helm_scenarios = st.text(st.sampled_from(list("abcxyz_019éß中")), min_size=1, max_size=20)


@st.composite
def helm_runs(draw: st.DrawFn) -> list[dict]:
    """Run folders with unique (model, scenario), each with 0/1 ``exact_match`` per instance and perturbation."""
    models = draw(st.lists(label_names, min_size=1, max_size=2, unique=True))
    scenarios = draw(st.lists(helm_scenarios, min_size=1, max_size=2, unique=True))
    pairs = draw(st.lists(st.sampled_from([(m, s) for m in models for s in scenarios]), min_size=1, max_size=3, unique=True))
    runs = []
    for model, scenario in pairs:
        perturbations = ["original"] + draw(st.lists(st.sampled_from(HELM_PERTURBATIONS), max_size=2, unique=True))
        instances = [f"id{number}" for number in draw(st.lists(st.integers(0, 999), min_size=1, max_size=5, unique=True))]
        scores = {(i, p): draw(st.sampled_from([0.0, 1.0])) for i in instances for p in perturbations}
        runs.append({"model": model, "scenario": scenario, "perturbations": perturbations, "instances": instances, "scores": scores})
    return runs


def _helm_perturbation(name: str) -> dict | None:
    if name == "original":
        return None
    return {"name": name, "robustness": True, "fairness": False, "computed_on": "perturbed"}


def _helm_stat(mean: float, count: int, perturbation: str | None = None) -> dict:
    name = {"name": "exact_match", "split": "test"}
    if perturbation:
        name["perturbation"] = _helm_perturbation(perturbation)
    return {"name": name, "count": count, "sum": mean * count, "mean": mean, "min": 0.0, "max": 1.0}


def helm_entries(run: dict, instances: list[str]) -> list[dict]:
    entries = []
    for instance in instances:
        for perturbation in run["perturbations"]:
            entry = {
                "instance_id": instance,
                "train_trial_index": 0,
                "stats": [
                    {"name": {"name": "num_references", "split": "test"}, "count": 1, "mean": 1.0},
                    _helm_stat(run["scores"][(instance, perturbation)], 1),
                ],
            }
            if perturbation != "original":
                entry["perturbation"] = _helm_perturbation(perturbation)
            entries.append(entry)
    return entries


def helm_aggregates(run: dict) -> list[dict]:
    stats = []
    for perturbation in run["perturbations"]:
        scores = [run["scores"][(i, perturbation)] for i in run["instances"]]
        stats.append(_helm_stat(float(np.mean(scores)), len(scores), None if perturbation == "original" else perturbation))
    return stats


def write_helm_run(folder: Path, run: dict, instances: list[str], rng: np.random.Generator | None, line_ending: str) -> None:
    name = f"{run['scenario']}:subject=x,model={run['model']}"
    spec = {
        "name": name,
        "scenario_spec": {"class_name": "helm.benchmark.scenarios.generated.GeneratedScenario", "args": {}},
        "adapter_spec": {"method": "generation", "model": run["model"], "num_train_trials": 1},
        "metric_specs": [{"class_name": "helm.benchmark.metrics.basic_metrics.BasicMetric", "args": {"names": ["exact_match"]}}],
        "data_augmenter_spec": {"perturbation_specs": [{"class_name": f"helm.benchmark.augmentations.{p}.Perturbation", "args": {}} for p in run["perturbations"][1:]]},
    }
    state = {"request_states": [{"instance": {"id": i, "split": "test", "input": {"text": f"text of {i}"}}} for i in instances]}
    entries = helm_entries(run, instances)
    stats = helm_aggregates(run)
    if rng is not None:
        spec, state, entries, stats = (shuffle_keys(part, rng) for part in (spec, state, shuffled(entries, rng), shuffled(stats, rng)))
    write_json(folder / "run_spec.json", spec, line_ending=line_ending)
    write_json(folder / "scenario_state.json", state, line_ending=line_ending)
    write_json(folder / "per_instance_stats.json", entries, line_ending=line_ending)
    write_json(folder / "stats.json", stats, line_ending=line_ending)


def write_helm(runs: list[dict], root: Path, *, rng: np.random.Generator | None = None, line_ending: str = "\n", split: bool = False) -> Path:
    """Write one folder per run; ``split`` spreads each run's instances over two folders with the same run spec."""
    for number, run in enumerate(runs):
        instances = run["instances"]
        parts = [instances[: len(instances) // 2], instances[len(instances) // 2 :]] if split and len(instances) > 1 else [instances]
        for part_number, part in enumerate(parts):
            write_helm_run(root / f"run{number}-{part_number}", run, part, rng, line_ending)
    return root


@PROPERTY_SETTINGS
@given(
    runs=helm_runs(),
    level=st.sampled_from(["example", "aggregate"]),
    seed=st.integers(0, 2**32 - 1),
    line_ending=st.sampled_from(LINE_ENDINGS),
    split=st.booleans(),
)
def test_helm_round_trip(runs, level, seed, line_ending, split):
    with tempfile.TemporaryDirectory() as folder:
        canonical = ingest(write_helm(runs, Path(folder) / "canonical"), "helm", level=level)
        # The aggregate statistics of one run cannot be split over two folders.
        split = split and level == "example"
        changed = write_helm(runs, Path(folder) / "changed", rng=np.random.default_rng(seed), line_ending=line_ending, split=split)
        ds = ingest(changed, "helm", level=level)

    assert T.tensor_hash(ds) == T.tensor_hash(canonical)
    assert ds.attrs["manifest"]["rows"]["dropped"] == 0
    for run in runs:
        for perturbation in run["perturbations"]:
            scores = [run["scores"][(i, perturbation)] for i in run["instances"]]
            task = f"{run['scenario']}:subject=x"
            cell = {"model": run["model"], "task": task, "perturbation": perturbation}
            if level == "example":
                assert int(ds["n_correct"].sel(cell)) == sum(scores)
                assert int(ds["n_total"].sel(cell)) == len(scores)
            else:
                assert float(ds["score"].sel(cell)) == pytest.approx(np.mean(scores))


HELM_CORRUPTIONS = (
    "truncate",
    "wrong_type_mean",
    "wrong_type_entry",
    "wrong_type_stats",
    "wrong_type_trial",
    "out_of_range",
    "duplicate_identical",
    "duplicate_conflicting",
    "stray_header",
    "empty_instance_id",
    "nan",
    "mixed_line_endings",
)


def corrupt_helm(root: Path, kind: str, rng: np.random.Generator) -> tuple[str, Path, bool, Path | None]:
    """Apply one fault to the first run's statistics; return the expectation, the changed file, whether the fault is the whole file, and the path an error must name instead."""
    path = root / "run0-0" / "per_instance_stats.json"
    entries = json.loads(path.read_text(encoding="utf-8"))
    row = int(rng.integers(len(entries)))
    exact = next(stat for stat in entries[row]["stats"] if stat["name"]["name"] == "exact_match")
    expectation = "error"
    if kind == "truncate":
        changed = root / "run0-0" / str(rng.choice(["run_spec.json", "per_instance_stats.json", "scenario_state.json"]))
        truncate_inside_line(changed, rng)
        return "error", changed, True, None
    if kind == "wrong_type_mean":
        exact["mean"] = "high"
    elif kind == "wrong_type_entry":
        entries[row] = "instance"
    elif kind == "wrong_type_stats":
        entries[row]["stats"] = {"exact_match": 1}
    elif kind == "wrong_type_trial":
        entries[row]["train_trial_index"] = "first"
    elif kind == "out_of_range":
        exact["mean"] = 3.0
    elif kind == "duplicate_identical":
        entries.insert(row, entries[row])
        expectation = "reported"
    elif kind == "duplicate_conflicting":
        clash = json.loads(json.dumps(entries[row]))
        next(stat for stat in clash["stats"] if stat["name"]["name"] == "exact_match")["mean"] = 1.0 - exact["mean"]
        entries.insert(row, clash)
        write_json(path, entries)
        return "error", path, False, root
    elif kind == "stray_header":
        entries.insert(row, {"instance_id": "instance_id", "stats": "stats"})
    elif kind == "empty_instance_id":
        entries[row]["instance_id"] = ""
    elif kind == "nan":
        exact["mean"] = float("nan")
    elif kind == "mixed_line_endings":
        mix_line_endings(path)
        return "same", path, False, None
    else:
        raise AssertionError(kind)
    write_json(path, entries)
    return expectation, path, False, None


@PROPERTY_SETTINGS
@given(runs=helm_runs(), kind=st.sampled_from(HELM_CORRUPTIONS), seed=st.integers(0, 2**32 - 1))
def test_helm_corruption_reported(runs, kind, seed):
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as folder:
        root = write_helm(runs, Path(folder) / "runs")
        clean = ingest(root, "helm")
        expectation, changed, whole_file, error_names = corrupt_helm(root, kind, rng)
        check_corrupted_load(
            lambda output: ingest(root, "helm", output=output),
            Path(folder) / "out" / "tensor.nc",
            kind=kind,
            expectation=expectation,
            changed=changed,
            clean=clean,
            whole_file=whole_file,
            error_names=error_names,
        )


# --- Every Eval Ever records -------------------------------------------------

eee_tasks = st.text(st.sampled_from(list("abcxyz_019éß中. ")), min_size=1, max_size=20).filter(lambda s: s.strip() == s and not s.lower().startswith("mean win rate"))


@st.composite
def eee_records(draw: st.DrawFn) -> dict:
    """Models x tasks with an accuracy per result, its example count and optional per-sample 0/1 scores."""
    models = draw(st.lists(label_names, min_size=1, max_size=2, unique=True))
    tasks = draw(st.lists(eee_tasks, min_size=1, max_size=3, unique=True))
    with_samples = draw(st.booleans())
    records = []
    for model in models:
        results = []
        for task in draw(st.lists(st.sampled_from(tasks), min_size=1, max_size=len(tasks), unique=True)):
            samples = draw(st.lists(st.sampled_from([0, 1]), min_size=1, max_size=6))
            results.append({"task": task, "samples": samples})
        records.append({"model": model, "results": results})
    return {"records": records, "with_samples": with_samples}


def eee_result(model: str, result: dict) -> dict:
    samples = result["samples"]
    return {
        "evaluation_result_id": f"{result['task']}#{model}",
        "evaluation_name": result["task"],
        "source_data": {"dataset_name": result["task"], "source_type": "url", "url": ["https://example.invalid/data"]},
        "metric_config": {"metric_id": "accuracy", "metric_name": "accuracy", "metric_kind": "accuracy", "metric_unit": "proportion", "min_score": 0.0, "max_score": 1.0},
        "score_details": {"score": sum(samples) / len(samples), "uncertainty": {"num_samples": len(samples)}},
    }


def eee_samples(model: str, result: dict) -> list[dict]:
    return [
        {
            "schema_version": "0.3.0",
            "model_id": model,
            "evaluation_name": result["task"],
            "evaluation_result_id": f"{result['task']}#{model}",
            "sample_id": f"s{number}",
            "evaluation": {"score": float(score), "is_correct": bool(score)},
        }
        for number, score in enumerate(result["samples"])
    ]


def write_eee(data: dict, root: Path, *, rng: np.random.Generator | None = None, line_ending: str = "\n", split: bool = False) -> Path:
    """Write one ``<id>.json`` aggregate record per model (``split``: one per result) with ``<id>_samples.jsonl`` beside it."""
    for number, record in enumerate(data["records"]):
        groups = [[result] for result in record["results"]] if split else [record["results"]]
        for part, results in enumerate(groups):
            stem = f"record{number}-{part}"
            payload = {
                "schema_version": "0.3.0",
                "evaluation_id": f"generated/{number}",
                "source_metadata": {"source_name": "generated", "source_type": "evaluation_run"},
                "model_info": {"name": record["model"], "id": record["model"]},
                "evaluation_results": [eee_result(record["model"], result) for result in results],
            }
            samples = [row for result in results for row in eee_samples(record["model"], result)]
            if rng is not None:
                payload["evaluation_results"] = shuffled(payload["evaluation_results"], rng)
                payload = shuffle_keys(payload, rng)
                samples = shuffle_keys(shuffled(samples, rng), rng)
            write_json(root / f"{stem}.json", payload, line_ending=line_ending)
            if data["with_samples"]:
                write_jsonl(root / f"{stem}_samples.jsonl", samples, line_ending=line_ending)
    return root


@PROPERTY_SETTINGS
@given(data=eee_records(), seed=st.integers(0, 2**32 - 1), line_ending=st.sampled_from(LINE_ENDINGS), split=st.booleans())
def test_every_eval_ever_round_trip(data, seed, line_ending, split):
    with tempfile.TemporaryDirectory() as folder:
        canonical = ingest(write_eee(data, Path(folder) / "canonical"), "every-eval-ever")
        changed = write_eee(data, Path(folder) / "changed", rng=np.random.default_rng(seed), line_ending=line_ending, split=split)
        ds = ingest(changed, "every-eval-ever")

    assert T.tensor_hash(ds) == T.tensor_hash(canonical)
    assert ds.attrs["manifest"]["rows"]["dropped"] == 0
    for record in data["records"]:
        for result in record["results"]:
            cell = {"model": record["model"], "task": result["task"], "perturbation": "original"}
            assert int(ds["n_correct"].sel(cell)) == sum(result["samples"])
            assert int(ds["n_total"].sel(cell)) == len(result["samples"])


EEE_CORRUPTIONS = (
    "truncate_record",
    "truncate_samples",
    "wrong_type_score",
    "wrong_type_sample_score",
    "wrong_type_result",
    "out_of_range",
    "duplicate_identical",
    "duplicate_conflicting",
    "empty_name",
    "nan",
    "stray_header",
    "mixed_line_endings",
)


def corrupt_eee(root: Path, data: dict, kind: str, rng: np.random.Generator) -> tuple[str, Path, bool, Path | None]:
    """Apply one fault to the first record (or its samples file); return the expectation, the changed file, whether it is the whole file, and the path an error must name instead."""
    path = root / "record0-0.json"
    samples_path = root / "record0-0_samples.jsonl"
    payload = json.loads(path.read_text(encoding="utf-8"))
    results = payload["evaluation_results"]
    row = int(rng.integers(len(results)))
    # A fault in the only result leaves no score, which is an error about the whole input.
    dropped = "either" if sum(len(record["results"]) for record in data["records"]) == 1 else "reported"
    expectation = "error"
    if kind in ("truncate_samples", "wrong_type_sample_score", "stray_header") and data["with_samples"]:
        lines = samples_path.read_text(encoding="utf-8").splitlines()
        line = int(rng.integers(len(lines)))
        if kind == "truncate_samples":
            truncate_inside_line(samples_path, rng)
            return "error", samples_path, False, None
        if kind == "wrong_type_sample_score":
            sample = json.loads(lines[line])
            sample["evaluation"] = {"score": "high"}
            lines[line] = json.dumps(sample)
            expectation = "either" if len(lines) == 1 else "reported"
        else:
            lines.insert(line, "sample_id,score")
        samples_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return expectation, samples_path, False, None
    if kind in ("truncate_record", "truncate_samples"):
        truncate_inside_line(path, rng)
        return "error", path, True, None
    if kind in ("wrong_type_score", "wrong_type_sample_score"):
        results[row]["score_details"]["score"] = "high"
        expectation = dropped
    elif kind == "wrong_type_result":
        results[row] = "result"
    elif kind == "out_of_range":
        results[row]["score_details"]["score"] = 1.5
        expectation = dropped
    elif kind == "duplicate_identical":
        results.insert(row, results[row])
        expectation = "reported" if not data["with_samples"] else "tolerated"
    elif kind == "duplicate_conflicting":
        clash = json.loads(json.dumps(results[row]))
        clash["score_details"]["score"] = 1.0 if results[row]["score_details"]["score"] == 0 else 0.0
        results.insert(row, clash)
        write_json(path, payload)
        # With samples files the tensor is built from them, and the aggregate scores are not used.
        return ("error", path, False, root) if not data["with_samples"] else ("tolerated", path, False, root)
    elif kind == "empty_name":
        results[row]["evaluation_name"] = ""
    elif kind == "nan":
        results[row]["score_details"]["score"] = float("nan")
        expectation = dropped
    elif kind == "stray_header":
        results.insert(row, {"evaluation_name": "evaluation_name", "score_details": "score_details"})
    elif kind == "mixed_line_endings":
        mix_line_endings(path)
        return "same", path, False, None
    else:
        raise AssertionError(kind)
    write_json(path, payload)
    return expectation, path, False, None


@PROPERTY_SETTINGS
@given(data=eee_records(), kind=st.sampled_from(EEE_CORRUPTIONS), seed=st.integers(0, 2**32 - 1))
def test_every_eval_ever_corruption_reported(data, kind, seed):
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as folder:
        root = write_eee(data, Path(folder) / "records")
        clean = ingest(root, "every-eval-ever")
        expectation, changed, whole_file, error_names = corrupt_eee(root, data, kind, rng)
        check_corrupted_load(
            lambda output: ingest(root, "every-eval-ever", output=output),
            Path(folder) / "out" / "tensor.nc",
            kind=kind,
            expectation=expectation,
            changed=changed,
            clean=clean,
            whole_file=whole_file,
            error_names=error_names,
        )


# --- DOVE Parquet files ------------------------------------------------------

DOVE_FACTOR_COLUMNS = (
    "dimensions_1: enumerator",
    "dimensions_2: separator",
    "dimensions_3: choices_order",
    "dimensions_4: instruction_phrasing_text",
)
dove_datasets = st.text(st.sampled_from(list("abcxyz_019.")), min_size=1, max_size=20)
dove_configs = st.tuples(
    st.sampled_from(["capitals", "lowercase", "numbers", "roman é"]),
    st.sampled_from(["\n", "; ", " | ", "中"]),
    st.sampled_from(["none", "shortest_to_longest", "longest_to_shortest"]),
    st.one_of(st.sampled_from(["Answer the question about {topic}.", "Réponds à la question."]), long_names),
)


@st.composite
def dove_results(draw: st.DrawFn) -> list[dict]:
    """Per-example DOVE rows with unique (model, dataset, shots, configuration, example) and 0/1 scores."""
    models = draw(st.lists(label_names, min_size=1, max_size=2, unique=True))
    datasets = draw(st.lists(dove_datasets, min_size=1, max_size=2, unique=True))
    shots = draw(st.lists(st.sampled_from([0, 2, 5]), min_size=1, max_size=2, unique=True))
    configs = draw(st.lists(dove_configs, min_size=1, max_size=3, unique=True))
    examples = draw(st.lists(st.integers(0, 500), min_size=1, max_size=4, unique=True))
    keys = [(m, d, s, c, e) for m in models for d in datasets for s in shots for c in configs for e in examples]
    chosen = draw(st.lists(st.sampled_from(keys), min_size=1, max_size=min(len(keys), 40), unique=True))
    rows = []
    for model, dataset, n_shots, config, example in chosen:
        score = draw(st.sampled_from([0.0, 1.0]))
        row = {"dataset": dataset, "sample_index": example, "model": model}
        row.update(dict(zip(DOVE_FACTOR_COLUMNS, config, strict=True)))
        row.update({"dimensions_5: shots": n_shots, "generated_text": "The answer is A", "closest_answer": "A" if score else "B", "ground_truth": "A", "score": score})
        rows.append(row)
    return rows


def write_dove(rows: list[dict], root: Path, *, rng: np.random.Generator | None = None, split: bool = False) -> Path:
    """Write ``{model}/en/{N}_shot/{dataset}.parquet`` files; ``rng`` shuffles rows and columns, ``split`` halves each file."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    model_folders = {model: f"model{number}" for number, model in enumerate(sorted(frame["model"].unique()))}
    for (model, n_shots, dataset), part in frame.groupby(["model", "dimensions_5: shots", "dataset"], sort=True):
        folder = root / model_folders[model] / "en" / f"{n_shots}_shot"
        folder.mkdir(parents=True, exist_ok=True)
        part = part.reset_index(drop=True)
        if rng is not None:
            part = part.sample(frac=1.0, random_state=rng).reset_index(drop=True)
            part = part[list(rng.permutation(part.columns))]
        pieces = [part.iloc[: len(part) // 2], part.iloc[len(part) // 2 :]] if split and len(part) > 1 else [part]
        for number, piece in enumerate(pieces):
            piece.to_parquet(folder / f"{dataset}.part{number}.parquet", index=False)
    return root


@PROPERTY_SETTINGS
@given(rows=dove_results(), seed=st.integers(0, 2**32 - 1), split=st.booleans(), per_example=st.booleans())
def test_dove_round_trip(rows, seed, split, per_example):
    with tempfile.TemporaryDirectory() as folder:
        canonical = ingest(write_dove(rows, Path(folder) / "canonical"), "dove", per_example=per_example)
        changed = write_dove(rows, Path(folder) / "changed", rng=np.random.default_rng(seed), split=split)
        ds = ingest(changed, "dove", per_example=per_example)

    assert T.tensor_hash(ds) == T.tensor_hash(canonical)
    assert ds.attrs["manifest"]["rows"]["dropped"] == 0
    expected: dict[tuple, list[float]] = {}
    for row in rows:
        key = (row["model"], row["dataset"], row["dimensions_5: shots"], *(row[c] for c in DOVE_FACTOR_COLUMNS))
        expected.setdefault(key, []).append(row["score"])
    cells = T.observed_cells(ds)
    found = sorted(zip(cells["model"], cells["task"], cells["n_correct"], cells["n_total"], strict=True))
    assert found == sorted((key[0], key[1], int(sum(scores)), len(scores)) for key, scores in expected.items())


DOVE_CORRUPTIONS = (
    "truncate",
    "wrong_type",
    "out_of_range",
    "duplicate_identical",
    "duplicate_conflicting",
    "stray_header",
    "empty_model",
    "null_key",
    "nan",
)


def corrupt_dove(root: Path, kind: str, rng: np.random.Generator) -> tuple[str, Path, bool, Path | None]:
    """Apply one fault to the first Parquet file; return the expectation, the changed file, whether it is the whole file, and the path an error must name instead."""
    import pandas as pd

    path = sorted(root.rglob("*.parquet"))[0]
    frame = pd.read_parquet(path)
    row = int(rng.integers(len(frame)))
    expectation = "error"
    only_row = sum(len(pd.read_parquet(p)) for p in root.rglob("*.parquet")) == 1
    if kind == "truncate":
        raw = path.read_bytes()
        path.write_bytes(raw[: int(rng.integers(1, len(raw)))])
        return "error", path, True, None
    if kind == "wrong_type":
        # A text column, as a writer that mixes types produces.
        frame["score"] = [f"{value:g}" for value in frame["score"]]
        frame.loc[row, "score"] = "twelve"
    elif kind == "out_of_range":
        frame.loc[row, "score"] = 2.0
    elif kind == "duplicate_identical":
        frame = pd.concat([frame, frame.iloc[[row]]], ignore_index=True)
        expectation = "reported"
    elif kind == "duplicate_conflicting":
        clash = frame.iloc[[row]].copy()
        clash["score"] = 1.0 - clash["score"]
        frame = pd.concat([frame, clash], ignore_index=True)
        frame.to_parquet(path, index=False)
        return "error", path, False, root
    elif kind == "stray_header":
        header = pd.DataFrame([{column: column for column in frame.columns}])
        frame = pd.concat([frame.astype(str), header], ignore_index=True)
    elif kind == "empty_model":
        frame.loc[row, "model"] = ""
        expectation = "either" if only_row else "reported"
    elif kind == "null_key":
        frame = frame.astype({"dataset": object})
        frame.loc[row, "dataset"] = None
        expectation = "either" if only_row else "reported"
    elif kind == "nan":
        frame.loc[row, "score"] = float("nan")
        expectation = "either"
    else:
        raise AssertionError(kind)
    frame.to_parquet(path, index=False)
    return expectation, path, False, None


@PROPERTY_SETTINGS
@given(rows=dove_results(), kind=st.sampled_from(DOVE_CORRUPTIONS), seed=st.integers(0, 2**32 - 1), per_example=st.booleans())
def test_dove_corruption_reported(rows, kind, seed, per_example):
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as folder:
        root = write_dove(rows, Path(folder) / "dove")
        clean = ingest(root, "dove", per_example=per_example)
        expectation, changed, whole_file, error_names = corrupt_dove(root, kind, rng)
        check_corrupted_load(
            lambda output: ingest(root, "dove", per_example=per_example, output=output),
            Path(folder) / "out" / "tensor.nc",
            kind=f"{kind} (per_example={per_example})",
            expectation=expectation,
            changed=changed,
            clean=clean,
            whole_file=whole_file,
            error_names=error_names,
        )


# --- Inspect AI logs ---------------------------------------------------------

INSPECT_TEMPLATE_LOG = Path(__file__).resolve().parents[1] / "data" / "inspect" / "generated" / "epochs"


@st.composite
def inspect_runs(draw: st.DrawFn) -> list[dict]:
    """Logs with unique (model, task, template), each with C/I scores of the ``match`` scorer per sample id."""
    models = draw(st.lists(label_names, min_size=1, max_size=2, unique=True))
    tasks = draw(st.lists(label_names, min_size=1, max_size=2, unique=True))
    templates = draw(st.lists(st.sampled_from(["plain", "terse", "verbeux é", "中文"]), min_size=1, max_size=2, unique=True))
    keys = draw(st.lists(st.sampled_from([(m, t, p) for m in models for t in tasks for p in templates]), min_size=1, max_size=3, unique=True))
    runs = []
    for model, task, template in keys:
        ids = draw(st.lists(st.integers(1, 99), min_size=1, max_size=5, unique=True))
        runs.append({"model": model, "task": task, "template": template, "scores": {i: draw(st.sampled_from(["C", "I"])) for i in ids}})
    return runs


def _inspect_template() -> Any:
    pytest.importorskip("inspect_ai")
    from inspect_ai.log import read_eval_log

    path = next(p for p in sorted(INSPECT_TEMPLATE_LOG.iterdir()) if p.suffix == ".eval")
    return read_eval_log(str(path))


def write_inspect(runs: list[dict], root: Path, *, rng: np.random.Generator | None = None, split: bool = False, line_ending: str = "\n") -> Path:
    """Write one log per run (``split``: two logs, each with part of the samples); ``rng`` picks .eval or .json and shuffles samples and JSON keys."""
    from inspect_ai.log import write_eval_log
    from inspect_ai.scorer import Score

    template = _inspect_template()
    sample = template.samples[0]
    root.mkdir(parents=True, exist_ok=True)
    for number, run in enumerate(runs):
        ids = list(run["scores"])
        if rng is not None:
            ids = shuffled(ids, rng)
        parts = [ids[: len(ids) // 2], ids[len(ids) // 2 :]] if split and len(ids) > 1 else [ids]
        for part_number, part in enumerate(parts):
            log = template.model_copy(deep=True)
            log.eval.model = run["model"]
            log.eval.task = run["task"]
            log.eval.task_args = {"template": run["template"]}
            log.samples = [
                sample.model_copy(update={"id": i, "epoch": 1, "scores": {"match": Score(value=run["scores"][i], answer="5")}, "events": [], "messages": []})
                for i in part
            ]
            suffix = ".json" if rng is None else str(rng.choice([".json", ".eval"]))
            path = root / f"log{number}-{part_number}{suffix}"
            write_eval_log(log, str(path))
            if suffix == ".json" and rng is not None:
                payload = shuffle_keys(json.loads(path.read_text(encoding="utf-8")), rng)
                write_json(path, payload, line_ending=line_ending)
    return root


@PROPERTY_SETTINGS
@given(runs=inspect_runs(), seed=st.integers(0, 2**32 - 1), split=st.booleans(), line_ending=st.sampled_from(LINE_ENDINGS))
def test_inspect_round_trip(runs, seed, split, line_ending):
    with tempfile.TemporaryDirectory() as folder:
        canonical = ingest(write_inspect(runs, Path(folder) / "canonical"), "inspect", scorer="match")
        changed = write_inspect(runs, Path(folder) / "changed", rng=np.random.default_rng(seed), split=split, line_ending=line_ending)
        ds = ingest(changed, "inspect", scorer="match")

    assert T.tensor_hash(ds) == T.tensor_hash(canonical)
    assert ds.attrs["manifest"]["rows"]["dropped"] == 0
    for run in runs:
        cell = {"model": run["model"], "task": run["task"], "perturbation": f"task_args.template={run['template']}"}
        assert int(ds["n_correct"].sel(cell)) == sum(value == "C" for value in run["scores"].values())
        assert int(ds["n_total"].sel(cell)) == len(run["scores"])


INSPECT_CORRUPTIONS = (
    "truncate",
    "wrong_type_score",
    "wrong_type_id",
    "unknown_letter",
    "duplicate_identical",
    "duplicate_conflicting",
    "empty_id",
    "nan",
    "sample_error",
    "mixed_line_endings",
)


def corrupt_inspect(root: Path, runs: list[dict], kind: str, rng: np.random.Generator) -> tuple[str, Path, bool, Path | None]:
    """Apply one fault to the first log (JSON format); return the expectation, the changed file, whether it is the whole file, and the path an error must name instead."""
    path = root / "log0-0.json"
    payload = json.loads(path.read_text(encoding="utf-8"))
    samples = payload["samples"]
    row = int(rng.integers(len(samples)))
    only_sample = sum(len(run["scores"]) for run in runs) == 1
    expectation = "error"
    if kind == "truncate":
        truncate_inside_line(path, rng)
        return "error", path, True, None
    if kind == "wrong_type_score":
        samples[row]["scores"]["match"]["value"] = "high"
    elif kind == "wrong_type_id":
        samples[row]["id"] = ["list", "id"]
        write_json(path, payload)
        return "error", path, True, None
    elif kind == "unknown_letter":
        samples[row]["scores"]["match"]["value"] = "Z"
    elif kind == "duplicate_identical":
        samples.insert(row, samples[row])
        expectation = "reported"
    elif kind == "duplicate_conflicting":
        clash = json.loads(json.dumps(samples[row]))
        clash["scores"]["match"]["value"] = "I" if clash["scores"]["match"]["value"] == "C" else "C"
        samples.insert(row, clash)
        write_json(path, payload)
        return "error", path, False, root
    elif kind == "empty_id":
        samples[row]["id"] = ""
    elif kind == "nan":
        samples[row]["scores"]["match"]["value"] = float("nan")
    elif kind == "sample_error":
        samples[row]["error"] = {"message": "model call failed", "traceback": "", "traceback_ansi": ""}
        expectation = "either" if only_sample else "reported"
    elif kind == "mixed_line_endings":
        mix_line_endings(path)
        return "same", path, False, None
    else:
        raise AssertionError(kind)
    write_json(path, payload)
    return expectation, path, False, None


@PROPERTY_SETTINGS
@given(runs=inspect_runs(), kind=st.sampled_from(INSPECT_CORRUPTIONS), seed=st.integers(0, 2**32 - 1))
def test_inspect_corruption_reported(runs, kind, seed):
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as folder:
        root = write_inspect(runs, Path(folder) / "logs")
        clean = ingest(root, "inspect", scorer="match")
        expectation, changed, whole_file, error_names = corrupt_inspect(root, runs, kind, rng)
        check_corrupted_load(
            lambda output: ingest(root, "inspect", scorer="match", output=output),
            Path(folder) / "out" / "tensor.nc",
            kind=kind,
            expectation=expectation,
            changed=changed,
            clean=clean,
            whole_file=whole_file,
            error_names=error_names,
        )
