"""Write small Inspect AI logs for the Inspect loader tests.

The script runs Inspect (package ``inspect-ai``, tested with 0.3.285) on a
tiny local task of six sums with its mock model ``mockllm/model``, so
nothing is downloaded and no model provider is called. The mock model gets
a function that answers from the prompt and the temperature: it adds the two
numbers and is off by one when a hash of (prompt, temperature) is divisible
by 3, so prompt templates and temperatures change its scores.

Logs written (``.eval`` files):

* ``generated/grid/``: templates ``plain`` and ``terse`` (task argument
  ``template``) crossed with temperatures 0.0 and 0.7, one epoch each, so
  four logs; every sample is scored by ``match`` and ``includes``;
* ``generated/epochs/``: template ``plain``, temperature 0.7, two epochs,
  one log.

The mock model's token counter is replaced by a word count because Inspect
would otherwise download a tiktoken encoding at run time.

Rerun from the repository root (a few seconds)::

    pip install inspect-ai==0.3.285
    python tests/data/inspect/generate.py

The old ``generated/`` folder is replaced. File names, run ids and
timestamps change on every run, and the loader tests count samples,
scorers and variants, not names.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

from inspect_ai import Task, eval, task
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.model import ModelOutput, get_model
from inspect_ai.scorer import includes, match
from inspect_ai.solver import generate, prompt_template

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "generated"

SUMS = [(2, 3), (4, 4), (7, 5), (9, 6), (12, 1), (3, 8)]
TEMPLATES = {
    "plain": "Question: what is {prompt}? Reply with the number only.",
    "terse": "{prompt} =",
}
TEMPERATURES = (0.0, 0.7)


@task
def tiny_sums(template: str = "plain") -> Task:
    samples = [
        Sample(id=index + 1, input=f"{a} + {b}", target=str(a + b), metadata={"size": "small" if a + b < 10 else "large"})
        for index, (a, b) in enumerate(SUMS)
    ]
    return Task(
        dataset=MemoryDataset(samples, name="tiny_sums"),
        solver=[prompt_template(TEMPLATES[template]), generate()],
        scorer=[match(), includes()],
    )


def answer(messages, tools, tool_choice, config) -> ModelOutput:
    """Return the sum of the last two numbers in the prompt, sometimes off by one."""
    prompt = messages[-1].text
    numbers = [int(n) for n in re.findall(r"\d+", prompt)]
    total = sum(numbers[-2:])
    key = f"{prompt}|{config.temperature}"
    if int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 3 == 0:
        total += 1
    return ModelOutput.from_content(model="mockllm/model", content=str(total))


async def count_words(text: str) -> int:
    """Estimate tokens as words, so the run needs no tokenizer download."""
    return max(1, len(text.split()))


def main() -> None:
    if OUTPUT.exists():
        shutil.rmtree(OUTPUT)
    model = get_model("mockllm/model", custom_outputs=answer)
    # NOTE: mockllm counts input tokens with tiktoken's o200k_base encoding,
    # which tiktoken downloads on first use (inspect-ai 0.3.285). The
    # override keeps the run offline; token counts in these logs are words.
    model.api.count_text_tokens = count_words
    for template in TEMPLATES:
        for temperature in TEMPERATURES:
            eval(
                tiny_sums(template=template),
                model=model,
                temperature=temperature,
                log_dir=str(OUTPUT / "grid"),
                log_format="eval",
                display="none",
            )
    eval(
        tiny_sums(template="plain"),
        model=model,
        temperature=0.7,
        epochs=2,
        log_dir=str(OUTPUT / "epochs"),
        log_format="eval",
        display="none",
    )


if __name__ == "__main__":
    main()
