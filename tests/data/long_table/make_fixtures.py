"""Write ``examples.parquet``, the per-example Parquet fixture of the long-table loader.

Run from the repository root: ``python tests/data/long_table/make_fixtures.py``.
Two models, two tasks, two prompt templates crossed with two temperatures,
three examples each, with fixed 0/1 scores and predictions.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent


def main() -> None:
    rows = {name: [] for name in ("llm", "task", "template", "temperature", "item", "correct", "output")}
    for number, (model, task, template, temperature, item) in enumerate(
        itertools.product(("m1", "m2"), ("math", "trivia"), ("a", "b"), (0.0, 0.7), (1, 2, 3))
    ):
        correct = (number * 7 + item) % 3 != 0
        rows["llm"].append(model)
        rows["task"].append(task)
        rows["template"].append(template)
        rows["temperature"].append(temperature)
        rows["item"].append(item)
        rows["correct"].append(correct)
        rows["output"].append(f"answer-{(number + item) % 4}")
    pq.write_table(pa.table(rows), HERE / "examples.parquet", row_group_size=10)


if __name__ == "__main__":
    main()
