"""Name → factory registries with helpful errors for unknown names."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


class UnknownNameError(KeyError):
    """Raised when a name is not in a registry; the message lists valid names and close matches."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain.
        return str(self.args[0])


@dataclass
class Entry:
    """One registered factory and what `neuralab models|datasets` shows about it."""

    name: str
    factory: Callable[..., Any]
    summary: str = ""
    info: dict[str, Any] = field(default_factory=dict)


class Registry:
    """A named collection of factories.

    Example:
        >>> models = Registry("model")
        >>> @models.register("tiny", summary="a tiny net")
        ... def tiny(**kwargs): ...
        >>> models.get("tiny").name
        'tiny'
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, summary: str = "", **info: Any) -> Callable:
        """Decorator that registers `factory` under `name` (names are unique)."""

        def decorate(factory: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            doc_line = (factory.__doc__ or "").strip().splitlines()
            self._entries[name] = Entry(
                name, factory, summary or (doc_line[0] if doc_line else ""), info
            )
            return factory

        return decorate

    def get(self, name: str) -> Entry:
        """The entry for `name`, or an UnknownNameError naming the closest valid names."""
        if name in self._entries:
            return self._entries[name]
        raise UnknownNameError(unknown_name_message(self.kind, name, self.names()))

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
