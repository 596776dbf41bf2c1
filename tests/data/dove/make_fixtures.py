"""Write the small DOVE fixtures in the published column layout.

Run from the repository root: ``python tests/data/dove/make_fixtures.py``.
It writes ``lite/`` (DOVE_Lite spelling, ``dimensions_1: enumerator`` ...) and
``full/`` (full DOVE spelling, ``dimensions_1: mc_enumerator`` ...), both in
the ``{model}/{language}/{N}_shot/{benchmark}.parquet`` layout, with scores
drawn from a fixed seed so the files are the same on every run.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
MODELS = ("Llama-3.2-1B-Instruct", "OLMoE-1B-7B-0924-Instruct")
BENCHMARKS = ("mmlu.abstract_algebra", "ai2_arc.arc_easy")
SHOTS = (0, 2)
ENUMERATORS = ("capitals", "numbers")
SEPARATORS = ("\n", "; ")
CHOICES_ORDERS = ("none",)
INSTRUCTIONS = (
    "The following are multiple choice questions (with answers) about {topic}.",
    "Answer the question by writing the letter of the correct choice.",
)
EXAMPLES = 3
ANSWERS = ("A", "B", "C", "D")


def rows(model_index: int, benchmark: str, shots: int, rng: np.random.Generator) -> dict[str, list]:
    columns: dict[str, list] = {name: [] for name in ("dataset", "sample_index", "model", "enumerator", "separator", "choices_order", "instruction", "shots", "generated_text", "closest_answer", "ground_truth", "score")}
    for enumerator, separator, order, instruction in itertools.product(ENUMERATORS, SEPARATORS, CHOICES_ORDERS, INSTRUCTIONS):
        for example in range(EXAMPLES):
            truth = ANSWERS[example % 4]
            correct = bool(rng.random() < 0.4 + 0.3 * model_index)
            answer = truth if correct else ANSWERS[(example + 1 + int(rng.integers(0, 3))) % 4]
            columns["dataset"].append(benchmark)
            columns["sample_index"].append(example)
            columns["model"].append(MODELS[model_index])
            columns["enumerator"].append(enumerator)
            columns["separator"].append(separator)
            columns["choices_order"].append(order)
            columns["instruction"].append(instruction)
            columns["shots"].append(shots)
            columns["generated_text"].append(f"The answer is {answer}")
            columns["closest_answer"].append(answer)
            columns["ground_truth"].append(truth)
            columns["score"].append(1.0 if answer == truth else 0.0)
    return columns


def write(kind: str, names: dict[str, str]) -> None:
    rng = np.random.default_rng(20250101)
    for model_index, model in enumerate(MODELS):
        for shots in SHOTS:
            for benchmark in BENCHMARKS:
                columns = rows(model_index, benchmark, shots, rng)
                table = pa.table({names.get(k, k): v for k, v in columns.items()})
                path = HERE / kind / model / "en" / f"{shots}_shot" / f"{benchmark}.parquet"
                path.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(table, path)


def main() -> None:
    write(
        "lite",
        {
            "enumerator": "dimensions_1: enumerator",
            "separator": "dimensions_2: separator",
            "choices_order": "dimensions_3: choices_order",
            "instruction": "dimensions_4: instruction_phrasing_text",
            "shots": "dimensions_5: shots",
        },
    )
    write(
        "full",
        {
            "enumerator": "dimensions_1: mc_enumerator",
            "separator": "dimensions_2: mc_separator",
            "choices_order": "dimensions_3: mc_choices_order",
            "instruction": "dimensions_4: instruction_phrasing_text",
            "shots": "dimensions_5: shots",
        },
    )


if __name__ == "__main__":
    main()
