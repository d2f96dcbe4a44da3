"""The run directory: resolved config, per-epoch history (CSV + JSON), metrics, checkpoints.

<run>/config.yaml            the resolved configuration
<run>/history.csv|json       one row per epoch
<run>/metrics.json           final test metrics
<run>/checkpoint/            the latest checkpoint (see neuralab.checkpoint.format)
<run>/best/                  the best epoch's weights by monitor.metric (runs with validation)
<run>/epochs/epoch-NNNN/     the last monitor.keep_epochs epochs' weights (when asked for)
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from neuralab.checkpoint.format import save_checkpoint, write_text_atomic
from neuralab.checkpoint.meta import RunMeta
from neuralab.checkpoint.sharing import linked_folder, share_identical_files
from neuralab.data.heads import heads_of
from neuralab.train.callbacks import Callback, MetricWatch, Order
from neuralab.train.distributed import is_main_process

HISTORY_FIELDS = [
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "seconds",
    "examples_per_second",
]


def history_csv(history: list[dict], extra: Sequence[str] = ()) -> str:
    """The history as CSV with fixed columns, then `extra` ones (a multitask run's per-head
    metrics); history.json holds every metric a task logs."""
    fields = [*HISTORY_FIELDS, *extra]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: row.get(k, "") for k in fields})
    return buffer.getvalue()


def head_fields(meta: RunMeta) -> list[str]:
    """A multitask run's per-head history columns (train and val loss and accuracy or MAE)."""
    heads = heads_of(meta.task.args) or []
    names = [f"{h.name}_{'accuracy' if h.kind == 'classification' else 'mae'}" for h in heads]
    names += [f"{h.name}_loss" for h in heads]
    return [f"{split}_{name}" for split in ("train", "val") for name in names]


class RunWriter(Callback):
    """Writes the history after every epoch and the checkpoint (weights + resume state).

    `meta` is what a checkpoint needs to rebuild the model without the config: model name and
    arguments, input spec, classes and preprocessing. `files` are extra checkpoint files by
    name (a text run's tokenizer.json).
    """

    order = Order.WRITE

    def __init__(
        self,
        run_dir: str | Path,
        meta: RunMeta,
        files: dict[str, str] | None = None,
        keep_epochs: int = 0,
    ) -> None:
        """keep_epochs: also keep the weights of the last N epochs in <run>/epochs/."""
        self.run_dir, self.meta, self.files = Path(run_dir), meta, files
        self.keep_epochs = keep_epochs

    def on_fit_start(self, trainer) -> None:
        """A run killed between its save and the epoch's snapshot takes it on resuming."""
        epoch = trainer.epoch
        snapshot = self.run_dir / "epochs" / f"epoch-{epoch:04d}"
        if self.keep_epochs and epoch and not snapshot.exists() and is_main_process():
            keep_epoch_snapshot(self.run_dir, epoch, self.keep_epochs)

    def on_epoch_end(self, trainer, logs: dict) -> None:
        if not is_main_process() or trainer.failed:  # never save a non-finite epoch
            return
        write_text_atomic(self.run_dir / "history.json", json.dumps(trainer.history, indent=2))
        table = history_csv(trainer.history, head_fields(self.meta))
        write_text_atomic(self.run_dir / "history.csv", table)
        self.save(trainer)
        if self.keep_epochs:
            keep_epoch_snapshot(self.run_dir, int(logs["epoch"]), self.keep_epochs)

    def on_fit_end(self, trainer) -> None:
        """When a callback (early stopping) put an earlier epoch's weights back, they become
        the run's final checkpoint; otherwise the last epoch's is already on disk."""
        if trainer.restored_epoch is not None and is_main_process():
            self.save(trainer, weights_from_epoch=trainer.restored_epoch)

    def save(self, trainer, **progress: Any) -> None:
        meta = self.meta.with_progress(epoch=trainer.epoch, step=trainer.step, **progress)
        state = trainer.state_dict()
        save_checkpoint(
            self.run_dir / "checkpoint", trainer.eval_model, meta.to_dict(), state, self.files
        )
        # best/ (written just before, by BestCheckpoint) holds the same weights when this
        # epoch is the best one: one copy on disk.
        share_identical_files(self.run_dir / "checkpoint", self.run_dir / "best")


SNAPSHOT_FILES = ("model.safetensors", "meta.json", "tokenizer.json")


def keep_epoch_snapshot(run_dir: Path, epoch: int, keep: int) -> Path:
    """Link the fresh checkpoint's weights into <run>/epochs/epoch-NNNN/ and drop all but the
    newest `keep` snapshots. Hard links cost no copy: a later save renames a new checkpoint
    folder into place, so the linked files are never overwritten in place."""
    folder = run_dir / "epochs" / f"epoch-{epoch:04d}"
    linked_folder(run_dir / "checkpoint", folder, SNAPSHOT_FILES)
    snapshots = sorted(p for p in folder.parent.glob("epoch-*") if p.is_dir())
    for old in snapshots[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


class BestCheckpoint(Callback):
    """Keeps `<run>/best/`: the weights of the epoch with the best `metric` so far (written
    when it improves by more than `min_delta`, as early stopping judges it; weights, meta and
    extra files, no resume state)."""

    order = Order.MONITOR

    def __init__(
        self,
        run_dir: str | Path,
        metric: str,
        meta: RunMeta,
        files: dict[str, str] | None = None,
        min_delta: float = 0.0,
    ) -> None:
        self.folder, self.meta, self.files = Path(run_dir) / "best", meta, files
        self.watch = MetricWatch(metric, min_delta)

    def on_epoch_end(self, trainer, logs: dict) -> None:
        if trainer.failed:
            return
        if self.watch.update(logs) and is_main_process():
            best = {"metric": self.watch.metric, "value": self.watch.best}
            meta = self.meta.with_progress(epoch=logs["epoch"], step=trainer.step, best=best)
            save_checkpoint(self.folder, trainer.eval_model, meta.to_dict(), files=self.files)

    def state_dict(self) -> dict:
        return self.watch.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.watch.load_state_dict(state)


class TensorBoardLogger(Callback):
    """TensorBoard event files in `<run>/tensorboard/`: every history field per epoch, the
    learning rate and running training loss every `every` steps, the model graph (when
    tracing works) and a sample of the inputs (an image grid, or a few texts).

    `tensorboard --logdir runs` shows every run side by side.
    """

    order = Order.LOG

    def __init__(
        self,
        run_dir: str | Path,
        examples: torch.Tensor | list[str],
        graph_input: torch.Tensor | None = None,
        every: int = 50,
    ) -> None:
        """examples: uint8 images (N, C, H, W) or texts, shown once; graph_input: one batch
        in the model's input format, traced for the graph (None: no graph)."""
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))
        self.examples, self.graph_input, self.every = examples, graph_input, every
        self.graph_note = "model graph written"

    def on_fit_start(self, trainer) -> None:
        if not is_main_process():
            return
        if isinstance(self.examples, list):
            shown = "\n\n".join(f"- {text[:300]}" for text in self.examples[:8])
            self.writer.add_text("examples", shown)
        else:
            self.writer.add_images("examples", self.examples[:32])
        if self.graph_input is not None:
            self.add_graph(trainer.eval_model)

    def add_graph(self, model: torch.nn.Module) -> None:
        """Trace in eval mode with the random state set aside: tracing must not change what
        training draws next (a resumed run would otherwise differ from an uninterrupted one)."""
        training = model.training
        model.eval()
        try:
            with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit.trace's deprecation notices
                self.writer.add_graph(model, self.graph_input)
        except Exception as error:  # tracing fails for some models; training must not
            self.graph_note = f"model graph not traced ({type(error).__name__})"
        finally:
            model.train(training)

    def on_step_end(self, trainer) -> None:
        if trainer.step % self.every or not is_main_process():
            return
        metrics, _ = trainer.running_metrics()
        for name, value in metrics.items():
            self.writer.add_scalar(f"step/train_{name}_running", value, trainer.step)
        self.writer.add_scalar("step/lr", trainer.optimizer.param_groups[0]["lr"], trainer.step)

    def on_epoch_end(self, trainer, logs: dict) -> None:
        if not is_main_process():
            return
        for key, value in logs.items():
            if key != "epoch" and isinstance(value, int | float):
                self.writer.add_scalar(f"epoch/{key}", value, logs["epoch"])
        self.writer.flush()

    def on_fit_end(self, trainer) -> None:
        self.writer.close()


def have_tensorboard() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def tensorboard_callbacks(
    setting: str, run_dir: Path, inputs: Any, device: torch.device, log: Callable[[str], None]
) -> list[Callback]:
    """The TensorBoard logger when `setting` (train.tensorboard) asks for it (auto: when
    installed); `inputs` (ImageInputs or TextInputs) give the graph's input and the examples
    shown; `log` takes the line that says where the events go."""
    if setting == "off" or not is_main_process():
        return []
    if not have_tensorboard():
        if setting == "on":
            raise ImportError(
                "train.tensorboard=on needs the tensorboard package: pip install tensorboard"
            )
        log("track  tensorboard not installed (pip install tensorboard to log runs for it)")
        return []
    graph_input = inputs.sample_batch(8, device)[0]  # 8 examples: enough to trace the graph
    log(f"track  tensorboard --logdir {run_dir / 'tensorboard'}")
    return [TensorBoardLogger(run_dir, inputs.examples(), graph_input)]


def draw_curves(run_dir: Path, history: list[dict]) -> str:
    """curves.png of the run (when matplotlib is installed); returns the log line."""
    from neuralab.inference import plots

    if not plots.have_matplotlib():
        return f"plots  skipped: {plots.PLOTS_EXTRA} draws curves.png and `neuralab report`"
    plots.history_figure(history, run_dir / "curves.png")
    return f"plots  {run_dir / 'curves.png'}; `neuralab report {run_dir}` adds the rest"
