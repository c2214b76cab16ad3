"""Plugin-owned settings: every objective, masking schedule and task declares its fields as a dataclass next
to its code (``Settings``), with defaults, the paper's values and a ``validate()``.

``--set objective.<field>=...`` / ``schedule.<field>`` / ``task.<name>.<field>`` are checked against the
dataclass of the *selected* plugin; the run record stores these settings and the run id hashes those of the
objective and the schedule. A field whose paper text differs from the released code carries the paper's value
in its metadata (``paper(default, value)``): ``--recipe paper`` applies it.

This module is the bottom of the import graph: it imports nothing from the package.
"""

from __future__ import annotations

import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any


class ConfigError(ValueError):
    """A bad configuration value; the message is one line that says what is valid."""


def paper(default: Any, value: Any) -> Any:
    """A dataclass field whose default is the released code's value and whose ``--recipe paper`` value differs."""
    return field(default=default, metadata={"paper": value})


def check(ok: bool, msg: str) -> None:
    if not ok:
        raise ConfigError(msg)


def choice(key: str, value: str, valid: tuple[str, ...]) -> None:
    check(value in valid, f"{key}={value!r} is not valid; choose one of: {', '.join(valid)}")


@dataclass
class Settings:
    """Base of every plugin's settings. ``name`` is the plugin's registry name (set by ``--objective`` etc.)."""

    name: str = ""

    def validate(self, run: Any) -> None:
        """Raise ``ConfigError`` (one line, naming the field and what is valid). ``run`` is the whole
        ``RunConfig``, for checks against other sections (e.g. a layer index <= the encoder depth)."""

    @classmethod
    def field_names(cls) -> list[str]:
        """The fields a user may set (``name`` is chosen by ``--objective``/``--schedule``, not set)."""
        return [f.name for f in fields(cls) if f.name != "name"]

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in fields(cls)}

    @classmethod
    def paper_values(cls) -> dict[str, Any]:
        """Fields whose paper text differs from the released code: ``{field: paper value}``."""
        return {f.name: f.metadata["paper"] for f in fields(cls) if "paper" in f.metadata}

    @classmethod
    def describe(cls) -> list[str]:
        """One line per field: ``name: type = default (paper: value)``, for ``list objectives -v``."""
        types = cls.field_types()
        out = []
        for f in fields(cls):
            if f.name == "name":
                continue
            default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
            typ = getattr(types[f.name], "__name__", str(types[f.name]))
            extra = f"  (paper: {f.metadata['paper']!r})" if "paper" in f.metadata else ""
            out.append(f"{f.name}: {typ} = {default!r}{extra}")
        return out
