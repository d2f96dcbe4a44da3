"""Few-shot learning from episodes: prototypical networks and MAML (second- and first-order).

A batch is a meta-batch of episodes (data/episodes.py: support and query images of N classes,
labels 0..N-1). Both tasks turn it into query logits (T, Q, N) and score each episode; an
episode counts as one example, so a run's `accuracy` is the mean over episodes and
`accuracy_ci95` the half-width of its 95% confidence interval (1.96 standard errors).

- `PrototypicalNetworks` (Snell et al. 2017): a class's prototype is the mean embedding of its
  support examples; a query's logits are its negative squared Euclidean distances to them.
- `MAML` (Finn et al. 2017): the model adapts to each episode's support set by `inner_steps`
  gradient steps of size `inner_lr` and is scored on the query set with the adapted weights;
  the meta-gradient flows back through the steps (second order), or treats the inner
  gradients as constants (`first_order`, FOMAML). The episodes of a meta-batch adapt
  together as one network with T copies of the weights (tasks/batched.py), or one at a time
  with torch.func.functional_call and torch.autograd.grad. Batch norm always normalises with the
  statistics of the batch at hand (support or query set: transductive, as in Finn et al.'s
  code); running statistics are neither used nor updated.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from neuralab.data.episodes import Episodes
from neuralab.errors import ConfigError
from neuralab.tasks.base import TASKS, StepOutput, split_tensors
from neuralab.tasks.batched import batched_forward, can_batch

Z_95 = 1.959964  # standard normal quantile of a two-sided 95% interval


def prototype_logits(
    support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor, ways: int
) -> torch.Tensor:
    """Negative squared Euclidean distances of queries to class means.

    Args:
        support: embeddings (T, S, D); support_labels: (T, S) in 0..ways-1.
        query: embeddings (T, Q, D).

    Returns:
        logits (T, Q, ways).
    """
    one_hot = F.one_hot(support_labels, ways).to(support.dtype)  # (T, S, N)
    prototypes = one_hot.transpose(1, 2) @ support  # (T, N, D): sums per class
    prototypes = prototypes / one_hot.sum(1).clamp_min(1).unsqueeze(-1)  # means
    return -(query.unsqueeze(2) - prototypes.unsqueeze(1)).pow(2).sum(-1)


def widened(tensor: torch.Tensor) -> torch.Tensor:
    """Half-precision outputs (autocast) as float32; float32 and float64 as they are."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def episode_ways(batch: Episodes) -> int:
    """N of the episodes in `batch` (labels are 0..N-1)."""
    return int(batch.support_labels.max()) + 1


class EpisodicTask:
    """What both few-shot tasks share: splitting meta-batches, per-episode scoring, summaries."""

    name = "episodic"
    metric_names = ("loss", "accuracy")
    episodic = True
    scores_with_gradients = False  # MAML adapts while it is scored
    tta = "off"  # no test-time augmentation: an exported few-shot model is its plain network

    def split(self, batch: Episodes, parts: int) -> list[Episodes]:
        return [Episodes(*part) for part in split_tensors(batch, parts)]

    def batch_size(self, batch: Episodes) -> int:
        return len(batch.support)

    def logits(self, model: nn.Module, batch: Episodes, training: bool) -> torch.Tensor:
        """Query logits (T, Q, N) of a meta-batch."""
        raise NotImplementedError

    def step(self, model: nn.Module, batch: Episodes) -> StepOutput:
        logits = widened(self.logits(model, batch, training=True))
        losses, sums = episode_sums(logits, batch.query_labels)
        return StepOutput(losses.mean(), sums, len(losses))

    def score(self, model: nn.Module, batch: Episodes) -> dict[str, torch.Tensor]:
        logits = widened(self.logits(model, batch, training=False))
        return episode_sums(logits.detach(), batch.query_labels)[1]

    def summarize(self, sums: dict[str, float], count: int) -> dict[str, float]:
        count = max(1, count)
        mean = sums["accuracy"] / count
        variance = max(0.0, sums["accuracy_squared"] / count - mean * mean)
        variance *= count / max(1, count - 1)  # the sample variance over episodes
        return {
            "loss": sums["loss"] / count,
            "accuracy": mean,
            "accuracy_ci95": Z_95 * math.sqrt(variance / count),
        }

    def predict(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """The model's float32 outputs for a batch of inputs (embeddings for prototypical
        networks, the N-way head before adaptation for MAML)."""
        return model(inputs).float()  # float32, as every task's predict returns


def episode_sums(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Each episode's mean query loss (T,) and the metric sums over episodes."""
    count, queries = labels.shape
    losses = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")
    losses = losses.view(count, queries).mean(1)  # (T,)
    accuracy = (logits.argmax(-1) == labels).double().mean(1)  # (T,)
    sums = {
        "loss": losses.detach().double().sum(),
        "accuracy": accuracy.sum(),
        "accuracy_squared": accuracy.pow(2).sum(),
    }
    return losses, sums


@TASKS.register("protonet", summary="prototypical networks: queries vs. class-mean embeddings")
class PrototypicalNetworks(EpisodicTask):
    """Snell et al. (2017). The model maps images to embeddings (T*(S+Q), D); every support
    and query image of a meta-batch goes through it in one forward pass.

    Example:
        >>> trainer = Trainer(conv4_without_head, optimizer, PrototypicalNetworks())
    """

    name = "protonet"

    def describe(self, model: nn.Module) -> str:
        """The run log's task line."""
        return "protonet: queries scored by negative squared distance to class-mean embeddings"

    def logits(self, model: nn.Module, batch: Episodes, training: bool) -> torch.Tensor:
        count, shots = batch.support.shape[:2]
        queries = batch.query.shape[1]
        images = torch.cat([batch.support.flatten(0, 1), batch.query.flatten(0, 1)])
        embeddings = widened(model(images)).flatten(1)  # (T*(S+Q), D)
        support = embeddings[: count * shots].view(count, shots, -1)
        query = embeddings[count * shots :].view(count, queries, -1)
        return prototype_logits(support, batch.support_labels, query, episode_ways(batch))


@contextlib.contextmanager
def transductive_batch_norm(model: nn.Module) -> Iterator[None]:
    """Batch norm layers normalise with the current batch's statistics and leave their
    running statistics alone (no in-place buffer updates), then are put back."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.training, m.track_running_stats) for m in norms]
    for module in norms:
        module.train()
        module.track_running_stats = False
    try:
        yield
    finally:
        for module, (training, tracking) in zip(norms, saved, strict=True):
            module.train(training)
            module.track_running_stats = tracking


@TASKS.register("maml", summary="MAML: adapt to each episode by gradient steps (second order)")
class MAML(EpisodicTask):
    """Finn et al. (2017). The model is an N-way classifier (its head has `ways` outputs).

    Args:
        ways: N, the model's number of outputs; episodes must be N-way.
        inner_steps: gradient steps on the support set while training.
        inner_lr: their step size.
        eval_inner_steps: steps when scoring and predicting (None: `inner_steps`).
        first_order: drop the second-order terms (FOMAML): the inner gradients are constants.
        vectorize: adapt the episodes of a meta-batch together, as one network with T
            copies of the weights (tasks/batched.py), when the model is a plain stack of
            conv / batch norm / ReLU / pool / linear layers; other models, or False, adapt
            one episode at a time in a Python loop with torch.autograd.grad (the classic
            implementation, kept as the reference the batched one is tested against).
    """

    name = "maml"
    scores_with_gradients = True

    def __init__(
        self,
        ways: int,
        inner_steps: int = 1,
        inner_lr: float = 0.4,
        eval_inner_steps: int | None = None,
        first_order: bool = False,
        vectorize: bool = True,
    ) -> None:
        self.ways, self.inner_steps, self.inner_lr = ways, inner_steps, inner_lr
        self.eval_inner_steps = eval_inner_steps or inner_steps
        self.first_order, self.vectorize = first_order, vectorize

    def describe(self, model: nn.Module) -> str:
        """The run log's task line: steps, rates, order and how episodes are adapted."""
        order = "first-order" if self.first_order else "second-order"
        if self.vectorize and can_batch(model):
            how = "the episodes of a meta-batch adapted together (one network, T weight copies)"
        elif self.vectorize:
            how = "episodes adapted one at a time (the model is not a plain layer stack)"
        else:
            how = "episodes adapted one at a time (task.vectorize=false)"
        return (
            f"{self.name}: {self.ways}-way head, {self.inner_steps} inner step(s) of "
            f"{self.inner_lr} ({self.eval_inner_steps} when evaluating), {order}; {how}"
        )

    def logits(self, model: nn.Module, batch: Episodes, training: bool) -> torch.Tensor:
        ways = episode_ways(batch)
        if ways != self.ways:
            raise ConfigError(
                f"this MAML model is {self.ways}-way (its head has {self.ways} outputs) but the "
                f"episodes are {ways}-way; use {self.ways}-way episodes"
            )
        steps = self.inner_steps if training else self.eval_inner_steps
        # Scoring needs no graph through the steps: first order is exact for the logits.
        first_order = self.first_order or not training
        together = self.vectorize and can_batch(model)
        adapt = self.adapted_logits_batched if together else self.adapted_logits_loop
        with transductive_batch_norm(model):
            return adapt(model, batch, steps, first_order)

    def adapted_logits_batched(
        self, model: nn.Module, batch: Episodes, steps: int, first_order: bool
    ) -> torch.Tensor:
        """All episodes adapted at once: T copies of the weights in one forward pass
        (tasks/batched.py); the loss is the sum of the episodes' mean support losses, so each
        copy's gradient is its own episode's."""
        names, params = zip(*model.named_parameters(), strict=True)
        count, shots = batch.support_labels.shape
        with torch.enable_grad():  # scoring runs under no_grad; adapting needs gradients
            fast = [p.unsqueeze(0).expand(count, *p.shape) for p in params]  # (T, ...)
            for _ in range(steps):
                logits = batched_forward(model, dict(zip(names, fast, strict=True)), batch.support)
                loss = (
                    F.cross_entropy(
                        widened(logits).flatten(0, 1),
                        batch.support_labels.flatten(),
                        reduction="sum",
                    )
                    / shots
                )
                grads = torch.autograd.grad(loss, fast, create_graph=not first_order)
                fast = [w - self.inner_lr * g for w, g in zip(fast, grads, strict=True)]
            return batched_forward(model, dict(zip(names, fast, strict=True)), batch.query)

    def adapted_logits_loop(
        self, model: nn.Module, batch: Episodes, steps: int, first_order: bool
    ) -> torch.Tensor:
        """One episode at a time, with torch.autograd.grad (the reference implementation)."""
        names, params = zip(*model.named_parameters(), strict=True)
        outputs = []
        with torch.enable_grad():  # scoring runs under no_grad; adapting needs gradients
            for support, support_labels, query in zip(
                batch.support, batch.support_labels, batch.query, strict=True
            ):
                fast = list(params)
                for _ in range(steps):
                    logits = functional_call(model, dict(zip(names, fast, strict=True)), (support,))
                    loss = F.cross_entropy(widened(logits), support_labels)
                    grads = torch.autograd.grad(loss, fast, create_graph=not first_order)
                    fast = [p - self.inner_lr * g for p, g in zip(fast, grads, strict=True)]
                outputs.append(
                    functional_call(model, dict(zip(names, fast, strict=True)), (query,))
                )
        return torch.stack(outputs)


@TASKS.register("fomaml", summary="first-order MAML: MAML without second-order terms")
class FirstOrderMAML(MAML):
    """MAML with `first_order=True` (Finn et al. 2017, section 5.2)."""

    name = "fomaml"

    def __init__(
        self,
        ways: int,
        inner_steps: int = 1,
        inner_lr: float = 0.4,
        eval_inner_steps: int | None = None,
        vectorize: bool = True,
    ) -> None:
        super().__init__(ways, inner_steps, inner_lr, eval_inner_steps, True, vectorize)
