"""Write small lm-evaluation-harness logs for the lm-eval loader tests.

The script runs the real harness (package ``lm-eval``, tested with 0.4.13)
through its command line on two tiny local tasks, with a rule-based model
registered here, so nothing is downloaded:

* ``tiny_arith_plain`` and ``tiny_arith_terse`` ask the same 8 sums with two
  prompt templates (generate_until, metric ``exact_match``, two filters:
  ``none`` and ``first-number``);
* ``tiny_capital`` asks 6 multiple-choice questions (metric ``acc``).

Runs: zero-shot with random seed 0, 2-shot with seed 0, and 2-shot with
seed 1 (different few-shot draws). Each run writes
``generated/<run>/rule__model/results_<timestamp>.json`` and one
``samples_<task>_<timestamp>.jsonl`` per task.

Rerun from the repository root (about 20 s on a laptop CPU)::

    pip install lm-eval==0.4.13
    python tests/data/lm_eval/generate.py

The old ``generated/`` folder is replaced. Timestamps and the environment
dump in the results files change on every run, and the loader tests count
documents, filters and variants, not timestamps.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "generated"

SUMS = [(2, 3), (4, 4), (7, 5), (9, 6), (12, 1), (3, 8), (10, 10), (6, 7)]
FEWSHOT_SUMS = [(1, 1), (2, 2), (5, 3), (8, 1)]
CAPITALS = [
    ("France", "Paris", ["Paris", "Lyon", "Nice"]),
    ("Italy", "Rome", ["Milan", "Rome", "Turin"]),
    ("Spain", "Madrid", ["Seville", "Valencia", "Madrid"]),
    ("Japan", "Tokyo", ["Tokyo", "Osaka", "Kyoto"]),
    ("Canada", "Ottawa", ["Toronto", "Ottawa", "Calgary"]),
    ("Kenya", "Nairobi", ["Mombasa", "Kisumu", "Nairobi"]),
]

COMMON_ARITH = """dataset_path: json
dataset_kwargs:
  data_files:
    test: arith_test.jsonl
    train: arith_train.jsonl
test_split: test
fewshot_split: train
output_type: generate_until
doc_to_target: "{{answer}}"
generation_kwargs:
  until: ["\\n"]
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
filter_list:
  - name: none
    filter:
      - function: take_first
  - name: first-number
    filter:
      - function: regex
        regex_pattern: "(-?[0-9]+)"
      - function: take_first
metadata:
  version: 1.0
"""

TASKS = {
    "tiny_arith_plain.yaml": "task: tiny_arith_plain\n" 'doc_to_text: "Question: What is {{a}} plus {{b}}?\\nAnswer:"\n' + COMMON_ARITH,
    "tiny_arith_terse.yaml": "task: tiny_arith_terse\n" 'doc_to_text: "{{a}}+{{b}}="\n' + COMMON_ARITH,
    "tiny_capital.yaml": """task: tiny_capital
dataset_path: json
dataset_kwargs:
  data_files:
    test: capital_test.jsonl
    train: capital_test.jsonl
test_split: test
fewshot_split: train
output_type: multiple_choice
doc_to_text: "What is the capital of {{country}}?"
doc_to_choice: "{{choices}}"
doc_to_target: "{{label}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
""",
}

RUNS = [
    ("zero_shot_seed0", 0, 0),
    ("two_shot_seed0", 2, 0),
    ("two_shot_seed1", 2, 1),
]


def _digest(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


@register_model("rule")
class RuleLM(LM):
    """Deterministic stand-in model: adds the last two numbers in the prompt.

    It answers wrongly (off by one) when a hash of the whole prompt is
    divisible by 3, so prompt templates and few-shot draws change its scores
    the way they change a real model's.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__()

    @classmethod
    def create_from_arg_string(cls, arg_string, additional_config=None):
        return cls()

    def generate_until(self, requests, disable_tqdm: bool = False):
        answers = []
        for request in requests:
            prompt = request.arguments[0]
            numbers = [int(n) for n in re.findall(r"\d+", prompt)]
            total = sum(numbers[-2:]) if len(numbers) >= 2 else 0
            if _digest(prompt) % 3 == 0:
                total += 1
            answers.append(f" {total} (computed)")
        return answers

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        results = []
        for request in requests:
            context, continuation = request.arguments
            results.append((-(_digest(context + "|" + continuation) % 100) / 10.0, False))
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        return [-float(_digest(request.arguments[0]) % 100) for request in requests]


def _write_tasks(folder: Path) -> None:
    with open(folder / "arith_test.jsonl", "w", encoding="utf-8") as handle:
        for a, b in SUMS:
            handle.write(json.dumps({"a": a, "b": b, "answer": str(a + b)}) + "\n")
    with open(folder / "arith_train.jsonl", "w", encoding="utf-8") as handle:
        for a, b in FEWSHOT_SUMS:
            handle.write(json.dumps({"a": a, "b": b, "answer": str(a + b)}) + "\n")
    with open(folder / "capital_test.jsonl", "w", encoding="utf-8") as handle:
        for country, capital, choices in CAPITALS:
            handle.write(json.dumps({"country": country, "choices": choices, "label": choices.index(capital)}) + "\n")
    for name, text in TASKS.items():
        (folder / name).write_text(text, encoding="utf-8")


def main() -> None:
    from lm_eval.__main__ import cli_evaluate

    if OUTPUT.exists():
        shutil.rmtree(OUTPUT)
    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        _write_tasks(work_dir)
        previous = Path.cwd()
        os.chdir(work_dir)
        try:
            for run_name, shots, seed in RUNS:
                sys.argv = [
                    "lm_eval",
                    "run",
                    "--model", "rule",
                    "--model_args", "model=rule",
                    "--tasks", "tiny_arith_plain,tiny_arith_terse,tiny_capital",
                    "--include_path", str(work_dir),
                    "--num_fewshot", str(shots),
                    "--seed", f"{seed},1234,1234,{1234 + seed}",
                    "--output_path", str(OUTPUT / run_name),
                    "--log_samples",
                ]
                cli_evaluate()
        finally:
            os.chdir(previous)


if __name__ == "__main__":
    main()
