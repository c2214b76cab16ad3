"""Plugin registries for objectives, masking schedules and tasks.

Built-ins register with a decorator when their module is imported (lazily, on first lookup);
third-party packages declare an entry point in the groups ``dream_bench.objectives``,
``dream_bench.schedules`` and ``dream_bench.tasks``; ``--include module_or_file.py`` imports a module
by hand (and is stored in the config so Slurm workers re-import it). Built-ins are never overridden.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import importlib.metadata
import importlib.util
import inspect
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

DISABLE_AUTOLOAD_ENV = "DREAM_BENCH_DISABLE_PLUGIN_AUTOLOAD"


class UnknownPluginError(KeyError):
    """An unknown plugin name; the message lists the valid choices."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, kind: str, group: str, builtin_modules: tuple[str, ...]) -> None:
        self.kind = kind
        self.group = group
        self.builtin_modules = builtin_modules
        self._items: dict[str, T] = {}
        self._origins: dict[str, str] = {}
        self._builtins_loaded = False
        self._entry_points_loaded = False

    # -- registration -------------------------------------------------------------------------
    def register(self, name: str, *, origin: str | None = None) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            self.add(name, obj, origin=origin)
            return obj

        return deco

    def add(self, name: str, obj: T, *, origin: str | None = None) -> None:
        if origin is None:
            mod = getattr(obj, "__module__", "?")
            builtin = mod.split(".")[0] == "benchmark"
            origin = "builtin" if builtin else f"module:{mod}"
            try:
                origin += f" ({Path(inspect.getfile(obj)).name})"  # type: ignore[arg-type]
            except (TypeError, OSError):
                pass
        if name in self._items and self._items[name] is not obj:
            raise ValueError(
                f"{self.kind} {name!r} is already registered ({self._origins[name]}); "
                f"refusing to replace it with one from {origin}"
            )
        self._items[name] = obj
        self._origins[name] = origin
        if isinstance(obj, type):
            obj.name = name  # type: ignore[attr-defined]

    # -- discovery ----------------------------------------------------------------------------
    def _load_builtins(self) -> None:
        if self._builtins_loaded:
            return
        for mod in self.builtin_modules:
            if mod.endswith(".*"):  # every module of a package: a new built-in is one new file, no edit here
                import pkgutil

                pkg = importlib.import_module(mod[:-2])
                for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
                    if not info.name.startswith("_") and info.name != "base":
                        importlib.import_module(f"{mod[:-2]}.{info.name}")
            else:
                importlib.import_module(mod)
        self._builtins_loaded = True

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded or os.environ.get(DISABLE_AUTOLOAD_ENV):
            return
        try:
            eps = importlib.metadata.entry_points(group=self.group)
        except Exception as e:  # never cache a failed discovery (lm-eval #4203)
            log.warning("could not read entry points %s: %s", self.group, e)
            return
        for ep in eps:
            if ep.name in self._items:
                if not self._origins[ep.name].startswith("entry_point"):
                    log.warning(
                        "%s %r from entry point %s ignored: the name is taken by %s",
                        self.kind, ep.name, ep.value, self._origins[ep.name],
                    )
                continue
            dist = f"{ep.dist.name}=={ep.dist.version}" if ep.dist else "?"
            try:
                obj = ep.load()
            except Exception as e:  # a broken plugin must not break `list` or other plugins
                log.warning("skipping %s plugin %r (%s): %s", self.kind, ep.name, ep.value, e)
                continue
            self._items[ep.name] = obj
            self._origins[ep.name] = f"entry_point:{dist} ({ep.value})"
            if isinstance(obj, type) and not getattr(obj, "name", ""):
                obj.name = ep.name
        self._entry_points_loaded = True

    def _load(self) -> None:
        self._load_builtins()
        self._load_entry_points()

    # -- lookup -------------------------------------------------------------------------------
    def get(self, name: str) -> T:
        """The plugin called ``name``; a task may carry a variant, ``fid/coco`` -> the ``fid`` task."""
        self._load()
        name = self._base(name)
        if name not in self._items:
            raise UnknownPluginError(self.unknown_message(name))
        return self._items[name]

    def _base(self, name: str) -> str:
        """A task entry's plugin name: "fid/coco" (a variant) and "lp@12" (the epoch-12 snapshot) -> "fid", "lp"."""
        return name.split("/", 1)[0].split("@", 1)[0] if self.kind == "task" else name

    def unknown_message(self, name: str) -> str:
        names = sorted(self._items)
        close = difflib.get_close_matches(name, names, n=3)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return (
            f"unknown {self.kind} {name!r}.{hint} Valid choices: {', '.join(names)}. "
            f"(Third-party {self.kind}s: install a package with entry point group {self.group}, "
            f"or pass --include your_module.py.)"
        )

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._items

    def names(self, pattern: str = "*") -> list[str]:
        self._load()
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def origin(self, name: str) -> str:
        self.get(name)  # an unknown name: the UnknownPluginError with the choices, not a bare KeyError
        return self._origins[self._base(name)]


def include(path_or_module: str) -> None:
    """Import a module (dotted name) or a ``.py`` file so that its ``register_*`` calls run."""
    if path_or_module.endswith(".py") or os.sep in path_or_module:
        path = Path(path_or_module).resolve()
        if not path.exists():
            raise FileNotFoundError(f"--include {path_or_module}: no such file")
        name = f"dream_bench_include_{path.stem}"
        if name in sys.modules:
            return
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    else:
        importlib.import_module(path_or_module)


# Every module of the built-in packages is scanned, so a new built-in plugin is one new file with no edit here.
objectives: Registry[Any] = Registry("objective", "dream_bench.objectives", ("benchmark.objectives.*",))
schedules: Registry[Any] = Registry("schedule", "dream_bench.schedules", ("benchmark.objectives.*",))
tasks: Registry[Any] = Registry("task", "dream_bench.tasks", ("benchmark.tasks.*",))

register_objective = objectives.register
register_schedule = schedules.register
register_task = tasks.register
