"""The train sections that change how a run learns beyond its labels: adversarial training
(`train.adversarial`), distillation from a teacher run (`train.distill`) and self-training on
unlabelled examples (`train.semi`). Part of the schema; sections.py nests them in TrainConfig.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from neuralab.config.base import Section


class AdversarialConfig(Section):
    """Adversarial (robust) training of image classifiers (adversarial/training.py): every
    training batch is replaced by adversarial examples in the L∞ ball of radius `eps` around
    its pixels (pixel units: 0.3 on MNIST, 8/255 = 0.0314 on CIFAR-10).

    - fgsm-rs (Wong, Rice & Kolter 2020, "Fast is better than free"): a uniform random start in
      the ball, then one signed-gradient step of `step_size` (default 1.25 · eps): 2 forward/
      backward passes per batch.
    - n-fgsm (de Jorge et al. 2022, "Make some noise"): a uniform start in the ball of twice
      eps, one step of `step_size` (default eps), no projection back into the eps-ball: the
      same 2 passes as fgsm-rs without its catastrophic overfitting at CIFAR-10's 8/255.
    - pgd (Madry et al. 2018): `steps` signed steps of `step_size` (default 2.5 · eps / steps)
      from a random start: steps + 1 passes per batch.

    Each epoch ends with a PGD check (`check_steps` steps, `check_restarts` restarts, radius
    `check_eps`, default eps: set it to the radius you evaluate at when training at a smaller
    one) on `check_count` validation (else training) examples, logged as `pgd_accuracy`; with
    `early_stop`, a fall of more than 20 points below the best (catastrophic overfitting)
    stops the run on the best epoch's weights.
    """

    method: Literal["off", "fgsm-rs", "n-fgsm", "pgd"] = "off"
    eps: float | None = Field(None, gt=0.0, le=1.0)  # pixel units; required unless method=off
    step_size: float | None = Field(None, gt=0.0, le=1.0)  # pixel units; None: see above
    steps: int = Field(7, ge=1)  # pgd only
    check_steps: int = Field(10, ge=1)
    check_eps: float | None = Field(None, gt=0.0, le=1.0)  # pixel units; None: eps
    check_restarts: int = Field(1, ge=1)
    check_count: int = Field(1000, ge=1)
    early_stop: bool = True

    @field_validator("method", mode="before")
    @classmethod
    def off_from_yaml(cls, value: Any) -> Any:
        """YAML 1.1 reads a bare `off` as false; take it back."""
        return "off" if value is False else value

    @model_validator(mode="after")
    def eps_when_on(self) -> AdversarialConfig:
        # The other fields may stay set with method=off: `--set train.adversarial.method=off`
        # turns a robust recipe into its plain counterpart.
        if self.method != "off" and self.eps is None:
            raise ValueError(
                f"train.adversarial.method={self.method} needs train.adversarial.eps, the L∞ "
                "radius in pixel units (0 < eps ≤ 1; e.g. 0.3 for MNIST, 0.0314 for CIFAR-10)"
            )
        return self

    @property
    def step(self) -> float:
        """The attack's step in pixel units: step_size, else 1.25 · eps (fgsm-rs, Wong et al.)
        or 2.5 · eps / steps (pgd, Madry et al.)."""
        if self.step_size is not None:
            return self.step_size
        if self.method == "n-fgsm":
            return self.eps
        return 1.25 * self.eps if self.method == "fgsm-rs" else 2.5 * self.eps / self.steps

    @property
    def check_radius(self) -> float:
        """The PGD check's eps in pixel units: check_eps, else the training eps."""
        return self.check_eps if self.check_eps is not None else self.eps


class DistillConfig(Section):
    """Knowledge distillation (Hinton, Vinyals & Dean 2015; tasks/distillation.py): the run
    learns from a trained `teacher` run's softened outputs as well as the labels,

        loss = (1 - weight) · hard + weight · T² · KL(softmax(teacher / T) ‖ softmax(student / T))

    where `hard` is the run's own loss on the labels (train.loss, train.label_smoothing) and T
    is `temperature`. The teacher's classes must be the run's; an image teacher sees the same
    pixels through its own normalisation, a text teacher's tokenizer is the run's.
    """

    teacher: str | None = None  # a run directory (or checkpoint folder); None: no distillation
    temperature: float = Field(4.0, gt=0.0, le=100.0)  # T; Hinton et al. used 1..20
    weight: float = Field(0.5, ge=0.0, le=1.0)  # of the soft (teacher) term; 0: labels only


class SemiConfig(Section):
    """Semi-supervised learning by self-training (pseudo-labels: Yarowsky 1995, Lee 2013;
    run/semi.py). The run trains a teacher on the labelled examples alone (`<out>/teacher`),
    labels the unlabelled ones with it, keeps those whose top probability is at least
    `threshold`, and trains the run itself on labelled + pseudo-labelled examples (with
    `rounds` > 1, each round's run teaches the next). The unlabelled examples are the
    remainder data.labelled_per_class leaves and a dataset's own unlabelled set (imdb:
    data.options.unlabelled=true); test examples are never read by the teacher's labelling.

    With `vectors` (cbow or skipgram: word2vec, text runs), a first stage learns word vectors
    from the training and unlabelled texts, never validation or test ones
    (`<out>/vectors/word-vectors.safetensors`), and every classifier stage starts its word
    embeddings from them (data.word_vectors), with a tokenizer that knows the unlabelled texts'
    words too. It needs a model with word embeddings of any size (ngram: embed_dim, e.g. with
    embed_words_only beside the NB term). `vectors` alone (method off) trains one classifier.
    """

    method: Literal["off", "pseudo-label"] = "off"
    threshold: float = Field(0.9, ge=0.0, lt=1.0)
    # also keep at most this fraction of the unlabelled examples, split evenly over the
    # predicted classes, the most confident first (None: every one past the threshold)
    keep: float | None = Field(None, gt=0.0, le=1.0)
    rounds: int = Field(1, ge=1, le=5)
    # epochs of the stages that learn from pseudo-labels (None: train.epochs, as the teacher):
    # with few labels the teacher needs many epochs over little data, its students fewer
    student_epochs: float | None = Field(None, gt=0.0)
    vectors: Literal["off", "cbow", "skipgram"] = "off"
    vector_epochs: int = Field(5, ge=1, le=100)  # word2vec's passes over the texts
    vector_window: int = Field(5, ge=1, le=50)  # words either side that predict each other

    @field_validator("method", "vectors", mode="before")
    @classmethod
    def off_from_yaml(cls, value: Any) -> Any:
        """YAML 1.1 reads a bare `off` as false; take it back."""
        return "off" if value is False else value
