"""Config tests: shipped recipes, `--set` overrides, and errors that name the field and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from neuralab.config import (
    ConfigError,
    RunConfig,
    dump_config,
    parse_override,
    recipe_names,
    resolve_config,
)
from neuralab.data import DATASETS
from neuralab.data.dataset import parse_name
from neuralab.models import MODELS


@pytest.mark.parametrize("name", recipe_names())
def test_every_shipped_recipe_validates(name: str) -> None:
    config = resolve_config(name)
    assert isinstance(config, RunConfig)
    assert config.description, f"recipe {name} has no description for `neuralab recipes`"


@pytest.mark.parametrize("name", recipe_names())
def test_every_recipe_names_registered_factories_with_arguments_they_take(name: str) -> None:
    """A recipe's model.args and data.options fit their factories' signatures (checked without
    building anything; tests/test_optim.py builds each recipe's optimizer and schedule)."""
    config = resolve_config(name)
    assert MODELS.check(config.model.name, **config.model.args).name == config.model.name
    kind, _ = parse_name(config.data.name)
    assert DATASETS.check(kind, **config.data.options).name == kind


def test_recipes_are_listed() -> None:
    names = recipe_names()
    assert "mnist-lenet-classic" in names
    assert names == sorted(names)


def test_set_overrides_are_read_as_yaml() -> None:
    config = resolve_config(
        "mnist-lenet-classic",
        [
            "train.epochs=0.5",
            "optim.nesterov=true",
            "optim.betas=[0.8, 0.95]",
            "train.grad_clip=null",
            "model.args={width: 8, dropout: 0.1}",
            "data.name=folder:/tmp/x",
        ],
    )
    assert config.train.epochs == 0.5
    assert config.optim.nesterov is True
    assert config.optim.betas == (0.8, 0.95)
    assert config.train.grad_clip is None
    assert config.model.args == {"width": 8, "dropout": 0.1}
    assert config.data.name == "folder:/tmp/x"
    assert config.optim.lr == 0.01  # untouched recipe value survives


def test_overrides_win_over_flags_which_win_over_the_recipe() -> None:
    config = resolve_config("mnist-lenet-classic", ["optim.lr=0.5"], **{"optim.lr": 0.1})
    assert config.optim.lr == 0.5
    config = resolve_config("mnist-lenet-classic", None, **{"optim.lr": 0.1, "model.name": None})
    assert config.optim.lr == 0.1
    assert config.model.name == "lenet"  # None flags leave the recipe alone


def test_defaults_without_a_recipe() -> None:
    assert resolve_config() == RunConfig()


@pytest.mark.parametrize(
    ("override", "full_key", "suggestion"),
    [
        ("train.epoch=3", "train.epoch", "epochs"),
        ("optim.momentun=0.9", "optim.momentun", "momentum"),
        ("trian.epochs=3", "trian", "train"),
        ("schedule.warmup=1", "schedule.warmup", "warmup_epochs"),
    ],
)
def test_unknown_key_names_the_path_and_the_nearest_key(
    override: str, full_key: str, suggestion: str, fault_table
) -> None:
    with pytest.raises(ConfigError) as error:
        resolve_config(None, [override])
    message = str(error.value)
    assert repr(full_key) in message
    assert f"Did you mean {suggestion!r}?" in message
    fault_table("config: misspelt key", 1, "ConfigError naming the key path and the nearest key")


def test_unknown_key_far_from_any_suggests_nothing_but_lists_valid_keys() -> None:
    with pytest.raises(ConfigError, match="Valid keys: .*epochs") as error:
        resolve_config(None, ["train.zzzzzz=1"])
    assert "Did you mean" not in str(error.value)


def test_setting_inside_a_value_is_an_error() -> None:
    with pytest.raises(ConfigError, match="train.epochs is a value, not a section"):
        resolve_config(None, ["train.epochs.x=1"])


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("train.epochs=abc", "train.epochs"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.loss=hinge", "train.loss"),
        ("optim.momentum=1.5", "optim.momentum"),
        ("augment.flip=[1, 2]", "augment.flip"),
    ],
)
def test_wrong_type_or_range_names_the_field(override: str, field: str, fault_table) -> None:
    with pytest.raises(ConfigError) as error:
        resolve_config(None, [override])
    assert field in str(error.value)
    assert "found" in str(error.value)  # and what was given
    fault_table("config: wrong type or out of range", 1, "ConfigError naming the field and value")


def test_free_form_sections_accept_anything() -> None:
    config = resolve_config(
        None,
        [
            "model.args.width=8",
            "model.args.anything_at_all={nested: [1, 2]}",
            "data.options.image_size=16",
            "data.options.made_up=yes",
        ],
    )
    assert config.model.args == {"width": 8, "anything_at_all": {"nested": [1, 2]}}
    assert config.data.options == {"image_size": 16, "made_up": True}


def test_malformed_override_shows_the_expected_form() -> None:
    with pytest.raises(ConfigError, match="section.field=value"):
        parse_override("train.epochs")
    with pytest.raises(ConfigError, match="section.field=value"):
        parse_override("=3")


def test_unparseable_yaml_value_is_kept_as_a_string() -> None:
    assert parse_override("data.name=folder:[x") == (["data", "name"], "folder:[x")


def write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_recipe_file_is_read_and_overridden(tmp_path: Path) -> None:
    path = write(tmp_path, "model: {name: mlp, args: {width: 16}}\ntrain: {epochs: 2}\n")
    config = resolve_config(path, ["train.epochs=3"])
    assert (config.model.name, config.model.args, config.train.epochs) == ("mlp", {"width": 16}, 3)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("data: [unclosed\n", "is not valid YAML"),
        ("- data\n- model\n", "must be a mapping of sections"),
        ("trainn: {epochs: 1}\n", "Did you mean 'train'"),
        ("train: {epochs: many}\n", "train.epochs"),
        ("train: {epochz: 1}\n", "Did you mean 'epochs'"),
    ],
    ids=["bad-yaml", "list-at-top", "unknown-section", "wrong-type", "unknown-field"],
)
def test_malformed_recipe_file_names_the_file_and_field(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        resolve_config(path)
    assert path in str(error.value)
    assert expected in str(error.value)


def test_missing_recipe_file_and_unknown_recipe_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_config(str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="did you mean 'mnist-best'"):
        resolve_config("mnist-bset")


def test_empty_recipe_file_gives_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    config = resolve_config(path)
    assert config.recipe == path  # a recipe, even an empty one: no model-family defaults
    assert config.model_copy(update={"recipe": None}) == RunConfig()


def test_dumped_config_round_trips() -> None:
    config = resolve_config("mnist-best", ["train.epochs=0.5", "model.args.width=8"])
    assert RunConfig.model_validate(yaml.safe_load(dump_config(config))) == config


@pytest.mark.parametrize(("text", "expected"), [("on", "on"), ("off", "off"), ("auto", "auto")])
def test_channels_last_on_off_survive_yaml_booleans(text: str, expected: str) -> None:
    """YAML 1.1 reads bare on/off as booleans; the documented values must still work."""
    config = resolve_config(None, [f"train.channels_last={text}"])
    assert config.train.channels_last == expected
    assert yaml.safe_load(dump_config(config))["train"]["channels_last"] == expected


@pytest.mark.parametrize(
    ("override", "field", "expected"),
    [
        ("train.tta=true", "tta", "flip"),
        ("train.tta=false", "tta", "off"),
        ("train.tta=flip+shift", "tta", "flip+shift"),
        ("augment.flip=true", "flip", "random"),
        ("augment.flip=no", "flip", "off"),
        ("augment.flip=alternate", "flip", "alternate"),
    ],
)
def test_flip_and_tta_modes_take_the_older_booleans(override: str, field: str, expected) -> None:
    config = resolve_config(None, [override])
    section = config.train if field == "tta" else config.augment
    assert getattr(section, field) == expected
    assert RunConfig.model_validate(yaml.safe_load(dump_config(config))) == config


def test_unknown_tta_mode_lists_the_modes() -> None:
    with pytest.raises(ConfigError, match="train.tta") as error:
        resolve_config(None, ["train.tta=rotate"])
    assert "flip+shift" in str(error.value)


def test_lookahead_and_ema_together_are_refused() -> None:
    with pytest.raises(ConfigError, match="lookahead_every and train.ema_decay"):
        resolve_config(None, ["train.lookahead_every=5", "train.ema_decay=0.99"])
    config = resolve_config("cifar10-airbench", ["train.lookahead_every=5"])
    assert config.train.lookahead_every == 5
