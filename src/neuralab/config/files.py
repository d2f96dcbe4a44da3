"""Where a config comes from: shipped recipes or YAML files, keyword shortcuts and `--set
section.field=value` overrides, each key checked against the schema (sections.py) by its path."""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from neuralab.config.sections import FREE_FORM, RunConfig
from neuralab.errors import ConfigError


def recipe_names(folder: str = "recipes") -> list[str]:
    """Names of the recipes that ship inside the package (`recipes/rl` for agents)."""
    shipped = resources.files("neuralab").joinpath(*folder.split("/"))
    return sorted(p.name[:-5] for p in shipped.iterdir() if p.name.endswith(".yaml"))


def read_recipe(name_or_path: str, folder: str = "recipes") -> tuple[dict, str]:
    """The raw mapping of a shipped recipe name (in `folder` of the package) or a YAML path,
    and where it came from."""
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
        names = recipe_names(folder)
        if name_or_path not in names:
            from neuralab.registry import unknown_name_message

            raise ConfigError(unknown_name_message("recipe", name_or_path, names))
        shipped = resources.files("neuralab").joinpath(*folder.split("/"))
        text = (shipped / f"{name_or_path}.yaml").read_text("utf-8")
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


def apply_override(
    raw: dict, path: list[str], value: Any, schema: type[BaseModel] = RunConfig
) -> None:
    """Set raw[path...] = value, checking each key against the schema first."""
    check_path(path, schema)
    node = raw
    for key in path[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {'.'.join(path)}: {key} is not a section")
    node[path[-1]] = value


def check_path(path: list[str], schema: type[BaseModel] = RunConfig) -> None:
    """Raise ConfigError naming the first unknown key of a dotted path and the nearest valid one.

    Free-form sections (any keys) are the schema's `free_form` class attribute, if it has one.
    """
    model = schema
    free_form = free_form_of(schema)
    for depth, key in enumerate(path):
        fields = model.model_fields
        if key not in fields:
            where = ".".join(path[:depth]) or "the top level"
            raise ConfigError(
                unknown_key_message(".".join(path[: depth + 1]), key, list(fields), where)
            )
        if tuple(path[: depth + 1]) in free_form:
            return
        annotation = fields[key].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        elif depth < len(path) - 1:
            raise ConfigError(
                f"{'.'.join(path)}: {'.'.join(path[: depth + 1])} is a value, not a section"
            )


def free_form_of(schema: type[BaseModel]) -> set[tuple[str, ...]]:
    """The dotted paths under which `schema` takes any keys (RunConfig: FREE_FORM)."""
    return FREE_FORM if schema is RunConfig else getattr(schema, "free_form", set())


def unknown_key_message(full: str, key: str, valid: list[str], where: str) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown config key {full!r} in {where}.{hint} Valid keys: {', '.join(valid)}"


def build_config(raw: dict, origin: str = "config", schema: type[BaseModel] = RunConfig) -> Any:
    """Validate a raw mapping into a RunConfig (or another `schema`), translating pydantic
    errors into field paths."""
    for path in iter_paths(raw, free_form=free_form_of(schema)):
        try:
            check_path(path, schema)
        except ConfigError as error:  # overrides were checked on entry: this key is the file's
            raise ConfigError(f"{origin}: {error}") from None
    try:
        return schema.model_validate(raw)
    except ValidationError as error:
        lines = [f"{origin}: invalid configuration"]
        for item in error.errors():
            field = ".".join(str(p) for p in item["loc"])
            lines.append(f"  {field}: {item['msg']} (found {item.get('input')!r})")
        raise ConfigError("\n".join(lines)) from None


def iter_paths(
    raw: dict, prefix: tuple[str, ...] = (), free_form: set[tuple[str, ...]] = FREE_FORM
) -> list[list[str]]:
    """Every leaf key path of a nested mapping, stopping at free-form dictionaries."""
    paths = []
    for key, value in raw.items():
        path = (*prefix, str(key))
        if isinstance(value, dict) and path not in free_form:
            paths.extend(iter_paths(value, path, free_form) or [list(path)])
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
    "task": "task.name",
    "ways": "task.ways",
    "shots": "task.shots",
    "init_from": "train.init_from",
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
    if recipe:
        raw.setdefault("recipe", recipe)
    for key, value in fields.items():
        if value is not None:
            apply_override(raw, key.split("."), value)
    for text in overrides or []:
        apply_override(raw, *parse_override(text))
    return build_config(raw, origin)


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML (what a run directory stores as config.yaml)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
