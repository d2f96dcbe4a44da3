"""What is learned: the Task contract (tasks/base.py) and its registry, `TASKS`.

Each task module registers itself when imported below.
"""

from neuralab.tasks import classification, fewshot, multitask  # noqa: F401  (imported for registrations)
from neuralab.tasks.base import TASKS, Batch, StepOutput, Task, split_tensors

__all__ = ["TASKS", "Batch", "StepOutput", "Task", "split_tensors"]
