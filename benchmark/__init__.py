"""dream-bench: the reproducibility benchmark suite for DREAM (arXiv 2603.02667) and its baselines.

Plugin authors import everything from here::

    from benchmark import Objective, register_objective, MaskingSchedule, register_schedule, Task, register_task
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Objective": "objectives.base", "Masking": "objectives.base", "diffusion_loss": "objectives.base",
    "generative_loss": "objectives.base", "contrastive_loss": "objectives.base",
    "MaskingSchedule": "objectives.schedules", "truncated_normal": "objectives.schedules",
    "Task": "tasks.base", "extract_features": "tasks.base",
    "register_objective": "benchmark.registry", "register_schedule": "benchmark.registry",
    "register_task": "benchmark.registry", "RunConfig": "benchmark.config",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:  # lazy: `import benchmark` stays cheap and free of import cycles
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'benchmark' has no attribute {name!r}")
