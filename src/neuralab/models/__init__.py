"""Models: the registry (`MODELS`, `build_model`), the specs they adapt to, and one module per
family. Importing this package registers every built-in model."""

from neuralab.models import (  # noqa: F401  (imported for their registrations)
    airbench,
    alexnet,
    conv4,
    lenet,
    linear,
    ngram,
    recurrent,
    resnet,
    textcnn,
    transformer,
)
from neuralab.models.registry import MODELS, InputSpec, TextSpec, build_model, model_input

__all__ = ["MODELS", "InputSpec", "TextSpec", "build_model", "model_input"]
