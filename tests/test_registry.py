"""Registry tests: one convention for models, datasets, optimizers and schedules. Names are looked
up with close-name suggestions, arguments are checked against the factory's signature before it
runs, entries list their arguments with defaults, and patterns select entries."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from neuralab.config import resolve_config
from neuralab.data import DATASETS, load_dataset
from neuralab.errors import UserError
from neuralab.models import MODELS, InputSpec, TextSpec, build_model
from neuralab.registry import (
    REQUIRED,
    Argument,
    InvalidArgumentError,
    Registry,
    UnknownArgumentError,
    UnknownNameError,
)
from neuralab.train.optim import OPTIMIZERS, SCHEDULES, make_optimizer

ALL_REGISTRIES = [MODELS, DATASETS, OPTIMIZERS, SCHEDULES]


@pytest.fixture
def shapes() -> tuple[Registry, list]:
    """A registry of two factories that record every call they receive."""
    calls: list = []
    shapes = Registry("shape", supplied=("scale",))

    @shapes.register("square", summary="a square")
    def square(scale: float, *, side: float = 1.0, colour: str = "red") -> tuple:
        calls.append(("square", scale, side, colour))
        return ("square", scale * side, colour)

    @shapes.register("polygon")
    def polygon(scale: float, sides: int, *, radius: float = 1.0) -> tuple:
        """A regular polygon (the summary comes from this line)."""
        calls.append(("polygon", scale, sides, radius))
        return ("polygon", sides, scale * radius)

    return shapes, calls


def test_build_passes_supplied_values_and_arguments(shapes) -> None:
    registry, calls = shapes
    assert registry.build("square", 2.0, side=3.0) == ("square", 6.0, "red")
    assert registry.build("polygon", 2.0, sides=5) == ("polygon", 5, 2.0)
    assert calls == [("square", 2.0, 3.0, "red"), ("polygon", 2.0, 5, 1.0)]


def test_an_unknown_argument_is_refused_before_the_factory_runs(shapes) -> None:
    registry, calls = shapes
    with pytest.raises(UnknownArgumentError) as error:
        registry.build("square", 2.0, sied=3.0)
    assert str(error.value) == (
        "shape 'square' takes no argument 'sied'; did you mean 'side'? "
        "Valid arguments: side=1.0, colour='red'"
    )
    assert (error.value.kind, error.value.entry, error.value.argument) == (
        "shape",
        "square",
        "sied",
    )
    assert calls == []  # checked against the signature, not by calling and catching TypeError


def test_an_argument_without_a_close_match_lists_the_valid_ones(shapes) -> None:
    registry, _ = shapes
    with pytest.raises(UnknownArgumentError, match=r"'weight'\. Valid arguments: side=1.0, col"):
        registry.build("square", 1.0, weight=2)


def test_a_missing_required_argument_is_named(shapes) -> None:
    registry, calls = shapes
    with pytest.raises(UnknownArgumentError) as error:
        registry.build("polygon", 1.0, radius=2.0)
    assert str(error.value) == (
        "shape 'polygon' needs the argument 'sides'. Valid arguments: sides, radius=1.0"
    )
    assert error.value.argument == "sides" and calls == []


def test_a_supplied_parameter_is_not_an_argument(shapes) -> None:
    """`scale` is filled in by the caller: passing it as an argument is refused, not doubled."""
    registry, calls = shapes
    with pytest.raises(UnknownArgumentError, match="takes no argument 'scale'"):
        registry.build("square", 1.0, scale=2.0)
    assert calls == []


def test_check_validates_without_building(shapes) -> None:
    registry, calls = shapes
    assert registry.check("square", side=2.0).name == "square"
    with pytest.raises(UnknownArgumentError):
        registry.check("square", sides=2)
    assert calls == []


def test_a_catch_all_factory_takes_any_argument() -> None:
    registry = Registry("thing")
    registry.register("open")(lambda **anything: anything)
    assert registry.build("open", colour="blue") == {"colour": "blue"}
    assert registry.get("open").arguments() == []


def test_unknown_names_suggest_close_ones(shapes) -> None:
    registry, _ = shapes
    with pytest.raises(UnknownNameError) as error:
        registry.build("sqare", 1.0)
    assert str(error.value) == "unknown shape 'sqare'; did you mean 'square'? Valid shapes: " + (
        "polygon, square"
    )


def test_registry_errors_are_user_errors() -> None:
    """The command line prints these as one line, not as a traceback; Python callers can still
    catch them as the built-in errors they were (KeyError, TypeError)."""
    assert issubclass(UnknownNameError, UserError) and issubclass(UnknownNameError, KeyError)
    assert issubclass(UnknownArgumentError, UserError)
    assert issubclass(UnknownArgumentError, TypeError)
    assert issubclass(InvalidArgumentError, UserError)
    assert issubclass(InvalidArgumentError, ValueError)


TEXT = TextSpec(vocab_size=20, num_classes=2, max_length=8)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: build_model("textcnn", TEXT, pooling="avg"), "pooling 'avg' is unknown"),
        (lambda: build_model("mlp", TEXT), "model 'mlp' takes image input but the data is text"),
        (lambda: build_model("resnet18", InputSpec(3, 8, 8, 2), stem="big"), "stem must be"),
        (lambda: make_optimizer(nn.Linear(2, 2), "muon"), "Linear has none"),
        (lambda: make_optimizer(nn.Linear(2, 2), "sgd", {"wieght": 1}), "'wieght'"),
    ],
    ids=["model-argument", "model-kind", "resnet-stem", "muon-without-filters", "train-until"],
)
def test_a_bad_argument_value_is_a_user_error(build, message: str) -> None:
    """Values a factory cannot use are InvalidArgumentErrors: one line at the command line."""
    with pytest.raises(InvalidArgumentError, match=message):
        build()


def test_entries_list_arguments_with_defaults(shapes) -> None:
    registry, _ = shapes
    square, polygon = registry.get("square"), registry.get("polygon")
    assert square.arguments() == [
        Argument("side", 1.0, "float"),
        Argument("colour", "red", "str"),
    ]
    assert polygon.arguments()[0] == Argument("sides", REQUIRED, "int")
    assert [str(a) for a in polygon.arguments()] == ["sides", "radius=1.0"]
    assert square.summary == "a square"
    assert polygon.summary == "A regular polygon (the summary comes from this line)."


@pytest.mark.parametrize(
    ("pattern", "names"),
    [
        (None, MODELS.names()),
        ("resnet*", ["resnet18"]),
        ("*net*", ["alexnet", "lenet", "resnet18"]),
        ("NET", ["alexnet", "lenet", "resnet18"]),  # a plain pattern: a substring, any case
        ("st", ["lstm", "mnist_fast"]),
        ("st*", []),  # a glob matches the whole name
        ("?stm", ["lstm"]),
        ("nothing-like-it", []),
    ],
)
def test_entries_select_by_glob_or_substring(pattern: str | None, names: list[str]) -> None:
    assert [entry.name for entry in MODELS.entries(pattern)] == names


def test_registered_factories_declare_every_argument() -> None:
    """No built-in factory hides its arguments behind **kwargs, which would let a typo through
    the signature check; each has a summary for `neuralab models|datasets`."""
    for registry in ALL_REGISTRIES:
        for entry in registry:
            assert not entry.takes_any_argument(), f"{registry.kind} {entry.name}"
            assert entry.summary, f"{registry.kind} {entry.name} has no summary"


def test_a_model_argument_typo_from_the_config_names_the_model_and_the_fix() -> None:
    """`--set model.args.widht=2` reaches build_model and stops there with the close name."""
    config = resolve_config("mnist-mlp-classic", ["model.args.widht=2"])
    with pytest.raises(UnknownArgumentError) as error:
        build_model(config.model.name, InputSpec(1, 8, 8, 10), **config.model.args)
    message = str(error.value)
    assert message.startswith("model 'mlp' takes no argument 'widht'; did you mean 'width'?")
    assert "Valid arguments: depth=1, width=512, activation='relu'" in message


def test_a_dataset_option_typo_is_refused_before_reading_anything(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"  # the check comes first: the folder is never read
    with pytest.raises(UnknownArgumentError) as error:
        load_dataset(f"folder:{missing}", data_dir=tmp_path, image_szie=32)
    message = str(error.value)
    assert message.startswith(
        "dataset 'folder' takes no argument 'image_szie'; did you mean 'image_size'?"
    )
    assert "image_size=64" in message and "skip_bad_files=False" in message
    assert not missing.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "option", "expected"),
    [
        ("csv:reviews.csv", "text_feild", "did you mean 'text_field'?"),
        ("jsonl:reviews.jsonl", "label", "did you mean 'label_field'?"),
        ("digits", "image_size", "It takes no arguments."),
    ],
)
def test_dataset_options_are_checked_for_every_kind(
    tmp_path: Path, name: str, option: str, expected: str
) -> None:
    with pytest.raises(UnknownArgumentError, match=expected):
        load_dataset(name, data_dir=tmp_path, download=False, **{option: "x"})
    assert list(tmp_path.iterdir()) == []
