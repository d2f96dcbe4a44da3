"""Muon: the Newton–Schulz orthogonalisation, the filter step's invariances, the plain groups
against torch.optim.SGD, the registry factory's grouping, and exact resume from state_dict."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from neuralab.config import OptimConfig
from neuralab.train.muon import Muon, orthogonalize
from neuralab.train.optim import build_optimizer


def singular_values(matrix: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(matrix.double())


@pytest.mark.parametrize("shape", [(16, 72), (72, 16)])
def test_orthogonalize_pushes_singular_values_towards_one(shape: tuple[int, int]) -> None:
    left, _, right = torch.linalg.svd(
        torch.randn(*shape, generator=torch.Generator().manual_seed(0)), full_matrices=False
    )
    matrix = left @ torch.diag(torch.logspace(-2, 0, 16)) @ right  # singular values 0.01 … 1
    before = singular_values(matrix)
    after = singular_values(orthogonalize(matrix, steps=5))
    assert after.shape == before.shape
    # The quintic trades exactness for speed: values land near 1, not on it.
    assert after.min() > 0.6 and after.max() < 1.25


def test_orthogonalize_keeps_the_singular_vectors() -> None:
    matrix = torch.randn(16, 72, generator=torch.Generator().manual_seed(1))
    left, _, right = torch.linalg.svd(matrix, full_matrices=False)
    polar = left @ right  # the exact orthogonal factor U·Vᵀ
    result = orthogonalize(matrix, steps=5)
    cosine = (result * polar).sum() / (result.norm() * polar.norm())
    assert cosine > 0.97
    assert orthogonalize(matrix.T, steps=5).T.allclose(result, atol=1e-5)


def conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )


def gradients(model: nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(6, 3, 8, 8, generator=generator)
    labels = torch.randint(0, 4, (6,), generator=generator)
    model.zero_grad()
    nn.functional.cross_entropy(model(images), labels).backward()


def test_filter_step_is_relative_and_ignores_the_gradient_scale() -> None:
    steps = []
    for weight_scale, gradient_scale in ((1.0, 1.0), (5.0, 1000.0)):
        filters = nn.Parameter(torch.randn(8, 3, 3, 3, generator=torch.Generator().manual_seed(2)))
        with torch.no_grad():
            filters.mul_(weight_scale)
        filters.grad = gradient_scale * torch.linspace(-1, 1, 216).view(8, 3, 3, 3).sin()
        Muon([{"params": [filters], "orthogonalize": True}], lr=0.1).step()
        steps.append(filters.detach().clone())
    # Renormalised to norm √8 first, so neither the weight's nor the gradient's scale matters.
    torch.testing.assert_close(steps[0], steps[1])
    assert steps[0].norm() == pytest.approx(8**0.5, rel=0.1)


def test_filter_step_is_an_orthogonalised_update_of_size_lr() -> None:
    filters = nn.Parameter(torch.randn(8, 3, 3, 3, generator=torch.Generator().manual_seed(3)))
    filters.grad = torch.randn(8, 3, 3, 3, generator=torch.Generator().manual_seed(4))
    normalised = filters.detach() * 8**0.5 / filters.detach().norm()
    Muon([{"params": [filters], "orthogonalize": True}], lr=0.01, ns_steps=5).step()
    update = (normalised - filters.detach()).view(8, -1) / 0.01
    values = singular_values(update)
    assert values.min() > 0.6 and values.max() < 1.25
    assert (update * filters.grad.view(8, -1)).sum() > 0  # a descent direction


def test_plain_groups_step_exactly_like_torch_sgd() -> None:
    ours, theirs = nn.Linear(5, 3), nn.Linear(5, 3)
    theirs.load_state_dict(ours.state_dict())
    settings = {"lr": 0.05, "momentum": 0.85, "nesterov": True, "weight_decay": 0.01}
    optimizer = Muon(ours.parameters(), **settings)
    reference = torch.optim.SGD(theirs.parameters(), **settings)
    generator = torch.Generator().manual_seed(5)
    for _ in range(4):
        inputs = torch.randn(7, 5, generator=generator)
        for model, opt in ((ours, optimizer), (theirs, reference)):
            opt.zero_grad()
            model(inputs).square().mean().backward()
            opt.step()
    for mine, plain in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(mine, plain)


def test_factory_orthogonalises_filters_only_and_gives_the_rest_their_own_rate() -> None:
    model = conv_net()
    config = OptimConfig(
        name="muon", lr=0.2, momentum=0.6, other_lr=3.0, other_momentum=0.85, weight_decay=1e-4
    )
    filters, others = build_optimizer(model, config).param_groups
    assert filters["orthogonalize"] and [id(p) for p in filters["params"]] == [id(model[0].weight)]
    assert (filters["lr"], filters["momentum"], filters["weight_decay"]) == (0.2, 0.6, 0.0)
    assert not others["orthogonalize"] and len(others["params"]) == 4  # BN ×2, head ×2
    assert (others["lr"], others["momentum"], others["weight_decay"]) == (3.0, 0.85, 1e-4)


def test_factory_refuses_a_model_without_filters() -> None:
    with pytest.raises(ValueError, match="Linear.*has none: use sgd"):
        build_optimizer(nn.Linear(3, 2), OptimConfig(name="muon", lr=0.1))


def test_other_settings_are_refused_for_other_optimizers() -> None:
    with pytest.raises(ValidationError, match="optim.other_lr only apply to optim.name=muon"):
        OptimConfig(name="sgd", other_lr=0.5)


def test_a_group_of_vectors_cannot_be_orthogonalised() -> None:
    with pytest.raises(ValueError, match=r"shape \(4,\): put it in a plain group"):
        Muon([{"params": [nn.Parameter(torch.ones(4))], "orthogonalize": True}], lr=0.1)


def test_resuming_from_state_dict_continues_exactly() -> None:
    config = OptimConfig(name="muon", lr=0.2, momentum=0.6, nesterov=True, other_lr=0.5)
    straight = conv_net()
    optimizer = build_optimizer(straight, config)
    for seed in range(4):
        gradients(straight, seed)
        optimizer.step()
    resumed = conv_net()
    first = build_optimizer(resumed, config)
    for seed in range(2):
        gradients(resumed, seed)
        first.step()
    state = first.state_dict()
    second = build_optimizer(resumed, config)
    second.load_state_dict(state)
    for seed in range(2, 4):
        gradients(resumed, seed)
        second.step()
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(a, b)
