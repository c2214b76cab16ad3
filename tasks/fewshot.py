"""Few-shot transfer (Table 3): N-way K-shot episodes on frozen, cached, mean-pooled encoder features.

Protocol (anchors-eval §1; lgssl's sampler, RFS's classifier): each episode draws ``way`` classes, ``shot``
support images per class from the set's train split and ``query`` query images per class from its test
split; the classifier is ``logreg`` (L2-normalised features, sklearn's multinomial LogisticRegression
objective with C = 1 and an intercept, solved for all episodes at once: ``tasks._logreg``) or ``proto``
(SimpleShot CL2N nearest centroid). Reported per set: mean accuracy (%), its std over episodes and the 95%
CI half-width 1.96 std / sqrt(episodes); ``avg`` is the mean over the sets.

On ``data=synthetic`` the "sets" are label definitions of the same held-out scenes (support pool = the
probe-train scenes, query pool = the probe-test scenes): ``syn_class`` (48 shape x colour), ``syn_shape``,
``syn_color``, ``syn_position``, ``syn_background`` (4 classes, so 4-way). They stand in for the 14 sets;
the tables mark them as not a reproduction.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from benchmark.tasks._features import cached, dataset_features
from benchmark.tasks._logreg import logreg_predict, prototype_predict
from benchmark.tasks.base import Task, TaskSettings, extract_features

from benchmark.config import ConfigError
from benchmark.registry import register_task
from benchmark.settings import check, choice


@dataclass
class FewShotSettings(TaskSettings):
    """5-way 5-shot transfer (§4.2, Table 3). ``--set task.fewshot.<field>=`` (or ``eval.fewshot_<field>``)."""

    prefix = "fewshot_"
    sets: list[str] = field(default_factory=list)  # empty = all 14 sets of Table 3 (synthetic: 5 labels)
    way: int = 5  # §4.2 "5-way, 5-shot"
    shot: int = 5
    query: int = 15  # queries per class (RFS; lgssl uses 6)
    episodes: int = 2000  # anchors-eval §1.2 (RFS 600, lgssl 5000)
    classifier: str = "logreg"  # logreg (the paper's "simple linear classifier", RFS) | proto (SimpleShot CL2N)
    C: float = 1.0  # sklearn LogisticRegression C (RFS)
    seed: int = 0  # episode sampling
    split_seed: int = 0  # seeded train/test splits of the sets without an official one

    def validate(self, run) -> None:
        choice("task.fewshot.classifier", self.classifier, ("logreg", "proto"))
        check(self.way >= 2 and self.shot >= 1 and self.query >= 1 and self.episodes >= 1,
              "task.fewshot.way >= 2, task.fewshot.shot, query and episodes >= 1")
        check(self.C > 0, f"task.fewshot.C must be > 0, got {self.C}")
        check(self.seed >= 0 and self.split_seed >= 0, "task.fewshot.seed and task.fewshot.split_seed must be >= 0")

SYNTHETIC_SETS = ("class", "shape", "color", "position", "background")


def sample_episodes(ytr: torch.Tensor, yte: torch.Tensor, episodes: int, way: int, shot: int, query: int,
                    generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Support indices into the train pool [E, way*shot], their episode labels 0..way-1, query indices into
    the test pool [E, way*q] and labels, and q (= ``query`` or fewer when a test class is smaller).
    Classes need >= ``shot`` train and >= 1 test images; draws are without replacement."""
    n_cls = int(max(ytr.max(), yte.max())) + 1
    cnt_tr = torch.bincount(ytr, minlength=n_cls)
    cnt_te = torch.bincount(yte, minlength=n_cls)
    eligible = torch.nonzero((cnt_tr >= shot) & (cnt_te >= 1)).flatten()
    if len(eligible) < way:
        raise ValueError(f"only {len(eligible)} classes have >= {shot} train and >= 1 test images; need {way}")
    q = int(min(query, int(cnt_te[eligible].min())))
    classes = eligible[torch.rand(episodes, len(eligible), generator=generator).argsort(1)[:, :way]]  # [E, way]
    s_idx = torch.empty(episodes, way, shot, dtype=torch.long)
    q_idx = torch.empty(episodes, way, q, dtype=torch.long)
    for pool_y, out, k in ((ytr, s_idx, shot), (yte, q_idx, q)):
        for c in classes.unique().tolist():
            members = torch.nonzero(pool_y == c).flatten()
            where = torch.nonzero(classes == c)  # (episode, slot) pairs that use class c
            pick = torch.rand(len(where), len(members), generator=generator).argsort(1)[:, :k]
            out[where[:, 0], where[:, 1]] = members[pick]
    s_lab = torch.arange(way).repeat_interleave(shot).expand(episodes, -1)
    q_lab = torch.arange(way).repeat_interleave(q).expand(episodes, -1)
    return s_idx.flatten(1), s_lab, q_idx.flatten(1), q_lab, q


def evaluate_episodes(ftr: torch.Tensor, ytr: torch.Tensor, fte: torch.Tensor, yte: torch.Tensor, episodes: int,
                      way: int, shot: int, query: int, classifier: str, C: float, seed: int) -> dict[str, float]:
    """Mean / std / 95% CI of per-episode accuracy (percent)."""
    g = torch.Generator().manual_seed(seed)
    s_idx, s_lab, q_idx, q_lab, q = sample_episodes(ytr, yte, episodes, way, shot, query, g)
    support, queries = ftr[s_idx], fte[q_idx]
    if classifier == "logreg":
        support = torch.nn.functional.normalize(support, dim=-1)  # RFS: L2-normalised features
        queries = torch.nn.functional.normalize(queries, dim=-1)
        pred = logreg_predict(support, s_lab, queries, way, C)
    elif classifier == "proto":
        pred = prototype_predict(support, s_lab, queries, way)
    else:
        raise ConfigError(f"task.fewshot.classifier={classifier!r} is not valid; choose one of: logreg, proto")
    acc = 100.0 * (pred == q_lab).double().mean(1)
    std = acc.std().item() if episodes > 1 else 0.0
    return {"mean": acc.mean().item(), "std": std, "ci95": 1.96 * std / math.sqrt(episodes), "queries": q}


@register_task("fewshot")
class FewShot(Task):
    """5-way 5-shot accuracy on the 14 sets of Table 3 (``fewshot/<set>`` runs one set)."""

    Settings = FewShotSettings
    version = 1
    higher_is_better = {k: True for k in ("avg", *(f"syn_{n}" for n in SYNTHETIC_SETS),
                                          "dtd", "caltech256", "sun397", "food101", "voc2007", "stl10", "flowers",
                                          "ucmerced", "eurosat", "country211", "resisc45", "dogs", "mit_indoors", "imagenet")}

    def _synthetic_pools(self, model, cfg):
        from benchmark.data import SYNTHETIC_SPLITS
        from benchmark.data.synthetic import SyntheticShapes, data_tag

        e, size = cfg.eval, cfg.model.image_size
        pools = {}
        for split, n in (("probe_train", e.n_probe_train), ("probe_test", e.n_probe_test)):
            ds = SyntheticShapes(n, seed=SYNTHETIC_SPLITS[split], image_size=size)
            feats = cached(model, f"{data_tag()}-{split}-n{n}-clean-center{size}-pool={e.lp_pool}",
                           lambda ds=ds: extract_features(model, ds.images, e.lp_pool, e.batch_size))
            pools[split] = (feats, ds.labels)
        return pools

    def run(self, model, cfg) -> dict[str, float]:
        e, f = cfg.eval, cfg.task_settings("fewshot")
        self._extra = {"way": f.way, "shot": f.shot, "episodes": f.episodes,
                       "classifier": f.classifier, "C": f.C, "seed": f.seed,
                       "pool": e.lp_pool, "features": "cached centre crop", "data": cfg.data.name, "sets": {}}
        out: dict[str, float] = {}
        if cfg.data.name == "synthetic":
            pools = self._synthetic_pools(model, cfg)
            (ftr, ltr), (fte, lte) = pools["probe_train"], pools["probe_test"]
            names = [self.variant.removeprefix("syn_")] if self.variant else list(f.sets or SYNTHETIC_SETS)
            for name in names:
                if name not in ltr:
                    raise ConfigError(f"unknown synthetic few-shot label {name!r}; valid: {', '.join(SYNTHETIC_SETS)}")
                way = min(f.way, int(ltr[name].max()) + 1)
                r = evaluate_episodes(ftr, ltr[name], fte, lte[name], f.episodes, way, f.shot,
                                      f.query, f.classifier, f.C, f.seed)
                self._record(out, f"syn_{name}", r, {"stands_in_for": "few-shot set", "label": name, "way": way,
                                                     "n_train": len(ftr), "n_test": len(fte)})
        else:
            from benchmark.data.evalsets import FEWSHOT_SETS, load_fewshot

            root = e.fewshot_root or os.environ.get("DREAM_BENCH_FEWSHOT", "")
            imagenet = e.imagenet_root or os.environ.get("DREAM_BENCH_IMAGENET", "")
            names = [self.variant] if self.variant else list(f.sets or FEWSHOT_SETS)
            for name in names:
                tr, te = load_fewshot(name, Path(root) if root else None, f.split_seed,
                                      Path(imagenet) if imagenet else None)
                size = cfg.model.image_size
                ftr = dataset_features(model, tr, size, e.lp_pool, e.batch_size, cfg.data.num_workers)
                fte = dataset_features(model, te, size, e.lp_pool, e.batch_size, cfg.data.num_workers)
                r = evaluate_episodes(ftr, torch.tensor(tr.labels), fte, torch.tensor(te.labels), f.episodes,
                                      f.way, f.shot, f.query, f.classifier,
                                      f.C, f.seed)
                self._record(out, name, r, {"n_train": len(tr), "n_test": len(te), "classes": len(tr.classes),
                                            "split_hash": {"train": tr.split_hash, "test": te.split_hash}})
        means = [v for k, v in out.items() if not k.endswith(("_std", "_ci95"))]
        out["avg"] = sum(means) / len(means)
        return out

    def _record(self, out: dict[str, float], key: str, r: dict[str, float], info: dict) -> None:
        out[key], out[f"{key}_std"], out[f"{key}_ci95"] = r["mean"], r["std"], r["ci95"]
        self._extra["sets"][key] = {**info, "queries_per_class": r["queries"]}

