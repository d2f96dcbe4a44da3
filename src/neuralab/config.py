"""The typed run configuration: recipe files + flags + `--set key=value` overrides, with unknown
keys and wrong types rejected by field path (and the nearest valid key suggested)."""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from neuralab.errors import ConfigError  # raised here, and importable from here as before


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def explicit_fields(section: BaseModel) -> dict[str, Any]:
    """The fields of `section` that were set explicitly to something other than their default.

    Factories that declare their own settings (optimizers, schedules) get only these, so a
    setting the chosen factory does not take is an error rather than silently ignored. A field
    set to its default counts as unset: a run directory's config.yaml holds every field, and
    resuming from it must not trip over, say, adam's unused `momentum: 0.0`.

    Example: `explicit_fields(OptimConfig(name="adam", momentum=0.0))` is {'name': 'adam'}.
    """
    fields = type(section).model_fields
    return {
        name: getattr(section, name)
        for name in fields
        if name in section.model_fields_set
        and getattr(section, name) != fields[name].get_default(call_default_factory=True)
    }


class DataConfig(Section):
    name: str = "mnist"
    data_dir: str | None = None  # None: NEURALAB_DATA, else ~/.cache/neuralab
    download: bool = True
    val_split: float = Field(0.0, ge=0.0, lt=1.0)
    options: dict[str, Any] = Field(default_factory=dict)  # dataset-specific, e.g. image_size


class AugmentConfig(Section):
    crop_padding: int = Field(0, ge=0)
    # random: each image mirrored with probability 1/2 every epoch; alternate: a random half in
    # the first epoch, then every image mirrored in every other epoch (airbench94's scheme, less
    # repetition than independent coin flips). YAML true/false mean random/off.
    flip: Literal["off", "random", "alternate"] = "off"
    cutout: int = Field(0, ge=0)

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

    @model_validator(mode="after")
    def one_weight_average(self) -> TrainConfig:
        if self.lookahead_every and self.ema_decay:
            raise ValueError(
                "train.lookahead_every and train.ema_decay both average the weights: set one"
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
    data: DataConfig = Field(default_factory=DataConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    out: str | None = None  # run directory; None: runs/<dataset>-<model>-<time>


# Free-form dictionaries: their keys are checked by the dataset or model factory instead.
FREE_FORM = {("data", "options"), ("model", "args"), ("optim", "train_until")}


def recipe_names() -> list[str]:
    """Names of the recipes that ship inside the package."""
    folder = resources.files("neuralab") / "recipes"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def read_recipe(name_or_path: str) -> tuple[dict, str]:
    """The raw mapping of a shipped recipe name or a YAML path, and where it came from."""
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"recipe file {path} does not exist")
        origin = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise ConfigError(
                f"{origin} is not UTF-8 text (byte {error.object[error.start]:#04x} at offset "
                f"{error.start}); a recipe is a YAML file"
            ) from None
    else:
        names = recipe_names()
        if name_or_path not in names:
            from neuralab.registry import unknown_name_message

            raise ConfigError(unknown_name_message("recipe", name_or_path, names))
        text = (resources.files("neuralab") / "recipes" / f"{name_or_path}.yaml").read_text("utf-8")
        origin = f"recipe {name_or_path}"
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{origin} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{origin} must be a mapping of sections (data, model, ...), found {type(raw).__name__}"
        )
    return raw, origin


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.epochs=3` → (['train', 'epochs'], 3); the value is read as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(
            f"override {text!r} must look like section.field=value, e.g. train.epochs=3"
        )
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key.strip().split("."), parsed


def apply_override(raw: dict, path: list[str], value: Any) -> None:
    """Set raw[path...] = value, checking each key against the schema first."""
    check_path(path)
    node = raw
    for key in path[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {'.'.join(path)}: {key} is not a section")
    node[path[-1]] = value


def check_path(path: list[str]) -> None:
    """Raise ConfigError naming the first unknown key of a dotted path and the nearest valid one."""
    model: type[BaseModel] = RunConfig
    for depth, key in enumerate(path):
        fields = model.model_fields
        if key not in fields:
            where = ".".join(path[:depth]) or "the top level"
            raise ConfigError(
                unknown_key_message(".".join(path[: depth + 1]), key, list(fields), where)
            )
        if tuple(path[: depth + 1]) in FREE_FORM:
            return
        annotation = fields[key].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        elif depth < len(path) - 1:
            raise ConfigError(
                f"{'.'.join(path)}: {'.'.join(path[: depth + 1])} is a value, not a section"
            )


def unknown_key_message(full: str, key: str, valid: list[str], where: str) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown config key {full!r} in {where}.{hint} Valid keys: {', '.join(valid)}"


def build_config(raw: dict, origin: str = "config") -> RunConfig:
    """Validate a raw mapping into a RunConfig, translating pydantic errors into field paths."""
    for path in iter_paths(raw):
        try:
            check_path(path)
        except ConfigError as error:  # overrides were checked on entry: this key is the file's
            raise ConfigError(f"{origin}: {error}") from None
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as error:
        lines = [f"{origin}: invalid configuration"]
        for item in error.errors():
            field = ".".join(str(p) for p in item["loc"])
            lines.append(f"  {field}: {item['msg']} (found {item.get('input')!r})")
        raise ConfigError("\n".join(lines)) from None


def iter_paths(raw: dict, prefix: tuple[str, ...] = ()) -> list[list[str]]:
    """Every leaf key path of a nested mapping, stopping at free-form dictionaries."""
    paths = []
    for key, value in raw.items():
        path = (*prefix, str(key))
        if isinstance(value, dict) and path not in FREE_FORM:
            paths.extend(iter_paths(value, path) or [list(path)])
        else:
            paths.append(list(path))
    return paths


# Keyword → field for `neuralab.train(data=..., lr=...)` and the CLI's flags of the same names.
SHORTCUTS = {
    "data": "data.name",
    "model": "model.name",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "lr": "optim.lr",
    "seed": "train.seed",
    "deterministic": "train.deterministic",
    "data_dir": "data.data_dir",
    "out": "out",
}


def config_from(recipe: str | None, overrides: list[str] | None, **shortcuts: Any) -> RunConfig:
    """`resolve_config` with fields named by their SHORTCUTS keyword (None keeps the recipe's)."""
    return resolve_config(recipe, overrides, **{SHORTCUTS[k]: v for k, v in shortcuts.items()})


def resolve_config(
    recipe: str | None = None, overrides: list[str] | None = None, **fields: Any
) -> RunConfig:
    """Recipe (name or path) ← `fields` given as dotted keys ← `--set` overrides, validated.

    Example:
        >>> resolve_config("mnist-lenet-classic", ["train.epochs=1"]).train.epochs
        1.0
    """
    raw, origin = read_recipe(recipe) if recipe else ({}, "defaults")
    for key, value in fields.items():
        if value is not None:
            apply_override(raw, key.split("."), value)
    for text in overrides or []:
        apply_override(raw, *parse_override(text))
    return build_config(raw, origin)


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML (what a run directory stores as config.yaml)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
