"""Writes real inspect_ai eval logs for tests/test_import_inspect.py: one small task, its mock model answering as told.

Run as ``python -m tests.inspect_task OUT_DIR FORMAT ANSWERS [EPOCHS]`` (ANSWERS comma-separated, one per sample and
epoch, in order). Token usage is set on every answer, so the mock model counts no tokens (inspect
would fetch a tokenizer from the internet for that).
"""

from __future__ import annotations

import sys

from inspect_ai import Task, eval
from inspect_ai.dataset import Sample
from inspect_ai.model import ModelOutput, ModelUsage, get_model
from inspect_ai.scorer import includes, match
from inspect_ai.solver import generate

QUESTIONS = [("add-2-2", "What is 2 + 2?", "4"), ("add-3-3", "What is 3 + 3?", "6"), ("add-1-1", "What is 1 + 1?", "2"),
             ("add-4-5", "What is 4 + 5?", "9"), ("add-2-5", "What is 2 + 5?", "7")]


def _answer(text: str) -> ModelOutput:
    out = ModelOutput.from_content(model="mockllm/model", content=text)
    out.usage = ModelUsage(input_tokens=8, output_tokens=1, total_tokens=9)
    return out


def main(out: str, log_format: str, answers: str, epochs: int = 1) -> None:
    outputs = [_answer(a) for a in answers.split(",")]
    task = Task(dataset=[Sample(input=q, target=t, id=i) for i, q, t in QUESTIONS], solver=[generate()],
                scorer=[match(), includes()], name="additions", epochs=epochs)
    model = get_model("mockllm/model", custom_outputs=outputs)
    (log,) = eval(task, model=model, log_dir=out, log_format=log_format, display="none", max_samples=1)
    print(log.location)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], *(int(a) for a in sys.argv[4:]))
