"""The config's sections: typed pydantic models with unknown keys rejected (`extra="forbid"`)
and every field's unit and meaning beside it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from neuralab.config.base import Section, explicit_fields  # noqa: F401  (re-exported)
from neuralab.config.learning import AdversarialConfig, DistillConfig, SemiConfig


class DataConfig(Section):
    name: str = "mnist"
    data_dir: str | None = None  # None: NEURALAB_DATA, else ~/.cache/neuralab
    download: bool = True
    val_split: float = Field(0.0, ge=0.0, lt=1.0)
    options: dict[str, Any] = Field(default_factory=dict)  # dataset-specific, e.g. image_size
    # Keep only these classes (names or indices), relabelled 0.. in the order given, in every
    # split: e.g. [0, 1, 2, 3, 4] for CIFAR-10's first five. None: all.
    classes: list[str | int] | None = None
    # Keep this many training examples per class (seeded by train.seed, stratified; after
    # val_split is carved): learning-curve experiments. The rest of the training split is
    # dropped (semi-supervised runs use it without labels). None: all.
    labelled_per_class: int | None = Field(None, ge=1)
    # A file of pseudo-labels for the unlabelled examples (train.semi writes it, and sets this
    # for the run that learns from it): those examples join the training split with them.
    pseudo_labels: str | None = None
    # A word-vectors file (train.semi.vectors writes it, and sets this for the stages that
    # start from it): the model's word embeddings start from its vectors, and the tokenizer is
    # trained on the unlabelled texts as well as the training ones.
    word_vectors: str | None = None


class AugmentConfig(Section):
    crop_padding: int = Field(0, ge=0)
    # random: each image mirrored with probability 1/2 every epoch; alternate: a random half in
    # the first epoch, then every image mirrored in every other epoch (airbench94's scheme, less
    # repetition than independent coin flips). YAML true/false mean random/off.
    flip: Literal["off", "random", "alternate"] = "off"
    cutout: int = Field(0, ge=0)
    # Random rotation within ±rotate degrees and scaling within 1 ± scale, per image (applied
    # before the crop; e.g. handwritten characters, as Koch et al.'s affine distortions).
    rotate: float = Field(0.0, ge=0.0, le=180.0)
    scale: float = Field(0.0, ge=0.0, lt=1.0)

    @field_validator("flip", mode="before")
    @classmethod
    def flip_from_bool(cls, value: Any) -> Any:
        return ("random" if value else "off") if isinstance(value, bool) else value


class TokenizerConfig(Section):
    """Text runs only (see data/tokenizer.py): trained on the training split, saved with the run."""

    kind: Literal["word", "bpe", "wordpiece"] = "word"
    vocab_size: int = Field(30_000, ge=3)  # at most this many ids, [PAD] and [UNK] included
    min_frequency: int = Field(2, ge=1)  # rarer words (word) / merges (bpe) are left out
    max_length: int = Field(400, ge=1)  # tokens per text; longer texts are truncated
    truncation: Literal["head", "head+tail"] = "head"  # head+tail: first quarter + last 3/4
    lowercase: bool = True
    cache: bool = True  # reuse the tokenizer and token ids of an earlier identical run


class ModelConfig(Section):
    name: str = "lenet"
    args: dict[str, Any] = Field(default_factory=dict)


class OptimConfig(Section):
    name: str = "sgd"
    lr: float = Field(0.01, gt=0.0)
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    rho: float = Field(0.9, gt=0.0, lt=1.0)  # Adadelta's running-average coefficient
    # `muon` only: step size and momentum of the parameters it does not orthogonalise (biases,
    # norms, the head); unset = lr / momentum.
    other_lr: float | None = Field(None, gt=0.0)
    other_momentum: float | None = Field(None, ge=0.0, lt=1.0)
    # {parameter name or module prefix: epochs}: these parameters train only for the first N
    # epochs, their learning rate decaying linearly from the peak to zero by then, whatever the
    # run's schedule (airbench94_muon's whitening bias: {whiten.bias: 3}).
    train_until: dict[str, float] = Field(default_factory=dict)

    @field_validator("train_until", mode="before")
    @classmethod
    def dotted_names(cls, value: Any) -> Any:
        """`--set optim.train_until.whiten.bias=3` arrives nested; parameter names are dotted."""

        def flat(node: dict, prefix: str) -> dict:
            out = {}
            for key, item in node.items():
                name = f"{prefix}{key}"
                out.update(flat(item, name + ".") if isinstance(item, dict) else {name: item})
            return out

        return flat(value, "") if isinstance(value, dict) else value

    @field_validator("train_until")
    @classmethod
    def positive_horizons(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {name: epochs for name, epochs in value.items() if not epochs > 0}
        if bad:
            raise ValueError(f"optim.train_until needs epochs > 0 for each name, got {bad}")
        return value

    @model_validator(mode="after")
    def muon_fields_need_muon(self) -> OptimConfig:
        stray = [
            f"optim.{k}" for k in ("other_lr", "other_momentum") if getattr(self, k) is not None
        ]
        if stray and self.name != "muon":
            raise ValueError(f"{', '.join(stray)} only apply to optim.name=muon, not {self.name!r}")
        return self


class ScheduleConfig(Section):
    name: str = "constant"
    warmup_epochs: float = Field(0.0, ge=0.0)
    step_size: int = Field(1, ge=1)  # epochs between decays for `step`
    gamma: float = Field(0.1, gt=0.0)  # decay factor for `step`
    pct_start: float = Field(0.25, gt=0.0, lt=1.0)  # fraction of steps spent rising (`onecycle`)
    final_lr_fraction: float = Field(0.0, ge=0.0)  # end lr / peak lr (`cosine`, `onecycle`)


class TrainConfig(Section):
    epochs: float = Field(10, gt=0)  # fractional epochs allowed: training stops mid-epoch
    batch_size: int = Field(64, ge=1)  # global: split evenly over the processes (torchrun)
    eval_batch_size: int = Field(1000, ge=1)
    loss: Literal["cross_entropy", "mse"] = "cross_entropy"
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    grad_clip: float | None = Field(None, gt=0.0)
    # Stop at the first step whose loss or gradients are NaN/Inf, before it changes the weights
    # (auto: every step on a CPU, where the check is free; once per epoch on a GPU, where it
    # would cost a host synchronisation per step).
    finite_check: Literal["auto", "step", "epoch"] = "auto"
    # The same results on every run on this machine: deterministic kernels only
    # (torch.use_deterministic_algorithms, no cuDNN autotuning) and no timing-based engine
    # choice (threads as set, else torch's default; fp32 unless set; layout as set, auto = off).
    deterministic: bool = False
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"
    ema_decay: float | None = Field(None, gt=0.0, lt=1.0)  # weight EMA evaluated instead of raw
    # Test-time augmentation (images only, for flip-invariant data; see tta.py): off | flip |
    # flip+shift. YAML true/false mean flip/off.
    tta: Literal["off", "flip", "flip+shift"] = "off"
    # Lookahead with a slow weight average (airbench94): every `lookahead_every` steps the slow
    # weights move toward the trained ones by 1 - d and the trained weights are reset to them;
    # d ramps up as lookahead_decay * progress³, and the run ends on the slow weights. 0 = off.
    lookahead_every: int = Field(0, ge=0)
    lookahead_decay: float = Field(0.95**5, gt=0.0, lt=1.0)
    threads: int | None = Field(None, ge=1)
    # CPU runs: reuse (glibc's malloc keeps freed blocks for the next step instead of unmapping
    # them, which saves the kernel re-zeroing the activations' memory every step: 1.47x faster
    # airbench training at batch 2,000 on 2 cores; defaults restored after the run) or system.
    cpu_memory: Literal["reuse", "system"] = "reuse"
    # Micro-batches per optimizer step: each process's share of batch_size is cut into this
    # many pieces whose gradients add up to the full batch's mean gradient (saves memory).
    grad_accumulation: int = Field(1, ge=1)
    # With several processes (torchrun): batch norm uses the whole global batch's statistics
    # instead of each process's shard (nn.SyncBatchNorm; GPUs only in torch 2.13).
    sync_bn: bool = False
    # TensorBoard event files in <run>/tensorboard/: auto = when the package is installed.
    tensorboard: Literal["auto", "on", "off"] = "auto"
    # Fine-tuning (run/finetune.py). init_from: a run directory (or checkpoint folder) whose
    # weights start this run: every compatible tensor is loaded, the head is new when the
    # classes differ; model (and a text run's tokenizer) default to the source's.
    init_from: str | None = None
    # Parameters that never train: globs or module prefixes of parameter names, e.g.
    # ["features.*"] or ["embedding"] (`neuralab summary` lists the names).
    freeze: list[str] = Field(default_factory=list)
    # Train only the head for this many epochs first, then every layer (fastai's fine_tune:
    # 1); the body's learning rates follow the schedule over the epochs left.
    fine_tune_epochs: float = Field(0.0, ge=0.0)
    # Discriminative learning rates: the first layer group trains at lr / lr_mult, the head
    # at lr, the groups between spaced geometrically (fastai's fine_tune: 100). 1 = one rate.
    lr_mult: float = Field(1.0, ge=1.0)
    # Adversarial (robust) training of image classifiers: see AdversarialConfig.
    adversarial: AdversarialConfig = Field(default_factory=AdversarialConfig)
    # Weights of Linear/Conv/Embedding layers that are exactly zero when training starts (a
    # pruned run's, via init_from; a resumed run's own) stay zero after every step:
    # `neuralab prune --finetune` sets it (train/pruning.py: KeepPruned).
    keep_zeros: bool = False
    # Knowledge distillation from a trained teacher run: see DistillConfig.
    distill: DistillConfig = Field(default_factory=DistillConfig)
    semi: SemiConfig = Field(default_factory=SemiConfig)

    @model_validator(mode="after")
    def one_weight_average(self) -> TrainConfig:
        if self.lookahead_every and self.ema_decay:
            raise ValueError(
                "train.lookahead_every and train.ema_decay both average the weights: set one"
            )
        if self.fine_tune_epochs >= self.epochs:
            raise ValueError(
                f"train.fine_tune_epochs={self.fine_tune_epochs} trains the head alone for the "
                f"whole run (train.epochs={self.epochs}); make it smaller than train.epochs"
            )
        return self

    @field_validator("tta", mode="before")
    @classmethod
    def tta_from_bool(cls, value: Any) -> Any:
        return ("flip" if value else "off") if isinstance(value, bool) else value

    @field_validator("channels_last", "tensorboard", mode="before")
    @classmethod
    def on_off_from_yaml(cls, value: Any) -> Any:
        """YAML 1.1 reads a bare `on` / `off` as true / false; take them back."""
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


class TaskConfig(Section):
    """What is learned (tasks/): `classification`, `multitask` (several label fields, one
    head each; chosen by the data when data.options.label_field lists several), or few-shot
    learning from episodes: `protonet` (prototypical networks), `maml` (second-order MAML) or
    `fomaml` (first-order).

    An episode is `ways` classes drawn from the split's classes, with `shots` support and
    `queries` query examples each; the classes of the train, val and test splits are disjoint.
    """

    name: str = "classification"
    ways: int = Field(5, ge=2)
    shots: int = Field(1, ge=1)
    queries: int = Field(15, ge=1)  # per class and episode
    episodes: int = Field(1000, ge=1)  # training episodes per epoch
    meta_batch: int = Field(1, ge=1)  # episodes per optimizer step
    # Validation and test episodes (None: as in training). Prototypical networks take any
    # ways and shots at test time; MAML's head has `ways` outputs, so its eval_ways is `ways`.
    eval_ways: int | None = Field(None, ge=2)
    eval_shots: int | None = Field(None, ge=1)
    eval_episodes: int = Field(1000, ge=1)  # validation and test episodes (fixed, seeded)
    # protonet: the embedding size asked of a model that ends in a classifier (num_classes);
    # models without a head (conv4 with head=false) return their features as they are.
    embedding: int = Field(64, ge=1)
    # maml / fomaml: gradient steps on the support set, their step size, and the steps taken
    # when evaluating (None: as in training; Finn et al. adapt longer at test time).
    inner_steps: int = Field(1, ge=1)
    inner_lr: float = Field(0.4, gt=0.0)
    eval_inner_steps: int | None = Field(None, ge=1)
    # maml / fomaml: adapt a meta-batch's episodes together, as one network with T copies of
    # the weights (grouped convolutions; models that are plain conv/BN/ReLU/pool/linear
    # stacks), instead of one at a time in a Python loop: the same numbers, faster on a CPU
    # (BENCHMARKS.md, "Meta-learning"). Other models always adapt one episode at a time.
    vectorize: bool = True
    # multitask (data with several label fields, data.options.label_field: [a, b]): each
    # head's loss weight by field name (missing: 1); the training loss is their weighted sum
    head_weights: dict[str, float] | None = None

    @model_validator(mode="after")
    def settings_fit_the_task(self) -> TaskConfig:
        few_shot = ("ways", "shots", "queries", "episodes", "meta_batch", "eval_ways",
                    "eval_shots", "eval_episodes", "embedding")  # fmt: skip
        adapting = ("inner_steps", "inner_lr", "eval_inner_steps", "vectorize")
        stray = [f"task.{key}" for key in explicit_fields(self) if key in few_shot + adapting]
        if self.name == "classification" and stray:
            raise ValueError(
                f"{', '.join(stray)} only apply to few-shot tasks (task.name=protonet, maml or "
                "fomaml), not classification"
            )
        stray = [f"task.{key}" for key in explicit_fields(self) if key in adapting]
        if self.name == "protonet" and stray:
            raise ValueError(f"{', '.join(stray)} only apply to task.name=maml or fomaml")
        if self.head_weights is not None and self.name not in ("classification", "multitask"):
            raise ValueError(
                "task.head_weights weighs the heads of data with several label fields "
                f"(task multitask), not task.name={self.name}"
            )
        if self.name in ("maml", "fomaml") and self.eval_ways not in (None, self.ways):
            raise ValueError(
                f"MAML's head has task.ways={self.ways} outputs, so it is evaluated "
                f"{self.ways}-way, not task.eval_ways={self.eval_ways}; train a "
                f"{self.eval_ways}-way model (task.ways={self.eval_ways}) for that"
            )
        return self


class MonitorConfig(Section):
    """Watching a validation metric (runs with a validation split, e.g. data.val_split=0.1):
    `<run>/best/` keeps the best epoch's weights, and early stopping can end the run."""

    metric: Literal["val_loss", "val_accuracy"] = "val_loss"
    early_stopping: bool = False
    patience: int = Field(3, ge=1)  # epochs without improvement before stopping
    min_delta: float = Field(0.0, ge=0.0)  # smaller changes do not count as improvement
    restore_best: bool = True  # early stopping ends with the best epoch's weights
    keep_best: bool = True  # write <run>/best/ whenever the metric improves
    # Besides the latest checkpoint/, keep the weights of the last N epochs in
    # <run>/epochs/epoch-NNNN/ (0: none). Each is loadable like a run (evaluate/predict/export).
    keep_epochs: int = Field(0, ge=0)


class RunConfig(Section):
    """Everything that defines a run. `neuralab train --set train.epochs=3` edits one field."""

    description: str = ""
    # The recipe this config started from (set by resolve_config). None: no recipe, so the
    # fields no flag sets follow the model family and the data (run/defaults.py).
    recipe: str | None = None
    data: DataConfig = Field(default_factory=DataConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    out: str | None = None  # run directory; None: runs/<dataset>-<model>-<time>


# Free-form dictionaries: their keys are checked by the dataset or model factory instead.
FREE_FORM = {
    ("data", "options"),
    ("model", "args"),
    ("optim", "train_until"),
    ("task", "head_weights"),
}
