"""Model tests. The main ones are parametrised over every registered model name, so a new model
gets shape, gradient, batch-independence and safetensors round-trip tests without edits here;
give it small constructor arguments in MODEL_KWARGS if its defaults are slow on a CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from neuralab.models import MODELS, InputSpec, build_model, model_input
from neuralab.models.resnet import BasicBlock

BATCH = 3  # odd, and small enough that every case runs in well under a second
GRAY = InputSpec(channels=1, height=28, width=28, num_classes=10)  # MNIST-shaped
RGB = InputSpec(channels=3, height=32, width=32, num_classes=7)  # CIFAR-shaped, odd class count
WIDE = InputSpec(channels=3, height=24, width=40, num_classes=5)  # H != W catches swapped axes
LARGE = InputSpec(channels=3, height=64, width=64, num_classes=4)  # smallest "imagenet" size

# Per-model small sizes so each case stays fast; models not listed are built with defaults.
MODEL_KWARGS: dict[str, dict] = {
    "mlp": {"depth": 2, "width": 32, "batch_norm": True, "dropout": 0.1},
    "cnn": {"width": 8},
    "mnist_fast": {"width": 8},
    "alexnet": {"fc_width": 32},
    "resnet18": {"width": 8},
}
DEFAULT_KWARGS: dict = {}

# The ImageNet forms only appear at 64 px, so they get their own cases.
EXTRA_CASES = [
    ("alexnet", LARGE, {"variant": "imagenet", "fc_width": 32}),
    ("resnet18", LARGE, {"stem": "imagenet", "width": 8, "zero_init_residual": True}),
]
# Text models (registered with input="text") have their own suite: tests/test_text_models.py.
IMAGE_MODELS = [name for name in MODELS.names() if model_input(name) == "image"]
CASES = [
    (name, spec, MODEL_KWARGS.get(name, DEFAULT_KWARGS))
    for name in IMAGE_MODELS
    for spec in (GRAY, RGB, WIDE)
] + EXTRA_CASES


def case_id(case: tuple) -> str:
    name, spec, kwargs = case
    extra = "-".join(
        f"{key}={value}" for key, value in kwargs.items() if key in ("variant", "stem")
    )
    return f"{name}-{spec.channels}x{spec.height}x{spec.width}" + (f"-{extra}" if extra else "")


def images(spec: InputSpec, batch: int = BATCH, seed: int = 0) -> torch.Tensor:
    """Random float images (batch, C, H, W)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, spec.channels, spec.height, spec.width, generator=generator)


def built(name: str, spec: InputSpec, kwargs: dict, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(name, spec, **kwargs)


def parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_forward_backward_gives_finite_logits_and_gradients(case: tuple) -> None:
    name, spec, kwargs = case
    model = built(name, spec, kwargs).train()
    logits = model(images(spec))
    assert logits.shape == (BATCH, spec.num_classes)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()

    targets = torch.arange(BATCH) % spec.num_classes
    F.cross_entropy(logits, targets).backward()
    for parameter_name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None, f"{name}: {parameter_name} got no gradient"
            assert torch.isfinite(parameter.grad).all(), f"{name}: {parameter_name} grad not finite"
    assert any(p.grad.abs().sum() > 0 for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_eval_outputs_do_not_depend_on_the_rest_of_the_batch(case: tuple) -> None:
    name, spec, kwargs = case
    model = built(name, spec, kwargs).eval()
    batch = images(spec)
    with torch.no_grad():
        together = model(batch)[1:2]  # (1, num_classes)
        alone = model(batch[1:2])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_safetensors_round_trip_restores_outputs(case: tuple, tmp_path: Path) -> None:
    name, spec, kwargs = case
    model = built(name, spec, kwargs, seed=0)
    with torch.no_grad():
        model.train()(images(spec, seed=1))  # move batch-norm running stats off their defaults
    model.eval()
    path = tmp_path / f"{name}.safetensors"
    save_file(model.state_dict(), str(path))

    fresh = built(name, spec, kwargs, seed=1).eval()
    batch = images(spec, seed=2)
    with torch.no_grad():
        expected = model(batch)
        assert not torch.equal(fresh(batch), expected), "a differently seeded model must differ"
        fresh.load_state_dict(load_file(str(path)))
        torch.testing.assert_close(fresh(batch), expected, rtol=0, atol=0)


def test_every_model_has_a_summary() -> None:
    for entry in MODELS:
        assert entry.summary, f"model {entry.name!r} has no summary"


def test_unknown_model_name_suggests_close_match() -> None:
    with pytest.raises(KeyError) as error:
        build_model("resnt18", RGB)
    assert "did you mean 'resnet18'" in str(error.value)


def test_unknown_keyword_argument_names_the_valid_ones() -> None:
    with pytest.raises(TypeError) as error:
        build_model("mlp", GRAY, widht=64)
    message = str(error.value)
    assert "'mlp'" in message and "widht" in message
    for valid in ("depth", "width", "activation", "dropout", "batch_norm"):
        assert valid in message


def test_mlp_rejects_unknown_activation_listing_valid_ones() -> None:
    with pytest.raises(ValueError, match="sigmoid, tanh, relu, gelu") as error:
        build_model("mlp", GRAY, activation="swish")
    assert "swish" in str(error.value)


@pytest.mark.parametrize(
    ("activation", "module_type"),
    [("sigmoid", nn.Sigmoid), ("tanh", nn.Tanh), ("relu", nn.ReLU), ("gelu", nn.GELU)],
)
def test_mlp_uses_the_requested_activation(activation: str, module_type: type) -> None:
    model = build_model("mlp", GRAY, depth=3, width=16, activation=activation)
    assert sum(isinstance(module, module_type) for module in model.modules()) == 3


# Reference parameter counts: pytorch/examples LeNet, keras.io MNIST convnet, the 784-512-10 MLP,
# torchvision AlexNet and ResNet-18, and the common CIFAR ResNet-18 (3x3 stem, no max-pool).
REFERENCE_COUNTS = [
    ("perceptron", GRAY, {}, 784 * 10 + 10),
    ("mlp", GRAY, {}, 407_050),
    ("lenet", GRAY, {}, 260 + 5_020 + 16_050 + 510),
    ("cnn", GRAY, {}, 34_826),
    ("alexnet", InputSpec(3, 224, 224, 1000), {}, 61_100_840),
    ("resnet18", InputSpec(3, 224, 224, 1000), {}, 11_689_512),
    ("resnet18", InputSpec(3, 32, 32, 10), {}, 11_173_962),
]


@pytest.mark.parametrize(("name", "spec", "kwargs", "expected"), REFERENCE_COUNTS)
def test_parameter_count_matches_reference(
    name: str, spec: InputSpec, kwargs: dict, expected: int
) -> None:
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = build_model(name, spec, **kwargs)
    assert parameter_count(model) == expected


def first_conv(model: nn.Module) -> nn.Conv2d:
    return next(module for module in model.modules() if isinstance(module, nn.Conv2d))


@pytest.mark.parametrize(
    ("name", "kwargs", "small_kernel", "large_kernel"),
    [("alexnet", {"fc_width": 8}, 3, 11), ("resnet18", {"width": 4}, 3, 7)],
)
def test_auto_picks_the_imagenet_form_from_64_pixels(
    name: str, kwargs: dict, small_kernel: int, large_kernel: int
) -> None:
    with torch.device("meta"):
        small = build_model(name, InputSpec(3, 63, 200, 10), **kwargs)
        large = build_model(name, LARGE, **kwargs)
    assert first_conv(small).kernel_size == (small_kernel, small_kernel)
    assert first_conv(large).kernel_size == (large_kernel, large_kernel)


@pytest.mark.parametrize(
    ("name", "kwargs"), [("alexnet", {"variant": "big"}), ("resnet18", {"stem": "x"})]
)
def test_bad_form_names_are_rejected(name: str, kwargs: dict) -> None:
    with pytest.raises(ValueError, match="imagenet"):
        build_model(name, RGB, **kwargs)


def test_too_small_images_raise_a_clear_error() -> None:
    with pytest.raises(ValueError, match="'lenet' cannot take 1x8x8"):
        build_model("lenet", InputSpec(1, 8, 8, 10))


def test_mnist_fast_adapts_to_tiny_digits() -> None:
    spec = InputSpec(1, 8, 8, 10)  # the scikit-learn digits
    assert build_model("mnist_fast", spec).eval()(images(spec)).shape == (BATCH, 10)


def test_resnet_zero_init_residual_zeroes_last_block_gamma() -> None:
    def last_gammas(model: nn.Module) -> list[torch.Tensor]:
        return [block.bn2.weight for block in model.modules() if isinstance(block, BasicBlock)]

    zeroed = last_gammas(build_model("resnet18", RGB, width=4, zero_init_residual=True))
    default = last_gammas(build_model("resnet18", RGB, width=4))
    assert len(zeroed) == len(default) == 8  # 2-2-2-2 blocks
    assert all(gamma.abs().sum() == 0 for gamma in zeroed)
    assert all((gamma == 1).all() for gamma in default)


def test_mnist_fast_stays_within_its_compute_budget() -> None:
    model = build_model("mnist_fast", GRAY).eval()
    with FlopCounterMode(display=False) as counter:
        model(images(GRAY, batch=1))
    # Budget: about 20 MFLOPs (10 M multiply-adds) per 28x28 image; ~0.5% slack for the head.
    assert counter.get_total_flops() <= 20.1e6


def test_airbench_shift_scale_and_head_std_reparametrise_without_changing_outputs() -> None:
    """shift_scale and (scale, head_std) change how fast SGD moves the shifts and the head,
    not what the network computes: with the same effective weights the logits agree."""
    torch.manual_seed(0)
    default = build_model("airbench", RGB, widths=[8, 8, 8])  # shifts stored / 8, logits / 9
    muon_style = build_model(
        "airbench", RGB, widths=[8, 8, 8], shift_scale=1.0, scale=1 / 72, head_std=0.28
    )
    assert muon_style.head.weight.std().item() == pytest.approx(0.28, rel=0.3)
    state = default.state_dict()
    for name in state:
        if name.startswith("body.") and name.endswith(".bias"):  # the norms' shifts
            state[name] = torch.randn_like(state[name])  # non-zero, so the scale matters
    default.load_state_dict(state)
    state = {
        name: value * 8 if name.startswith("body.") and name.endswith(".bias") else value
        for name, value in state.items()
    }
    state["head.weight"] = state["head.weight"] * 72 / 9
    muon_style.load_state_dict(state)
    default.eval(), muon_style.eval()
    images = torch.randn(BATCH, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(muon_style(images), default(images))


# initialize_from_data adds this to every eigenvalue before taking 1/sqrt (airbench94's 5e-4),
# so a direction of variance λ comes out with variance λ / (λ + eps), not exactly 1.
WHITENING_EPS = 5e-4


def patch_covariance(values: torch.Tensor) -> torch.Tensor:
    """Covariance (D, D) of the rows of `values` (N, D), in float64, normalised by N."""
    centred = values.double() - values.double().mean(0)
    return centred.T @ centred / len(centred)


def test_airbench_whitening_gives_patches_identity_covariance() -> None:
    """Reference: the 2×2 patches of the images, seen through the whitening filters fitted on
    them, have covariance I up to the eps: diag(λ / (λ + eps)) with λ the eigenvalues of the
    raw patch covariance (computed here with torch.linalg.eigvalsh), and no correlation."""
    generator = torch.Generator().manual_seed(0)
    # Smooth colour images (neighbouring pixels and channels correlate, as in photos) plus a
    # little independent noise, normalised per channel: patch variances span 0.009 to 3.7.
    smooth = F.interpolate(torch.randn(64, 3, 8, 8, generator=generator), size=32, mode="bilinear")
    images = smooth + 0.1 * torch.randn(64, 1, 32, 32, generator=generator)
    images = images + 0.05 * torch.randn(64, 3, 32, 32, generator=generator)
    images = (images - images.mean((0, 2, 3), keepdim=True)) / images.std((0, 2, 3), keepdim=True)
    model = build_model("airbench", RGB, widths=[8, 8, 8])
    model.initialize_from_data(images)

    patches = images.unfold(2, 2, 1).unfold(3, 2, 1)  # (N, C, 31, 31, 2, 2)
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, 12)  # (N·31·31, C·2·2)
    variances = torch.linalg.eigvalsh(patch_covariance(patches))  # ascending
    filters = model.whiten.weight.detach()  # (24, 3, 2, 2): 12 filters, then their negatives
    torch.testing.assert_close(filters[12:], -filters[:12], rtol=0, atol=0)
    with torch.no_grad():
        whitened = F.conv2d(images, filters[:12])  # the bias only shifts the mean: left out
    covariance = patch_covariance(whitened.permute(0, 2, 3, 1).reshape(-1, 12))

    # Identity, within what the eps allows for the weakest direction (here 0.051) plus round-off.
    allowed = WHITENING_EPS / (variances.min() + WHITENING_EPS) + 1e-4
    assert (covariance - torch.eye(12, dtype=torch.float64)).abs().max() <= allowed
    # And exactly the eps's shrinkage, direction by direction (fp32 convolution: measured ≤ 5e-5).
    expected = torch.diag(variances / (variances + WHITENING_EPS))
    torch.testing.assert_close(covariance, expected, rtol=0, atol=1e-4)
