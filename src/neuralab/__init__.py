"""neuralab: train, evaluate, predict, explain and attack the classic neural networks.

Example:
    >>> import neuralab
    >>> run = neuralab.train("mnist-best")
    >>> neuralab.load(run.run_dir).predict(["digit.png"], top_k=3)
    >>> neuralab.explain(run.run_dir, ["digit.png"], method="integrated-gradients")
    >>> neuralab.evaluate(run.run_dir, attack="pgd", eps=0.3, steps=40)["points"]
    >>> small = neuralab.distill(run.run_dir, "mnist-fast")  # a student taught by the run
    >>> neuralab.prune(run.run_dir, sparsity=0.8, finetune=1)["accuracy"]
    >>> neuralab.quantize(run.run_dir).accuracy_int8   # int8 ONNX, kept only if accurate
    >>> agent = neuralab.rl.train("cartpole-dqn")      # reinforcement learning (neuralab.rl)
"""

from neuralab import rl
from neuralab.api import Run, distill, evaluate, load, prune, resume, train
from neuralab.attribution.explain import Explanation, explain
from neuralab.config import RunConfig, resolve_config
from neuralab.data import DATASETS, load_dataset
from neuralab.inference.export import ExportResult, export
from neuralab.inference.fewshot import classify_by_example
from neuralab.inference.predict import Predictor
from neuralab.inference.quantize import QuantizeResult, quantize
from neuralab.models import MODELS, InputSpec, build_model
from neuralab.run.lrfind import lr_find

__all__ = [
    "DATASETS",
    "MODELS",
    "Explanation",
    "ExportResult",
    "InputSpec",
    "Predictor",
    "QuantizeResult",
    "Run",
    "RunConfig",
    "build_model",
    "classify_by_example",
    "distill",
    "evaluate",
    "explain",
    "export",
    "load",
    "load_dataset",
    "lr_find",
    "prune",
    "quantize",
    "resolve_config",
    "resume",
    "rl",
    "train",
]
__version__ = "0.1.0"
