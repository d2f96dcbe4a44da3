"""The flags that set run-config fields: one table, used by every verb that takes them (train,
lr-find, summary) and by `train --resume`, which must be given none of them.

A flag's argparse destination is also the keyword of the Python API functions that take it
(`neuralab.summary(data=..., model=..., data_dir=...)`), so a verb either resolves the config
itself (`config_fields`) or hands the values to the API (`api_arguments`).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from neuralab.config import SHORTCUTS


@dataclass(frozen=True)
class ConfigFlag:
    """A command-line flag that sets one config field.

    Attributes:
        dest: the argparse destination (`batch_size` for `--batch-size`), also the Python
            API's keyword; `config.SHORTCUTS` names the field it sets (`train.batch_size`).
        options: `add_argument` options other than the help text (type, action).
    """

    dest: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def config_field(self) -> str:
        """The dotted config field, from the API's table (`config.SHORTCUTS`)."""
        return SHORTCUTS[self.dest]

    @property
    def flag(self) -> str:
        """`--batch-size` for `batch_size`."""
        return "--" + self.dest.replace("_", "-")


CONFIG_FLAGS: dict[str, ConfigFlag] = {
    flag.dest: flag
    for flag in (
        ConfigFlag("data"),
        ConfigFlag("model"),
        ConfigFlag("epochs", {"type": float}),
        ConfigFlag("batch_size", {"type": int}),
        ConfigFlag("lr", {"type": float}),
        ConfigFlag("seed", {"type": int}),
        # store_const, not store_true: unset must stay None so the recipe's value stands.
        ConfigFlag("deterministic", {"action": "store_const", "const": True}),
        ConfigFlag("data_dir"),
        ConfigFlag("out"),
        ConfigFlag("task"),
        ConfigFlag("ways", {"type": int}),
        ConfigFlag("shots", {"type": int}),
        ConfigFlag("init_from"),
    )
}


def add_recipe(parser: argparse.ArgumentParser, help: str) -> None:
    """`--recipe NAME|PATH`: the config the flags and `--set` start from."""
    parser.add_argument("--recipe", help=help)


def add_config_flags(
    parser: argparse.ArgumentParser, helps: dict[str, str | None], positional: str = ""
) -> None:
    """Add the config flags named by `helps` (dest → help text), in that order.

    `positional` names one of them that is taken as an optional positional argument instead
    (`neuralab summary MODEL`). The parser remembers which config flags it took, for
    `config_fields`, `api_arguments` and `given_flags`.
    """
    for dest, help in helps.items():
        flag = CONFIG_FLAGS[dest]
        if dest == positional:
            parser.add_argument(dest, nargs="?", help=help, **flag.options)
        else:
            parser.add_argument(flag.flag, help=help, **flag.options)
    taken = parser.get_default("config_flags") or ()
    parser.set_defaults(config_flags=(*taken, *helps))


def add_overrides(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    """`--set KEY=VALUE` (repeatable): any config field, applied after the recipe and flags."""
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help
    )


def config_fields(args: argparse.Namespace) -> dict[str, Any]:
    """{dotted config field: value} of the config flags this verb takes (None: not given)."""
    return {CONFIG_FLAGS[dest].config_field: getattr(args, dest) for dest in args.config_flags}


def api_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """{API keyword: value} of the config flags this verb takes (None: not given)."""
    return {dest: getattr(args, dest) for dest in args.config_flags}


def given_flags(args: argparse.Namespace) -> list[str]:
    """The flags given that would change the config: `--recipe`, config flags, `--set`."""
    given = ["--recipe"] if args.recipe is not None else []
    given += [
        CONFIG_FLAGS[dest].flag for dest in args.config_flags if getattr(args, dest) is not None
    ]
    return given + ["--set"] * bool(args.overrides)
