"""docs/ARCHITECTURE.md's four "Adding things" examples are real code: run in a fresh process,
they register a task, a model, a dataset and a CLI verb that then work end to end."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).parent.parent / "docs" / "ARCHITECTURE.md"

CHECK = """
import torch
from neuralab.tasks import TASKS
from neuralab.models import InputSpec, build_model
from neuralab.data import load_dataset

task = TASKS.build("regression")
model = torch.nn.Linear(3, 1)
inputs, targets = torch.randn(8, 3), torch.randn(8)
out = task.step(model, (inputs, targets))
expected = torch.nn.functional.mse_loss(model(inputs).squeeze(1), targets)
torch.testing.assert_close(out.loss, expected)
assert out.count == 8 and set(task.summarize({k: float(v) for k, v in out.sums.items()}, 8)) == {
    "loss", "mae"}

dataset = load_dataset("stripes", size=200)
assert dataset.classes == ["horizontal", "vertical"] and len(dataset.test) == 100
spec = InputSpec(1, 16, 16, 2)
net = build_model("tiny-cnn", spec, width=8)
assert net(torch.zeros(4, 1, 16, 16)).shape == (4, 2)
try:
    build_model("tiny-cnn", spec, widht=8)
except Exception as error:
    assert "did you mean 'width'" in str(error), error
else:
    raise AssertionError("a misspelt model argument was accepted")
"""


def code_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_the_doc_shows_one_example_of_each_addition() -> None:
    blocks = code_blocks()
    assert len(blocks) == 4
    for block, name in zip(blocks, ("TASKS", "MODELS", "DATASETS", "add_params"), strict=True):
        assert name in block
        assert len(block.strip().splitlines()) <= 40  # short enough to read at a glance


def test_the_examples_run_and_plug_in(tmp_path: Path) -> None:
    task, model, dataset, verb = code_blocks()
    verb_module = tmp_path / "params_verb.py"
    verb_module.write_text(verb, encoding="utf-8")
    script = "\n".join(
        [
            task,
            model,
            dataset,
            CHECK,
            "import argparse, params_verb",
            "sub = argparse.ArgumentParser().add_subparsers(dest='command')",
            "params_verb.add_params(sub)",
            "print('ok')",
        ]
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
