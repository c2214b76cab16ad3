"""Which data a task name evaluates: a real name means real data, a synthetic stand-in carries a synthetic name.

* ``<task>/synthetic`` (and few-shot's ``fewshot/syn_<label>``) evaluates the embedded synthetic stand-in of a
  run trained on ``data=synthetic``; its metrics are stored under that name.
* A name of real data -- ``lp``/``ft``/``zeroshot`` (ImageNet-1K), ``robustness``, ``seg`` (ADE20K), ``depth``
  (NYU), ``fewshot`` / ``fewshot/<set>``, ``fid/cc12m``, ``fid/coco``, ``clip_score/<set>`` -- runs on that data
  or stops with exit 2 naming the missing path, before any training or model loading.
* A bare name on a synthetic run with no real root configured (``--tasks lp`` on the embedded default) is the
  stand-in: it runs as and is stored under ``<task>/synthetic``, never under the real name.

Tasks this table does not know (third-party plugins) keep their names and decide their data themselves.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SYNTHETIC = "synthetic"


@dataclass(frozen=True)
class Root:
    what: str  # the data set, as the message names it
    key: str  # eval.<field>
    env: str
    inside: tuple[str, ...] = ()  # entries the folder must hold

    def value(self, cfg: Any) -> str:
        return getattr(cfg.eval, self.key.split(".", 1)[1]) or os.environ.get(self.env, "")


IMAGENET = Root("ImageNet-1K", "eval.imagenet_root", "DREAM_BENCH_IMAGENET", ("train", "val"))
ROBUSTNESS = Root("the robustness sets", "eval.robustness_root", "DREAM_BENCH_ROBUSTNESS")
FEWSHOT = Root("the few-shot sets", "eval.fewshot_root", "DREAM_BENCH_FEWSHOT")
ADE20K = Root("ADE20K", "eval.ade20k_root", "DREAM_BENCH_ADE20K")
NYU = Root("NYU-Depth-v2", "eval.nyu_root", "DREAM_BENCH_NYU")
GEN_REF = Root("the generation reference folders", "eval.gen_root", "DREAM_BENCH_GEN_REF")

# The real data of each built-in task (the generation tasks' variant names a subfolder of eval.gen_root).
REAL_DATA: dict[str, tuple[Root, ...]] = {
    "lp": (IMAGENET,), "ft": (IMAGENET,), "zeroshot": (IMAGENET,), "robustness": (IMAGENET, ROBUSTNESS),
    "fewshot": (FEWSHOT,), "seg": (ADE20K,), "depth": (NYU,), "fid": (GEN_REF,), "clip_score": (GEN_REF,),
}
GEN_TASKS = ("fid", "clip_score")


@dataclass(frozen=True)
class Resolved:
    name: str  # the name the metrics are stored under
    variant: str | None  # what the task plugin is built with
    cfg: Any  # the config the task sees (its data.name says which data it evaluates)
    synthetic: bool
    note: str = ""  # why a bare name became the stand-in


def split(name: str) -> tuple[str, str | None]:
    base, _, variant = name.partition("/")
    return base, variant or None


def is_synthetic_name(name: str) -> bool:
    """``lp/synthetic``, ``fid/synthetic@12`` (an epoch snapshot), ``fewshot/syn_shape``."""
    _, variant = split(name.split("@", 1)[0])
    return variant is not None and (variant == SYNTHETIC or variant.startswith("syn_"))


def _roots(base: str, variant: str | None) -> tuple[Root, ...]:
    if base == "fewshot" and variant == "imagenet":
        return (IMAGENET,)
    return REAL_DATA[base]


def _configured(cfg: Any, base: str, variant: str | None) -> bool:
    return any(r.value(cfg) for r in _roots(base, variant))


def _check_roots(cfg: Any, name: str, base: str, variant: str | None) -> None:
    hint = f"; for the synthetic stand-in use --tasks {base}/synthetic" if cfg.data.name == SYNTHETIC else ""
    for r in _roots(base, variant):
        value = r.value(cfg)
        if not value:
            raise FileNotFoundError(f"{name} evaluates {r.what}: {r.key} is empty and ${r.env} is unset{hint}")
        path = Path(value)
        inside = (variant or "cc12m",) if base in GEN_TASKS else r.inside
        missing = [str(path / i) for i in inside if not (path / i).is_dir()] if path.is_dir() else [str(path)]
        if missing:
            raise FileNotFoundError(f"{name} evaluates {r.what}: {', '.join(missing)} does not exist "
                                    f"(set {r.key} or ${r.env}){hint}")


def resolve(name: str, cfg: Any) -> Resolved:
    """The stored name, plugin variant and config view of task ``name`` for a run with config ``cfg``; raises
    FileNotFoundError (missing real data) or ConfigError (a synthetic name on a real-data run)."""
    from benchmark.config import ConfigError

    if "@" in name:  # "lp@2": the same data question as "lp", the suffix kept on the stored name
        stem, at = name.split("@", 1)
        r = resolve(stem, cfg)
        return dataclasses.replace(r, name=f"{r.name}@{at}")
    base, variant = split(name)
    if base not in REAL_DATA:
        return Resolved(name, variant, cfg, cfg.data.name == SYNTHETIC)
    if is_synthetic_name(name):
        if cfg.data.name != SYNTHETIC:
            raise ConfigError(f"{name} evaluates the embedded synthetic stand-in, for runs trained on data=synthetic; "
                              f"this run trained on data={cfg.data.name}: use --tasks {base}")
        return Resolved(name, None if variant == SYNTHETIC else variant, cfg, True)
    if cfg.data.name == SYNTHETIC and variant is None and not _configured(cfg, base, variant):
        stored = f"{base}/{SYNTHETIC}"
        return Resolved(stored, None, cfg, True, f"{name}: no real data configured ({_roots(base, variant)[0].key}); "
                                                 f"evaluating the synthetic stand-in as {stored}")
    _check_roots(cfg, name, base, variant)
    view = cfg
    if cfg.data.name == SYNTHETIC:  # a synthetic-trained model on real data: the task takes its real-data path
        view = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, name="cc12m"))
    return Resolved(name, variant, view, False)


def preflight(cfg: Any, names: list[str]) -> list[Resolved]:
    """Resolve every task before any training or weight loading, so that missing data fails in one line first."""
    return [resolve(n, cfg) for n in names]
