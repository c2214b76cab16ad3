"""dream-bench: the reproducibility benchmark suite for DREAM (arXiv 2603.02667) and its baselines.

Plugin authors import everything from here::

    from benchmark import Objective, ObjectiveSettings, Capabilities, register_objective
    from benchmark import MaskingSchedule, MaskingSettings, register_schedule, Task, TaskSettings, register_task
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    **dict.fromkeys(("Objective", "ObjectiveSettings", "Capabilities", "Masking", "diffusion_loss", "generative_loss",
                     "contrastive_loss"), "benchmark.objectives.base"),
    **dict.fromkeys(("MaskingSchedule", "MaskingSettings", "truncated_normal"), "benchmark.objectives.schedules"),
    **dict.fromkeys(("Task", "TaskSettings", "extract_features"), "benchmark.tasks.base"),
    **dict.fromkeys(("Settings", "ConfigError", "paper", "check", "choice"), "benchmark.settings"),
    **dict.fromkeys(("register_objective", "register_schedule", "register_task"), "benchmark.registry"),
    "RunConfig": "benchmark.config",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:  # lazy: `import benchmark` stays cheap and free of import cycles
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'benchmark' has no attribute {name!r}")
