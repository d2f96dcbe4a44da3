"""neuralab: train, evaluate, predict and explain the classic neural networks.

Example:
    >>> import neuralab
    >>> run = neuralab.train("mnist-best")
    >>> neuralab.load(run.run_dir).predict(["digit.png"], top_k=3)
    >>> agent = neuralab.rl.train("cartpole-dqn")      # reinforcement learning (neuralab.rl)
"""

from neuralab import rl
from neuralab.api import Run, load, resume, train
from neuralab.config import RunConfig, resolve_config
from neuralab.data import DATASETS, load_dataset
from neuralab.inference.evaluation import evaluate
from neuralab.inference.export import ExportResult, export
from neuralab.inference.fewshot import classify_by_example
from neuralab.inference.predict import Predictor
from neuralab.models import MODELS, InputSpec, build_model
from neuralab.run.lrfind import lr_find

__all__ = [
    "DATASETS",
    "MODELS",
    "ExportResult",
    "InputSpec",
    "Predictor",
    "Run",
    "RunConfig",
    "build_model",
    "classify_by_example",
    "evaluate",
    "export",
    "load",
    "load_dataset",
    "lr_find",
    "resolve_config",
    "resume",
    "rl",
    "train",
]
__version__ = "0.1.0"
