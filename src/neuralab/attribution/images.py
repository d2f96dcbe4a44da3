"""Attributions for image models, through Captum: which pixels made the model say what it said.

    saliency              |∂ logit / ∂ pixel| (Simonyan et al. 2014)
    smoothgrad            saliency averaged over noisy copies (Smilkov et al. 2017)
    integrated-gradients  gradients integrated from the training set's mean colour, the image
                          the normalised model sees as zeros (Sundararajan et al. 2017)
    grad-cam              a conv layer's activations weighted by their mean gradient, upsampled
                          (Selvaraju et al. 2017); the layer is picked automatically
    occlusion             the logit's drop when a square patch is blacked out (Zeiler & Fergus)

Every method explains the model as `predict` runs it: pixels in [0, 1], the run's
normalisation inside, eval mode, float32; gradient methods and occlusion go through the run's
test-time augmentation too. Grad-CAM reads one layer's activations, so it explains the plain
view (without test-time augmentation) — the JSON says which.

Each map is (H, W): channels summed; saliency and smoothgrad are magnitudes (≥ 0), the others
signed (positive: evidence for the target class).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from neuralab.errors import UserError
from neuralab.models.tta import channel_view, pixel_forward

IMAGE_METHODS = ("saliency", "smoothgrad", "integrated-gradients", "grad-cam", "occlusion")
IG_STEPS = 50  # Sundararajan et al.'s default: the integral's error is small at 20–300 steps
SMOOTHGRAD_SAMPLES = 25  # noisy copies per image
SMOOTHGRAD_NOISE = 0.15  # noise std in pixel units (Smilkov et al.: 10–20% of the range)
# Images per forward/backward inside a method (each test-time view is its own pass): bounds
# memory, and small passes stay in cache: integrated gradients through cifar10-fast's six
# views took 67 s per 100 images at 64–100, 86 s at 200 and 138 s at 512 (fp32, 2 cores,
# channels-first inputs).
PASS_BUDGET = 64
GRAD_CAM_MIN_SIDE = 7  # pixels: the map of the layer Grad-CAM reads (see grad_cam_layer)
OCCLUSION_FRACTION = 7  # occluding patch = a seventh of the image side (4 px on MNIST)

Forward = Callable[[torch.Tensor], torch.Tensor]  # pixels (B, C, H, W) → logits (B, classes)


class AttributionError(UserError, ValueError):
    """A method asked of a model it does not fit, or an unknown method or target."""


def captum():
    """The captum package, or a clear error saying how to install it."""
    try:
        import captum.attr
    except ImportError:
        raise AttributionError(
            "attributions use Captum: pip install 'neuralab[explain]' (captum)"
        ) from None
    return captum.attr


def conv_layers(model: nn.Module, example: torch.Tensor) -> list[tuple[str, nn.Module, tuple]]:
    """The model's Conv2d layers in the order a forward pass runs them, with their output
    shapes (one hook per layer, one forward pass on `example`)."""
    seen: list[tuple[str, nn.Module, tuple]] = []
    names = {module: name for name, module in model.named_modules()}
    hooks = [
        module.register_forward_hook(
            lambda module, args, output: seen.append((names[module], module, tuple(output.shape)))
        )
        for module in model.modules()
        if isinstance(module, nn.Conv2d)
    ]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def grad_cam_layer(model: nn.Module, example: torch.Tensor, name: str | None) -> nn.Module:
    """The layer Grad-CAM reads: `name`, or the last convolution run whose map is still at
    least GRAD_CAM_MIN_SIDE on a side (Selvaraju et al. read the last conv layer of ImageNet
    nets, a 7 × 7 map; on 28–32 px inputs the last layer is 2 × 2, too coarse to say where)."""
    layers = conv_layers(model, example)
    if name is not None:
        named = dict(model.named_modules())
        if name not in named:
            choices = ", ".join(n for n, _, _ in layers) or "none"
            raise AttributionError(
                f"--layer {name!r} is not a layer of this model; its convolutions: {choices}"
            )
        return named[name]
    if not layers:
        raise AttributionError(
            f"grad-cam needs a convolutional layer and {type(model).__name__} has none; "
            f"use one of: {', '.join(m for m in IMAGE_METHODS if m != 'grad-cam')}"
        )
    wide = [module for _, module, shape in layers if min(shape[-2:]) >= GRAD_CAM_MIN_SIDE]
    if wide:
        return wide[-1]
    return max(layers, key=lambda layer: min(layer[2][-2:]))[1]


def attribute_images(
    model: nn.Module,
    pixels: torch.Tensor,
    targets: torch.Tensor,
    method: str,
    *,
    mean: tuple,
    std: tuple,
    tta: str = "off",
    layer: str | None = None,
    seed: int = 0,
    signed: bool = False,
) -> torch.Tensor:
    """Attribution maps (N, H, W) of `targets` (N,) for pixels (N, C, H, W) in [0, 1].
    `signed`: saliency and SmoothGrad keep the gradient's sign (the sanity check's
    "no absolute value" variant) instead of its magnitude."""
    if method not in IMAGE_METHODS:
        raise AttributionError(f"unknown method {method!r}; image runs take: "
                               f"{', '.join(IMAGE_METHODS)}")  # fmt: skip
    attr = captum()
    model = model.eval()
    forward = pixel_forward(model, mean, std, tta)
    pixels = pixels.float()
    torch.manual_seed(seed)  # SmoothGrad's noise
    if method == "grad-cam":
        example = normalised_example(pixels[:1].cpu(), mean, std).to(pixels.device)
        chosen = grad_cam_layer(model, example, layer)
        return grad_cam(attr, model, chosen, pixels, targets, mean, std)
    if method == "occlusion":
        return occlusion(attr, forward, pixels, targets)
    batch = max(1, PASS_BUDGET // (IG_STEPS if method == "integrated-gradients" else 1))
    maps = []
    for start in range(0, len(pixels), batch):
        chunk, target = pixels[start : start + batch], targets[start : start + batch]
        maps.append(gradient_method(attr, forward, method, chunk, target, not signed, mean))
    return torch.cat(maps)


def normalised_example(pixels: torch.Tensor, mean: tuple, std: tuple) -> torch.Tensor:
    shift, scale = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    return (pixels - shift) / scale


def gradient_method(
    attr, forward: Forward, method: str, pixels, targets, absolute: bool, mean: tuple
) -> torch.Tensor:
    """Saliency, SmoothGrad or integrated gradients for one chunk → (B, H, W).

    Integrated gradients start from a plain image of the `mean` colour: the input the
    normalised model sees as zeros, and the colour the deletion metric gives removed pixels
    (cifar10-fast, 100 test images: deletion 0.87× the random order's from the mean colour,
    1.04× from black)."""
    pixels = pixels.detach().clone().requires_grad_(True)  # Captum warns when it must do this
    if method == "saliency":
        found = attr.Saliency(forward).attribute(pixels, target=targets, abs=absolute)
    elif method == "smoothgrad":
        tunnel = attr.NoiseTunnel(attr.Saliency(forward))
        found = tunnel.attribute(
            pixels, nt_type="smoothgrad", nt_samples=SMOOTHGRAD_SAMPLES,
            nt_samples_batch_size=max(1, PASS_BUDGET // len(pixels)),
            stdevs=SMOOTHGRAD_NOISE, target=targets, abs=absolute,
        )  # fmt: skip
    else:
        found = attr.IntegratedGradients(forward).attribute(
            pixels, baselines=mean_image(pixels, mean), target=targets, n_steps=IG_STEPS,
            internal_batch_size=PASS_BUDGET,
        )  # fmt: skip
    return found.detach().sum(1)


def mean_image(pixels: torch.Tensor, mean: tuple) -> torch.Tensor:
    """Images shaped like `pixels` (B, C, H, W), every pixel the per-channel `mean` colour."""
    return channel_view(mean, pixels).expand_as(pixels).contiguous()


def grad_cam(attr, model, layer, pixels, targets, mean, std) -> torch.Tensor:
    """Grad-CAM at `layer` (plain view), upsampled bilinearly to the image's size."""
    forward = pixel_forward(model, mean, std, "off")
    cam = attr.LayerGradCam(forward, layer)
    maps = []
    for start in range(0, len(pixels), PASS_BUDGET):
        chunk, target = pixels[start : start + PASS_BUDGET], targets[start : start + PASS_BUDGET]
        found = cam.attribute(chunk, target=target, relu_attributions=True)  # (B, 1, h, w)
        maps.append(F.interpolate(found.detach().float(), size=pixels.shape[-2:],
                                  mode="bilinear", align_corners=False)[:, 0])  # fmt: skip
    return torch.cat(maps)


def occlusion(attr, forward: Forward, pixels: torch.Tensor, targets) -> torch.Tensor:
    """The target logit's drop when a black square (a seventh of the side, stride half of
    it) covers each place; overlapping windows are averaged by Captum."""
    channels, height, width = pixels.shape[1:]
    side = max(2, math.ceil(min(height, width) / OCCLUSION_FRACTION))
    stride = max(1, side // 2)
    found = attr.Occlusion(forward).attribute(
        pixels, sliding_window_shapes=(channels, side, side), strides=(channels, stride, stride),
        baselines=0.0, target=targets, perturbations_per_eval=max(1, PASS_BUDGET // len(pixels)),
    )  # fmt: skip
    return found.detach().sum(1)
