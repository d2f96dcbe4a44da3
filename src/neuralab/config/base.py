"""The base of every config section (unknown keys refused, assignments validated) and the
fields a section sets explicitly."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def explicit_fields(section: BaseModel) -> dict[str, Any]:
    """The fields of `section` that were set explicitly to something other than their default.

    Factories that declare their own settings (optimizers, schedules) get only these, so a
    setting the chosen factory does not take is an error rather than silently ignored. A field
    set to its default counts as unset: a run directory's config.yaml holds every field, and
    resuming from it must not trip over, say, adam's unused `momentum: 0.0`.

    Example: `explicit_fields(OptimConfig(name="adam", momentum=0.0))` is {'name': 'adam'}.
    """
    fields = type(section).model_fields
    return {
        name: getattr(section, name)
        for name in fields
        if name in section.model_fields_set
        and getattr(section, name) != fields[name].get_default(call_default_factory=True)
    }
