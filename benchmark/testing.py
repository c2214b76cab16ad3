"""Helpers for tests of the suite and of third-party plugins: a smaller-than-tiny model on the same code paths."""

from __future__ import annotations


def small_overrides(objective: str = "dream", **extra: object) -> dict[str, str]:
    """`--set` overrides for a smaller-than-tiny model (fast loop tests; same code paths as every preset). The
    objective's fields are set only where ``objective``'s settings have them (e.g. no CLIP head for MAR)."""
    from benchmark.config import plugin_class

    fields = plugin_class("objective", objective).Settings.field_names()
    base = {"model.width": "64", "model.depth": "4", "model.heads": "2", "model.buffer_tokens": "4",
            "model.head_width": "64", "model.head_depth": "2", "model.aligner_depth": "1",
            "objective.proj_hidden": "64", "objective.embed_dim": "32", "train.batch_size": "16",
            "data.n_train": "256", "eval.samples": "0", "schedule.group_size": "4"}
    base = {k: v for k, v in base.items() if not k.startswith("objective.") or k.split(".")[1] in fields}
    base.update({k: str(v) for k, v in extra.items()})
    return base
