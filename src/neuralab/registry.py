"""Name → factory registries: one convention for models, datasets, optimizers, schedules and tasks.

A registry maps a name to a factory. `build(name, *supplied, **arguments)` finds the entry,
checks `arguments` against the factory's signature before calling it (an unknown or missing
argument is an error that names the registry kind, the entry and the valid arguments, with
close-name suggestions), then calls it. The leading parameters that the caller fills in (a
model's spec, an optimizer's model) are the registry's `supplied` parameters: they are passed
positionally, are not user arguments, and are left out of listings.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from neuralab.errors import UserError

# Parameter kinds that are not named arguments (`*args`, `**kwargs`).
VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
GLOB_CHARACTERS = "*?["


class UnknownNameError(UserError, KeyError):
    """Raised when a name is not in a registry; the message lists valid names and close matches."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain.
        return str(self.args[0])


class UnknownArgumentError(UserError, TypeError):
    """An argument a registered factory does not take, or a required one left out.

    Attributes name the registry `kind` ("model"), the `entry` ("resnet18") and the offending
    `argument`, so a caller can rephrase the message in its own terms (e.g. a config path).
    """

    def __init__(self, message: str, kind: str, entry: str, argument: str) -> None:
        super().__init__(message)
        self.kind, self.entry, self.argument = kind, entry, argument


class InvalidArgumentError(UserError, ValueError):
    """A registered factory's argument has a value it cannot use (an unknown `pooling`, a model
    too large for the images, `train_until` naming no parameter); the message names the entry,
    the argument, what was found and what would work."""


class Required:
    """The default of an argument that has none (shown as the bare name in listings)."""

    def __repr__(self) -> str:
        return "<required>"


REQUIRED = Required()


@dataclass(frozen=True)
class Argument:
    """One argument a factory takes: its name, default (REQUIRED if none) and type annotation."""

    name: str
    default: Any = REQUIRED
    annotation: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def __str__(self) -> str:
        """`width=512`, or `path` for a required argument."""
        return self.name if self.required else f"{self.name}={self.default!r}"


@dataclass
class Entry:
    """One registered factory and what `neuralab models|datasets` shows about it.

    `supplied` names the factory's leading parameters that the caller fills in (not arguments).
    """

    name: str
    factory: Callable[..., Any]
    summary: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    supplied: tuple[str, ...] = ()

    def arguments(self) -> list[Argument]:
        """The arguments a user may pass, in signature order, with their defaults."""
        found = []
        for parameter in inspect.signature(self.factory).parameters.values():
            if parameter.kind in VARIADIC or parameter.name in self.supplied:
                continue
            default = REQUIRED if parameter.default is parameter.empty else parameter.default
            annotation = "" if parameter.annotation is parameter.empty else parameter.annotation
            found.append(Argument(parameter.name, default, str(annotation)))
        return found

    def takes_any_argument(self) -> bool:
        """Whether the factory has a `**kwargs` catch-all (then any name passes the check)."""
        parameters = inspect.signature(self.factory).parameters.values()
        return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


class Registry:
    """A named collection of factories.

    Example:
        >>> models = Registry("model", supplied=("spec",))
        >>> @models.register("tiny", summary="a tiny net")
        ... def tiny(spec, *, width=8): return (spec, width)
        >>> models.build("tiny", "S", width=2)
        ('S', 2)
        >>> [str(a) for a in models.get("tiny").arguments()]
        ['width=8']
    """

    def __init__(self, kind: str, supplied: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.supplied = supplied
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, summary: str = "", **info: Any) -> Callable:
        """Decorator that registers `factory` under `name` (names are unique)."""

        def decorate(factory: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            doc_line = (factory.__doc__ or "").strip().splitlines()
            summary_line = summary or (doc_line[0] if doc_line else "")
            self._entries[name] = Entry(name, factory, summary_line, info, self.supplied)
            return factory

        return decorate

    def get(self, name: str) -> Entry:
        """The entry for `name`, or an UnknownNameError naming the closest valid names."""
        if name in self._entries:
            return self._entries[name]
        raise UnknownNameError(unknown_name_message(self.kind, name, self.names()))

    def check(self, name: str, **arguments: Any) -> Entry:
        """The entry for `name` once `arguments` are known to fit its factory's signature.

        Raises UnknownNameError for an unknown name and UnknownArgumentError for an argument
        the factory does not take or a required one missing. Call it to fail early, before
        slow work, with the arguments `build` will get.
        """
        entry = self.get(name)
        valid = entry.arguments()
        names = [argument.name for argument in valid]
        if not entry.takes_any_argument():
            for given in arguments:
                if given not in names:
                    message = unknown_argument_message(self.kind, name, given, valid)
                    raise UnknownArgumentError(message, self.kind, name, given)
        for argument in valid:
            if argument.required and argument.name not in arguments:
                message = missing_argument_message(self.kind, name, argument.name, valid)
                raise UnknownArgumentError(message, self.kind, name, argument.name)
        return entry

    def build(self, name: str, *supplied: Any, **arguments: Any) -> Any:
        """Check `arguments` (see `check`), then call the factory of `name`.

        Args:
            name: a registered name.
            supplied: the values of the registry's supplied parameters, in order.
            arguments: the user's arguments, checked against the factory's signature.
        """
        return self.check(name, **arguments).factory(*supplied, **arguments)

    def entries(self, pattern: str | None = None) -> list[Entry]:
        """Entries sorted by name; `pattern` is a glob (`resnet*`) or else a substring, ignoring
        case."""
        if not pattern:
            return list(self)
        wanted = pattern.lower()
        if any(character in wanted for character in GLOB_CHARACTERS):
            return [entry for entry in self if fnmatch.fnmatchcase(entry.name.lower(), wanted)]
        return [entry for entry in self if wanted in entry.name.lower()]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries[name] for name in self.names())


def unknown_name_message(kind: str, name: str, valid: list[str]) -> str:
    """`unknown model 'resnt18'; did you mean 'resnet18'? valid: ...`."""
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown {kind} {name!r}{hint} Valid {kind}s: {', '.join(valid)}"


def unknown_argument_message(kind: str, name: str, given: str, valid: list[Argument]) -> str:
    """`model 'mlp' takes no argument 'widht'; did you mean 'width'? Valid arguments: ...`."""
    close = difflib.get_close_matches(given, [a.name for a in valid], n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else "."
    return f"{kind} {name!r} takes no argument {given!r}{hint} {valid_arguments(valid)}"


def missing_argument_message(kind: str, name: str, missing: str, valid: list[Argument]) -> str:
    return f"{kind} {name!r} needs the argument {missing!r}. {valid_arguments(valid)}"


def valid_arguments(valid: list[Argument]) -> str:
    if not valid:
        return "It takes no arguments."
    return f"Valid arguments: {', '.join(str(argument) for argument in valid)}"
