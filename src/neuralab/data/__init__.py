"""Datasets: the registry, `load_dataset`, and the built-in dataset families.

Importing this package registers every built-in dataset (`vision`, `folder`, `text`, `tables`).
"""

from neuralab.data import folder, omniglot, tables, text, vision  # noqa: F401  (imported for their registrations)
from neuralab.data.dataset import (
    DATASETS,
    DataError,
    ImageDataset,
    Split,
    TextDataset,
    TextSplit,
    default_data_dir,
    load_dataset,
)

__all__ = [
    "DATASETS",
    "DataError",
    "ImageDataset",
    "Split",
    "TextDataset",
    "TextSplit",
    "default_data_dir",
    "load_dataset",
]
