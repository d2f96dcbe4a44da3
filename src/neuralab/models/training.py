"""How each model family trains when no recipe says otherwise: its optimizer, schedule,
batch size and regularisation, and a budget of optimizer steps from which run/defaults.py
derives the epochs for the data at hand. A family module passes its entry to
`MODELS.register(..., training=...)`.

The values are the ones our recipes found for each family (see the recipe named beside each),
made independent of the dataset: the recipes stay the tuned statement for their data. The
text families' step budgets are small (about 7 epochs of 5,000 sentences): on small sets more
steps overfit (BENCHMARKS.md, "Defaults before and after").
"""

from __future__ import annotations

# Plain convnets and MLPs (mnist-best, digits-best): Nesterov SGD, one-cycle, label smoothing.
CONVNET = {
    "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
    "schedule": {"name": "onecycle", "pct_start": 0.25},
    "train": {"batch_size": 128, "label_smoothing": 0.1},
    "steps": 3000,
}
# The whitened airbench net with its default arguments (cifar10-airbench): Nesterov SGD,
# one-cycle, label smoothing, lookahead.
AIRBENCH = {
    "optim": {
        "name": "sgd",
        "lr": 0.75,
        "momentum": 0.85,
        "nesterov": True,
        "weight_decay": 0.00133,
    },  # fmt: skip
    "schedule": {"name": "onecycle", "pct_start": 0.23},
    "train": {"batch_size": 512, "label_smoothing": 0.2, "lookahead_every": 5},
    "steps": 1000,
}
# ResNet-18: Nesterov SGD with weight decay, cosine after a warmup epoch.
DEEP_CONVNET = {
    "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
    "schedule": {"name": "cosine", "warmup_epochs": 1},
    "train": {"batch_size": 128, "label_smoothing": 0.1},
    "steps": 4000,
}
# AlexNet: no batch norm, and SGD at any one rate stalls on small sets (measured: chance after
# 320 steps at 0.01 and at 0.05); Adam starts it. With weight decay 5e-4 it stalled at chance
# too on some runs (500 MNIST digits, loss ln 5 throughout); 3e-4 without decay: 97.9%.
ALEXNET = {
    "optim": {"name": "adam", "lr": 0.0003},
    "schedule": {"name": "onecycle", "pct_start": 0.25},
    "train": {"batch_size": 128},
    "steps": 3000,
}
# TextCNN (imdb-textcnn): Adam, one-cycle; fp32 (embedding lookups gain nothing from bf16).
TEXT_CNN = {
    "optim": {"name": "adam", "lr": 0.002},
    "schedule": {"name": "onecycle", "pct_start": 0.2},
    "train": {"batch_size": 64, "precision": "fp32"},
    "steps": 500,
}
# RNN / LSTM / GRU (imdb-lstm): Adam, one-cycle, gradients clipped.
RECURRENT = {
    "optim": {"name": "adam", "lr": 0.003},
    "schedule": {"name": "onecycle", "pct_start": 0.2},
    "train": {"batch_size": 64, "grad_clip": 1.0, "precision": "fp32"},
    "steps": 550,
}
# Transformer (imdb-transformer): AdamW with weight decay, one-cycle, gradients clipped.
TRANSFORMER = {
    "optim": {"name": "adamw", "lr": 0.001, "weight_decay": 0.01},
    "schedule": {"name": "onecycle", "pct_start": 0.2},
    "train": {"batch_size": 64, "grad_clip": 1.0, "precision": "fp32"},
    "steps": 550,
}
# Hashed n-gram bags (imdb-ngram): Adagrad on sparse rows, cosine.
NGRAM = {
    "optim": {"name": "adagrad", "lr": 0.1},
    "schedule": {"name": "cosine"},
    "train": {"batch_size": 64, "precision": "fp32"},
    "steps": 800,
}
