"""The paper's tables as specs, and `python -m benchmark table N`: our numbers beside the paper's.

A table only reads files: ``<runs_dir>/*/record.json`` (completed runs whose task versions are current) and
``results/paper/table_NN.csv`` (the paper's numbers, long format ``table,row,column,value,note``). Each record
goes to the first row whose ``match`` it satisfies (dotted keys into the record, e.g. ``config.schedule.sigma``).
A row shows the seeds of ONE setting (same config but the seed), averaged (± std where there are several): the
paper's setting (``RowSpec.paper``: preset, data, recipe, config values) if present, else the closest one, marked
† and never passed off as a reproduction (no Δ when the data set differs). Cells of a column whose metric the
record lacks may show a ``ColSpec.fallback`` metric of another kind (fd_ref / agreement on synthetic data),
marked ‡, without Δ. Rows of Tables 6 and 17 read ``RowSpec.variant`` (a `bench sample` entry) instead of the
column's task variant.

Ablation tables (4, 5, 7, 8, 10-17) are stored transposed with respect to the paper: one row per setting,
one column per metric.
"""

from __future__ import annotations

import csv
import functools
import importlib.resources
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.records import RecordError, read_record, warn_skipped
from benchmark.taskdata import GEN_TASKS, REAL_DATA, SYNTHETIC, is_synthetic_name

log = logging.getLogger(__name__)
PAPER_DIR = Path(str(importlib.resources.files("benchmark.results"))) / "paper"  # package data: works from a wheel too
DEFAULT_RUNS = "results/runs"
FORMATS = ("md", "csv", "latex", "json")
# Version of each task for tasks this install does not register (the registered task's ``version`` wins, see
# task_versions); a record whose task has another version is never mixed into a table. "sad": bench_sample.SAD_VERSION.
TASK_VERSIONS: dict[str, int] = {"lp": 1, "ft": 1, "robustness": 1, "fewshot": 1, "seg": 1, "depth": 1, "fid": 1,
                                 "clip_score": 1, "zeroshot": 1, "sad": 1}
MARK = "†"  # a row whose runs used another setting than the paper's (e.g. tiny on synthetic)
OTHER = "‡"  # a cell holding another metric than the paper's (synthetic stand-ins for FID / CLIP score)
MISSING = "—"
# Metrics the generation tasks report on synthetic data instead of FID / CLIP score (issue 3's contract).
# They are shown with OTHER and never compared with the paper's number.
OTHER_METRICS = {
    "fd_ref": "Fréchet distance in a synthetic reference network's features, not FID",
    "agreement": "caption agreement (%) of a synthetic reference classifier, not CLIP score",
}
# Tasks whose metrics `bench sample` writes (not a `--tasks` entry): Tables 6 and 17.
SAMPLE_TASKS = ("sad",)


@dataclass(frozen=True)
class ColSpec:
    label: str
    metric: str  # "<task variant>.<metric>", e.g. "lp.top1", "fid/cc12m.fid", "zeroshot.acc@0.5"
    fmt: str = ".1f"
    scale: float = 1.0
    higher_is_better: bool = True
    tolerance: float = 0.5  # absolute points
    # other metrics (same "<variant>.<metric>" form) shown when the record lacks ``metric``: the synthetic-data
    # stand-ins of OTHER_METRICS, marked OTHER and with no Δ
    fallback: tuple[str, ...] = ()

    @property
    def variant(self) -> str:
        return self.metric.split(".", 1)[0]

    @property
    def task(self) -> str:
        return _task(self.variant)


def _synthetic_key(key: str) -> str | None:
    """"lp.top1" -> "lp/synthetic.top1": the stand-in of a task evaluated on its default (real) data set."""
    variant, metric = key.split(".", 1)
    if "/" in variant or _task(variant) not in REAL_DATA or _task(variant) in GEN_TASKS:
        return None  # the generation columns name their stand-in (fd_ref, agreement) in ColSpec.fallback
    return f"{variant.replace(_task(variant), _task(variant) + '/' + SYNTHETIC, 1)}.{metric}"


def _task(variant: str) -> str:
    """"fid/coco" -> "fid", "lp@12" -> "lp", "sad/k1-nfe64-self" -> "sad"."""
    return variant.split("/", 1)[0].split("@", 1)[0]


@dataclass(frozen=True)
class RowSpec:
    label: str
    match: dict[str, Any]  # required: dotted keys into the record
    paper: dict[str, Any] = field(default_factory=lambda: {"preset": "L", "data": "cc12m", "recipe": "official"})
    # the metric variant that replaces the columns' task variant for this row, e.g. "sad/k9-nfe128-self"
    # (Tables 6, 17: `bench sample` writes one variant per decoding setting into one run's record)
    variant: str | None = None

    def metrics(self, col: ColSpec) -> list[str]:
        """The record keys ("<variant>.<metric>") that fill ``col`` in this row, primary first; a column of a task
        with a synthetic stand-in also reads ``<task>/synthetic.<metric>`` (shown marked OTHER, never as real)."""
        keys = [col.metric, *col.fallback]
        stand_in = _synthetic_key(col.metric)
        if stand_in and stand_in not in keys and not any(is_synthetic_name(k.split(".", 1)[0]) for k in keys):
            keys.append(stand_in)
        if self.variant is None:
            return keys
        return [f"{self.variant}.{k.split('.', 1)[1]}" if _task(k.split(".", 1)[0]) == _task(self.variant) else k
                for k in keys]

    def matches(self, rec: dict[str, Any]) -> bool:
        return all(_eq(_get(rec, k), v) for k, v in self.match.items())

    def differs(self, rec: dict[str, Any]) -> dict[str, Any]:
        """The paper-setting fields this record does not share: {key: record value}."""
        return {k: _get(rec, k) for k, v in self.paper.items() if not _eq(_get(rec, k), v)}


@dataclass(frozen=True)
class TableSpec:
    number: int
    title: str
    rows: list[RowSpec]
    columns: list[ColSpec]

    @property
    def paper_csv(self) -> Path:
        return PAPER_DIR / f"table_{self.number:02d}.csv"

    def tasks(self) -> list[str]:
        """The task names of the columns (for version checks)."""
        return list(dict.fromkeys(c.task for c in self.columns))

    def run_tasks(self, row: RowSpec | None = None) -> list[str]:
        """The ``--tasks`` entries that fill the columns (task variants; `bench sample` ones excluded); for a
        ``row``, only the columns the paper reports for it (no FID for CLIP or MAR: they cannot generate)."""
        cols = self.columns
        if row is not None:
            reported = {c for r, c in paper_values(self.number) if r == row.label}
            cols = [c for c in cols if c.label in reported] or cols
        return list(dict.fromkeys(c.variant for c in cols if c.task not in SAMPLE_TASKS))

    def overrides(self, row: RowSpec) -> dict[str, Any]:
        """The config override dict that fills ``row`` (used by ``sweep``)."""
        m = row.match
        recipe = row.paper.get("recipe", "official")
        # DREAM's official defaults (BASE) need no --set; every other config key in the match is spelled out
        implied = {}
        if m.get("objective", "dream") == "dream":  # the recipes' defaults need no --set (paper: sigma 0.55)
            implied = {**BASE, "config.schedule.sigma": 0.55} if recipe == "paper" else BASE
        sets = {k[len("config."):]: v for k, v in m.items()
                if k.startswith("config.") and not (k in implied and _eq(implied[k], v))}
        # the paper's setting of the row beyond its match (e.g. REPA's CLIP-L teacher in Table 2): a run at another
        # preset takes that preset's own values instead (a tiny encoder has no layer 6 and no CLIP-L weights)
        paper_sets = {k[len("config."):]: v for k, v in row.paper.items()
                      if k.startswith("config.") and k not in m and not (k in implied and _eq(implied[k], v))}
        for k, (field_, _) in DERIVED.items():  # e.g. a warm-up fraction -> schedule.warmup_epochs of 48
            if k in m and not (k in implied and _eq(implied[k], m[k])):
                sets[field_] = ("fraction", m[k])  # of the run's own epochs (48 at the paper's setting)
        # Tables 7, 8, 16 compare encoder layers up to 12: at a smaller preset every row gets an encoder that deep
        layers = [r.match.get(k, 0) for r in self.rows for k in ("config.objective.clip_layer", "config.objective.repa_layer")]
        return {"objective": m.get("objective", "dream"), "schedule": m.get("schedule"),
                "preset": row.paper.get("preset", "L"), "data": row.paper.get("data", "cc12m"),
                "recipe": recipe, "set": sets, "paper_set": paper_sets, "tasks": self.run_tasks(row),
                "sample": row.variant is not None, "encoder_depth": max(layers, default=0)}

    def grid(self) -> list[dict[str, Any]]:
        return [self.overrides(r) for r in self.rows]

    def command(self, row: RowSpec, preset: str | None = None, data: str | None = None) -> str:
        """The command that fills ``row``: at the paper's setting, or at ``preset``/``data`` (those of the runs the
        table already holds, e.g. tiny on synthetic data: the row's own settings, the synthetic task names)."""
        o = self.overrides(row)
        preset, data = preset or o["preset"], data or o["data"]
        parts = ["python -m benchmark run", f"--objective {o['objective']}"]
        if o["schedule"]:
            parts.append(f"--schedule {o['schedule']}")
        parts += [f"--preset {preset}", f"--data {data}", f"--recipe {o['recipe']}"]
        if data == "cc12m":  # the CC12M-50K FID reference pairs stay out of training (`benchmark genref`)
            parts.append("--set data.holdout=50000")
        sets = {**(o["paper_set"] if preset == o["preset"] else {}), **o["set"]}
        epochs = ABL_EPOCHS
        if preset != o["preset"]:
            from benchmark.config import build_config

            own = build_config(o["objective"], o["schedule"], preset, o["recipe"], {"data.name": data})
            epochs = own.train.epochs
            if own.model.depth < 2 * o["encoder_depth"]:  # as `sweep` does: the encoder is the first half
                sets = {"model.depth": 2 * o["encoder_depth"], **sets}
        parts += [f"--set {k}={_fmt_value(round(v[1] * epochs, 6) if isinstance(v, tuple) else v)}"
                  for k, v in sets.items()]
        tasks = o["tasks"]
        if data == "synthetic":
            tasks = synthetic_names(tasks)
        parts.append(f"--tasks {','.join(tasks) or 'none'}")
        cmd = " ".join(parts)
        return cmd + " && python -m benchmark bench sample --run <run dir>" if o["sample"] else cmd


# Tasks with a synthetic stand-in stored as <task>/synthetic (what a tiny sweep on synthetic data asks for).
STAND_IN_TASKS = ("lp", "ft", "zeroshot", "robustness", "fewshot", "seg", "depth", "fid", "clip_score")


def synthetic_names(tasks: list[str]) -> list[str]:
    """The synthetic stand-ins of real-data task names: ``lp`` -> ``lp/synthetic``, ``fid/coco`` and
    ``fid/cc12m`` -> ``fid/synthetic``, ``lp@12`` -> ``lp/synthetic@12``; other tasks keep their names."""
    out = []
    for t in tasks:
        name, at, epoch = t.partition("@")
        base = name.split("/", 1)[0]
        out.append(f"{base}/synthetic{at}{epoch}" if base in STAND_IN_TASKS else t)
    return list(dict.fromkeys(out))


def _fmt_value(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


# Keys computed from the record. The masking warm-up is matched as a fraction of training (36 of 48 epochs in the
# released recipe, Table 21) so that presets with other epoch counts (tiny: 3 of 4) keep the paper's proportion.
ABL_EPOCHS = 48.0  # training epochs of the ablation runs (official recipe, Table 21)
DERIVED = {"derived.warmup_frac": ("schedule.warmup_epochs", "train.epochs")}  # key: (numerator = field set, denominator)


def _get(rec: dict[str, Any], key: str) -> Any:
    if key in DERIVED:
        num, den = DERIVED[key]
        a, b = _get(rec, f"config.{num}"), _get(rec, f"config.{den}")
        return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None
    cur: Any = rec
    for part in key.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _eq(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


# ---------------------------------------------------------------- specs
def _c(label: str, metric: str, fmt: str = ".1f", hib: bool = True, tol: float = 0.5,
       fallback: tuple[str, ...] = ()) -> ColSpec:
    return ColSpec(label, metric, fmt, 1.0, hib, tol, fallback)


# On synthetic data the generation tasks store fd_ref / agreement under fid/synthetic, clip_score/synthetic (a real
# name means real data): the CC12M columns (the training distribution) show them marked; COCO has no stand-in.
CC12M_FID = ("fid/synthetic.fd_ref",)
CC12M_CS = ("clip_score/synthetic.agreement",)
LP = _c("LP", "lp.top1")
FID = _c("FID", "fid/cc12m.fid", ".2f", False, 0.1, CC12M_FID)
MAIN = {"preset": "L", "data": "cc12m", "recipe": "paper"}  # Tables 1-3, 9: main results (§4, sigma 0.55)
ABL = {"preset": "L", "data": "cc12m", "recipe": "official"}  # ablations: DREAM-L, sigma 0.45 (§5)
# The DREAM-L ablation default (§5, Table 21): every ablation row differs from it in one field.
BASE = {"objective": "dream", "schedule": "wm", "config.schedule.sigma": 0.45, "config.objective.gamma": 0.5,
        "config.objective.phi": 0.75, "config.objective.clip_weight": 0.005, "config.objective.clip_pool": "all",
        "config.objective.clip_layer": 0, "derived.warmup_frac": 36 / 48}
# §4: DREAM's main results use sigma 0.55 and the defaults otherwise; in the row's setting, not its match, so
# that any DREAM-WM run can show there (marked) and the one closest to the paper's is chosen
MAIN_DREAM = {**MAIN, **{k: v for k, v in BASE.items() if k.startswith("config.")}, "config.schedule.sigma": 0.55}
MAIN_ROWS = [RowSpec("MAR", {"objective": "mar"}, MAIN), RowSpec("FLUID", {"objective": "fluid"}, MAIN),
             RowSpec("CLIP", {"objective": "clip", "schedule": "none"}, MAIN),
             # §4.3: REPA aligns layer 6 with CLIP-L; in the row's setting, so other teachers/layers show marked
             RowSpec("REPA", {"objective": "repa"},
                     {**MAIN, "config.objective.repa_teacher": "clip_l", "config.objective.repa_layer": 6}),
             RowSpec("DREAM", {"objective": "dream", "schedule": "wm"}, MAIN_DREAM)]
GEN = [_c("CC12M FID", "fid/cc12m.fid", ".2f", False, 0.1, CC12M_FID),
       _c("CC12M CS", "clip_score/cc12m.cs", fallback=CC12M_CS),
       _c("COCO FID", "fid/coco.fid", ".2f", False, 0.2),
       _c("COCO CS", "clip_score/coco.cs")]
EXTERNAL = {"preset": "external", "data": "cc12m", "recipe": "paper"}  # rows of Table 1 we cannot reproduce
FEWSHOT_SETS = [("DTD", "dtd"), ("Caltech-256", "caltech256"), ("SUN397", "sun397"), ("Food-101", "food101"),
                ("VOC2007", "voc2007"), ("STL-10", "stl10"), ("Flowers", "flowers"), ("UC Merced", "ucmerced"),
                ("EuroSAT", "eurosat"), ("Country211", "country211"), ("RESISC45", "resisc45"), ("Dogs", "dogs"),
                ("MIT Indoors", "mit_indoors"), ("IN-1K", "imagenet"), ("Average", "avg")]
# Semantically Aligned Decoding (Tables 6, 17): `python -m benchmark bench sample --run <DREAM ablation run>` writes
# one entry per decoding setting, metrics["sad/k{K}-nfe{NFE}-{self|clip}"] = {throughput (img/s), fid | fd_ref,
# cs | agreement}; K candidates, NFE encoder passes, reranked by DREAM's own text encoder or an external CLIP.
SAD_COLS = [_c("Throughput", "sad.throughput", ".2f", True, 0.1), _c("FID", "sad.fid", ".2f", False, 0.1, ("sad.fd_ref",)),
            _c("CLIP", "sad.cs", fallback=("sad.agreement",))]


def _ablation(n: int, title: str, key: str, values: list[tuple[str, Any]], cols: list[ColSpec] | None = None) -> TableSpec:
    rows = [RowSpec(lbl, {**BASE, key: v}, ABL) for lbl, v in values]
    return TableSpec(n, title, rows, cols or [LP, FID])


def _sad_row(label: str, k: int, nfe: int, rerank: str = "self") -> RowSpec:
    return RowSpec(label, BASE, ABL, variant=f"sad/k{k}-nfe{nfe}-{rerank}")


TABLES: dict[int, TableSpec] = {t.number: t for t in [
    TableSpec(1, "Comparison with self-supervised and text-to-image models trained on CC12M", [
        *[RowSpec(m, {"objective": m}, EXTERNAL) for m in
          ("LPL", "SDXL", "mmDiT-SD3", "mmDiT-Imp", "GALIP", "SCAD", "MAE-L/16", "M3AE-L/16", "SimCLR-L/16",
           "StableRep-L/16", "LaCLIP-L/16", "4M-L")],
        RowSpec("DREAM", {"objective": "dream", "schedule": "wm"}, MAIN_DREAM)],
        [_c("LP", "lp.top1"), _c("FT", "ft.top1"), *GEN]),
    TableSpec(2, "Unified evaluation of visual understanding and text-to-image generation", MAIN_ROWS, [
        _c("LP IN-1K", "lp.top1"), _c("FT IN-1K", "ft.top1"), _c("IN-A", "robustness.in_a"),
        _c("IN-R", "robustness.in_r"), _c("IN-S", "robustness.in_s"), _c("IN-H", "robustness.in_h"),
        _c("MF", "robustness.v2_mf"), _c("T7", "robustness.v2_t7"), _c("Top", "robustness.v2_top"),
        _c("ON", "robustness.objectnet"), _c("Avg.", "robustness.avg"), *GEN]),
    TableSpec(3, "Few-shot transfer (5-way 5-shot accuracy)", MAIN_ROWS,
              [_c(lbl, f"fewshot.{key}", tol=1.0) for lbl, key in FEWSHOT_SETS]),
    TableSpec(4, "Effect of masking schedule", [
        RowSpec(lbl, {**BASE, "schedule": s}, ABL) for lbl, s in
        [("FX", "fx"), ("UNI", "uni"), ("CD", "cd"), ("WM", "wm")]], [LP, FID]),
    TableSpec(5, "Effect of masking warmup and diffusion loss", [
        RowSpec("CLIP", {"objective": "clip", "schedule": "none"}, ABL),
        RowSpec("CLIP-M", {"objective": "clip", "schedule": "wm", "config.schedule.sigma": 0.45}, ABL),
        RowSpec("DREAM", BASE, ABL)], [LP, FID]),
    TableSpec(6, "Efficiency of DREAM decoding under fixed compute budgets", [
        _sad_row("64 NFE: DREAM (K=1)", 1, 64), _sad_row("128 NFE: DREAM (K=1)", 1, 128),
        _sad_row("128 NFE: DREAM (K=2 w/ Ext. CLIP)", 2, 128, "clip"),
        _sad_row("128 NFE: DREAM (K=9 w/ SD)", 9, 128), _sad_row("128 NFE: DREAM (K=17 w/ SD)", 17, 128)],
        SAD_COLS),
    TableSpec(7, "Layer to align with the pretrained CLIP encoder (REPA)", [
        RowSpec(str(layer), {"objective": "repa", "config.objective.repa_teacher": "clip_l",
                             "config.objective.repa_layer": layer}, {**ABL, "recipe": "paper"}) for layer in (4, 6, 8)],
        [LP, FID]),
    TableSpec(8, "Effect of visual backbone (REPA teacher)", [
        RowSpec("CLIP", {"objective": "repa", "config.objective.repa_teacher": "clip_l",
                         "config.objective.repa_layer": 6}, {**ABL, "recipe": "paper"}),
        RowSpec("DINOv2", {"objective": "repa", "config.objective.repa_teacher": "dinov2_b",
                           "config.objective.repa_layer": 8}, {**ABL, "recipe": "paper"})], [LP, FID]),
    TableSpec(9, "Frozen backbones on dense prediction", MAIN_ROWS, [
        _c("mIoU", "seg.miou"), _c("PixAcc", "seg.pixacc"), _c("RMSE", "depth.rmse", ".2f", False, 0.02),
        _c("ARel", "depth.arel", ".2f", False, 0.02)]),
    TableSpec(10, "Standard deviation of masking distribution (sigma)", [
        *[RowSpec(lbl, {**BASE, "config.schedule.sigma": s}, ABL) for lbl, s in
          [("0.35", 0.35), ("0.45", 0.45), ("0.55", 0.55)]],
        RowSpec("UNI", {**{k: v for k, v in BASE.items() if k != "config.schedule.sigma"}, "schedule": "uni"}, ABL)],
        [LP, FID]),
    _ablation(11, "Masking warm-up duration (epochs of 48)", "derived.warmup_frac",
              [("30", 30 / 48), ("36", 36 / 48), ("42", 42 / 48)]),
    _ablation(12, "Minimum masking ratio for diffusion loss (gamma)", "config.objective.gamma",
              [("0", 0.0), ("0.25", 0.25), ("0.5", 0.5), ("0.75", 0.75)]),
    _ablation(13, "Maximum masking ratio for CLIP loss (phi)", "config.objective.phi",
              [("0.25", 0.25), ("0.5", 0.5), ("0.75", 0.75), ("1.0", 1.0)]),
    _ablation(14, "CLIP loss weight (lambda)", "config.objective.clip_weight",
              [("0.002", 0.002), ("0.005", 0.005), ("0.01", 0.01)]),
    _ablation(15, "Application of CLIP loss", "config.objective.clip_pool",
              [("All Tokens", "all"), ("Buffer Tokens", "buffer")]),
    # layer 12 = the last encoder block of the paper's L encoder; clip_layer 0 means "last" in our config
    _ablation(16, "CLIP loss layer", "config.objective.clip_layer", [("6", 6), ("8", 8), ("10", 10), ("12", 0)]),
    # K=1: the paper's cell (4.57 / 29.1) is the default 64-step decoding without SD (= Table 6's 64-NFE row and the
    # ablation default FID), not Table 6's 128-NFE K=1 row (4.34 / 29.4); the others use the 128-NFE budget
    TableSpec(17, "Effect of number of candidates (K), 128 NFE", [
        _sad_row("1", 1, 64), *[_sad_row(str(k), k, 128) for k in (5, 9, 17)]],
        [SAD_COLS[1], _c("CS", "sad.cs", fallback=("sad.agreement",))]),
]}


# ---------------------------------------------------------------- reading
def load_paper(n: int) -> list[dict[str, str]]:
    with open(TABLES[n].paper_csv, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def paper_values(n: int) -> dict[tuple[str, str], str]:
    """(row, column) -> the paper's primary value as printed (the first entry; later ones are footnoted variants)."""
    out: dict[tuple[str, str], str] = {}
    for r in load_paper(n):
        if r["value"] != "" and (r["row"], r["column"]) not in out:
            out[(r["row"], r["column"])] = r["value"]
    return out


@functools.lru_cache(maxsize=1)
def task_versions() -> dict[str, int]:
    """The current version of each task: the registered task's ``version``, else TASK_VERSIONS."""
    versions = dict(TASK_VERSIONS)
    try:
        from benchmark import registry

        for name in registry.tasks.names():
            versions[name] = int(getattr(registry.tasks.get(name), "version", versions.get(name, 1)))
    except Exception as e:  # noqa: BLE001 -- a broken plugin must not stop a table from being read
        log.warning("task versions from the registry unavailable (%s); using TASK_VERSIONS", e)
    return versions


def _version_problems(rec: dict[str, Any], tasks: list[str]) -> list[str]:
    """The tasks of ``tasks`` this record holds in another version than the current one ("lp v7 (current v1)")."""
    current = task_versions()
    out = []
    for name, info in (rec.get("tasks") or {}).items():
        base = _task(name)
        if base in tasks and isinstance(info, dict) and info.get("version") != current.get(base):
            out.append(f"{name} v{info.get('version')} (current v{current.get(base)})")
    return out


def load_records(runs_dir: str | Path, tasks: list[str] | None = None,
                 rejected: list[tuple[dict[str, Any], str]] | None = None,
                 skipped: list[str] | None = None) -> list[dict[str, Any]]:
    """Completed records whose versions of ``tasks`` (all tasks if None) are current; sorted by path.

    The others are appended to ``rejected`` as (record, reason) when a list is given; unreadable, truncated or
    foreign record.json files are skipped with a one-line warning each and listed in ``skipped``.
    """
    recs = []
    for p in sorted(Path(runs_dir).glob("*/record.json")):
        try:
            rec = read_record(p)
        except RecordError as e:
            warn_skipped(p, e)
            if skipped is not None:
                skipped.append(str(p))
            continue
        rec["_dir"] = str(p.parent)
        problems = _version_problems(rec, tasks if tasks is not None else list(TASK_VERSIONS))
        if rec.get("status") != "completed":
            reason = f"status {rec.get('status')}"
        elif problems:
            reason = "task version " + ", ".join(problems)
        else:
            recs.append(rec)
            continue
        if rejected is not None:
            rejected.append((rec, reason))
    return recs


# ---------------------------------------------------------------- building
@dataclass
class Cell:
    ours: float | None
    std: float | None
    n: int
    paper: float | None
    delta: float | None
    paper_text: str | None = None  # the paper's value as printed
    metric: str | None = None  # the record key the value comes from ("lp.top1", or a fallback "fid.fd_ref")
    other: bool = False  # another metric than the paper's (OTHER_METRICS): shown with OTHER, no Δ


@dataclass
class Row:
    label: str
    reproduction: bool
    run_ids: list[str]
    differs: dict[str, list[Any]]
    cells: dict[str, Cell]


def _assign(spec: TableSpec, recs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each record fills the first row it matches; rows with another metric variant (Tables 6, 17) are separate."""
    assigned: dict[str, list[dict[str, Any]]] = {r.label: [] for r in spec.rows}
    for rec in recs:
        taken: set[str | None] = set()
        for row in spec.rows:
            if row.variant not in taken and row.matches(rec):
                assigned[row.label].append(rec)
                taken.add(row.variant)
    return assigned


def _cell(rs: RowSpec, c: ColSpec, df: Any, paper_text: str | None, no_delta: bool) -> Cell:
    """One cell from the row's records flattened by ``pd.json_normalize(sep="\\x00")`` (metric keys hold dots)."""
    import pandas as pd

    vals, used = pd.Series([], dtype=float), None
    for key in rs.metrics(c):  # the first key any run has; values of different keys are never mixed
        variant, metric = key.split(".", 1)
        col = "\x00".join(["metrics", variant, metric])
        if col in df:
            vals = pd.to_numeric(df[col], errors="coerce").dropna() * c.scale
            if len(vals):
                used = key
                break
    mean = float(vals.mean()) if len(vals) else None
    std = float(vals.std(ddof=1)) if len(vals) > 1 else None
    p = None if paper_text is None else float(paper_text)
    other = used is not None and (used.split(".", 1)[1] in OTHER_METRICS or is_synthetic_name(used.split(".", 1)[0]))
    delta = None if mean is None or p is None or other or no_delta else (mean - p) * (1 if c.higher_is_better else -1)
    return Cell(_r(mean), _r(std), int(len(vals)), p, _r(delta), paper_text, used, other)


def _setting(rec: dict[str, Any]) -> str:
    """The record's training config without the seed: runs that share it are seeds of one setting."""
    from benchmark.config import NON_SEMANTIC, NON_TRAINING_SECTIONS

    cfg = json.loads(json.dumps(rec.get("config") or {}))
    for key in ("seed", *NON_TRAINING_SECTIONS, *NON_SEMANTIC):
        sec, _, name = key.rpartition(".")
        d = cfg.get(sec) if sec else cfg
        if isinstance(d, dict):
            d.pop(name, None)
    return json.dumps(cfg, sort_keys=True)


def choose_runs(rs: RowSpec, group: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The runs a row shows: the seeds of one setting, the paper's if present, else the one closest to it
    (fewest fields off the paper's, then most seeds); never an average over different settings."""
    settings: dict[str, list[dict[str, Any]]] = {}
    for r in group:
        settings.setdefault(_setting(r), []).append(r)
    if not settings:
        return [], []
    best = min(settings.values(), key=lambda g: (len(rs.differs(g[0])), "data" in rs.differs(g[0]), -len(g)))
    return best, [r for r in group if r not in best]


SAD_NAME = re.compile(r"sad/k(\d+)-nfe(\d+)-(self|clip)")
PAPER_DECODE_STEPS = 64  # S, the paper's decoding steps (§3.4): Table 6's budgets are 1 S and 2 S


def sample_entry(rec: dict[str, Any], variant: str) -> str | None:
    """The record's `bench sample` entry for a Table 6/17 row ``variant`` (written for S = 64): the entry itself, or
    one with the same K and reranker at the same budget in units of its bench's S (``bench sample --decode-steps``),
    the largest S if there are several."""
    metrics = rec.get("metrics") or {}
    if variant in metrics:
        return variant
    m = SAD_NAME.fullmatch(variant)
    if not m:
        return None
    k, nfe, rerank = int(m.group(1)), int(m.group(2)), m.group(3)
    entries = {name: info for name, info in (rec.get("tasks") or {}).items()
               if SAD_NAME.fullmatch(name) and name in metrics and isinstance(info, dict) and info.get("steps")}
    # Records written before `decode_steps` was kept: S is an SAD entry's steps; a K = 1 entry decodes its whole budget,
    # so its S is the fewest steps of the record's K = 1 entries (the bench writes K = 1 at 1 S and at 2 S).
    k1_s = min((i["steps"] for n, i in entries.items() if SAD_NAME.fullmatch(n).group(1) == "1"), default=None)
    found = []
    for name, info in entries.items():
        o = SAD_NAME.fullmatch(name)
        steps = info.get("decode_steps") or (k1_s if o.group(1) == "1" else info["steps"])
        if int(o.group(1)) == k and o.group(3) == rerank and int(o.group(2)) * PAPER_DECODE_STEPS == nfe * steps:
            found.append((steps, name))
    return max(found)[1] if found else None  # several step counts: the one closest to the paper's S


def compute(n: int, runs_dir: str | Path) -> tuple[TableSpec, list[Row], list[str]]:
    """Rows of table ``n`` from the records under ``runs_dir``, and notes (missing runs/cells, excluded records)."""
    import pandas as pd

    spec = TABLES[n]
    paper = paper_values(n)
    rejected: list[tuple[dict[str, Any], str]] = []
    skipped: list[str] = []
    recs = load_records(runs_dir, spec.tasks(), rejected, skipped)
    assigned = _assign(spec, recs)
    # a missing row's command at the setting of the runs the table holds (the paper's if it holds none)
    held = [(r.get("preset"), r.get("data")) for group in assigned.values() for r in group]
    like = max(set(held), key=held.count) if held else (None, None)
    rows: list[Row] = []
    notes: list[str] = [f"skipped {len(skipped)} unreadable record(s) (not a run record): {', '.join(skipped)}"] \
        if skipped else []
    for rs in spec.rows:
        use, others = choose_runs(rs, assigned[rs.label])
        differs: dict[str, list[Any]] = {k: [v] for k, v in rs.differs(use[0]).items()} if use else {}
        if others and differs:  # runs of the paper's setting shown: the others are other experiments
            notes.append(f"{rs.label}: not shown, {len(others)} run(s) in another setting: "
                         + ", ".join(r["run_id"] for r in others))
        # another data set than the paper's: the numbers measure another thing, so no Δ
        no_delta = any(k == "data" or k.endswith(".data.name") for k in differs)
        frame = use
        if rs.variant is not None:  # bench sample entries decoded with another step count S than the paper's 64
            frame, read = [], set()
            for r in use:
                name = sample_entry(r, rs.variant)
                read.add(name)
                frame.append({**r, "metrics": {**r.get("metrics", {}), rs.variant: r["metrics"][name]}} if name else r)
            for name in sorted(read - {None, rs.variant}):
                steps = (use[0].get("tasks") or {}).get(name, {}).get("steps")
                notes.append(f"{rs.label}: read {name} (S={steps} decoding steps; the paper's S=64, same NFE/S)")
        df = pd.json_normalize(frame, sep="\x00") if frame else pd.DataFrame()
        cells = {c.label: _cell(rs, c, df, paper.get((rs.label, c.label)), no_delta) for c in spec.columns}
        rows.append(Row(rs.label, bool(use) and not differs, [r["run_id"] for r in use], differs, cells))
        if rs.paper.get("preset") == "external":
            continue
        if not use:
            notes.append(f"missing {rs.label}: {spec.command(rs, *like)}")
            continue
        # cells the paper reports that no run filled: the command that fills them, per run
        gaps = [c for c in spec.columns if cells[c.label].ours is None and (rs.label, c.label) in paper]
        for r in use:
            todo, real_only = [], []
            for c in gaps:
                keys = [k.split(".", 1)[0] for k in rs.metrics(c)]
                variant = keys[0]
                if r.get("data") == SYNTHETIC and _task(variant) not in SAMPLE_TASKS:
                    # a synthetic run can fill a real column only with its stand-in (marked): recommend that
                    stand_in = next((k for k in keys if is_synthetic_name(k)), None)
                    if stand_in is None:
                        real_only.append(c.label)
                        continue
                    variant = stand_in
                if _task(variant) in SAMPLE_TASKS:
                    todo.append(("sample", variant))
                elif variant not in (r.get("tasks") or {}):  # a task that ran without this metric cannot add it
                    todo.append(("eval", variant))
            evals = ",".join(dict.fromkeys(v for kind, v in todo if kind == "eval"))
            if evals:
                notes.append(f"missing {rs.label} [{evals}]: python -m benchmark eval --run {r['_dir']} --tasks {evals}")
            if real_only:
                notes.append(f"missing {rs.label} [{', '.join(real_only)}]: no synthetic stand-in; real data only "
                             f"(a run trained on data=cc12m, evaluated with the data set's root)")
            if any(kind == "sample" for kind, _ in todo):
                notes.append(f"missing {rs.label} [{rs.variant}]: python -m benchmark bench sample --run {r['_dir']}")
    for rec, reason in rejected:
        if any(rs.matches(rec) for rs in spec.rows):
            notes.append(f"excluded {rec.get('run_id')}: {reason}")
    return spec, rows, notes


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 6)


def _num(v: float | None, fmt: str, signed: bool = False) -> str:
    if v is None:
        return MISSING
    s = format(v, ("+" if signed else "") + fmt)
    return "+" + s[1:] if signed and s.startswith("-") and float(s) == 0 else s


def _ours(c: Cell, fmt: str) -> str:
    s = _num(c.ours, fmt)
    s = s if c.std is None else f"{s} ± {format(c.std, fmt)}"
    return f"{s} {OTHER}" if c.other else s


def _label(r: Row) -> str:
    return r.label + (f" {MARK}" if r.differs else "")


def _footnotes(spec: TableSpec, rows: list[Row], notes: list[str], runs_dir: str | Path) -> list[str]:
    out = []
    for r in rows:
        if r.differs:
            what = ", ".join(f"{k}={'/'.join(map(str, v))}" for k, v in r.differs.items())
            rs = next(x for x in spec.rows if x.label == r.label)
            want = ", ".join(f"{k}={v}" for k, v in rs.paper.items() if k in r.differs)
            why = "; no Δ: another data set" if "data" in r.differs else ""
            out.append(f"{MARK} {r.label}: runs used {what} (paper: {want}): not a reproduction{why}")
    others: dict[str, list[str]] = {}
    for r in rows:
        for label, c in r.cells.items():
            if c.other and c.metric:
                others.setdefault(c.metric, [])
                if label not in others[c.metric]:
                    others[c.metric].append(label)
    for metric, labels in others.items():
        what = OTHER_METRICS.get(metric.split(".", 1)[1], "measured on the synthetic stand-in data, not the real data set")
        out.append(f"{OTHER} {'/'.join(labels)}: {metric} = {what}; no Δ")
    multi = [f"{r.label} (n={max(c.n for c in r.cells.values())})" for r in rows
             if max((c.n for c in r.cells.values()), default=0) > 1]
    if multi:
        out.append("mean ± std over runs (seeds): " + ", ".join(multi))
    if not any(Path(runs_dir).glob("*/record.json")):
        out.append(f"no run records under {runs_dir} (--runs DIR: the folder holding <run_id>/record.json)")
    out += notes
    return out


def _within(delta: float | None, tol: float) -> str | None:
    """"ok" within the column's tolerance of the paper, else "better" / "worse" (the OpenMMLab regression colours)."""
    if delta is None:
        return None
    return "ok" if abs(delta) <= tol + 1e-9 else ("better" if delta > 0 else "worse")


COLORS = {"ok": "\x1b[32m", "better": "\x1b[36m", "worse": "\x1b[31m"}


def build_table(n: int, runs_dir: str | Path = DEFAULT_RUNS, fmt: str = "md", color: bool = False) -> str:
    """Table ``n`` as text; ``color`` (md, for a terminal) colours each Δ by the column's tolerance."""
    if n not in TABLES:
        raise KeyError(n)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose {', '.join(FORMATS)}")
    spec, rows, notes = compute(n, runs_dir)
    foot = _footnotes(spec, rows, notes, runs_dir)
    cols = spec.columns
    if fmt == "json":
        return json.dumps({"table": n, "title": spec.title, "runs": str(runs_dir), "rows": [
            {"row": r.label, "reproduction": r.reproduction, "runs": r.run_ids, "differs": r.differs,
             "cells": {k: {**vars(c), "within_tolerance": _within(c.delta, col.tolerance)}
                       for col in cols for k, c in [(col.label, r.cells[col.label])]}} for r in rows], "notes": foot},
            indent=1, ensure_ascii=False) + "\n"
    header = ["row"]
    for c in cols:
        header += [f"{c.label} ours", f"{c.label} paper", f"{c.label} Δ"]
    body = []
    for r in rows:
        line = [_label(r)]
        for c in cols:
            cell = r.cells[c.label]
            d = _num(cell.delta, c.fmt, signed=True)
            state = _within(cell.delta, c.tolerance)
            if color and fmt == "md" and state:
                d = f"{COLORS[state]}{d}\x1b[0m"
            line += [_ours(cell, c.fmt), cell.paper_text or MISSING, d]
        body.append(line)
    if fmt == "csv":
        import io

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(header)
        w.writerows(body)
        return buf.getvalue()
    title = f"Table {n}: {spec.title}"
    legend = "(each cell: ours | paper | Δ, Δ > 0 = better than the paper)"
    if color and fmt == "md":
        legend += " (Δ green: within the column's tolerance, cyan: better, red: worse)"
    if fmt == "latex":
        subs = [("\\", "\\textbackslash{}"), ("&", "\\&"), ("%", "\\%"), ("_", "\\_"), ("#", "\\#"),
                ("±", "$\\pm$"), ("Δ", "$\\Delta$"), ("—", "--"), (MARK, "$^\\dagger$"), (OTHER, "$^\\ddagger$")]

        def esc(s: str) -> str:
            for a, b in subs:
                s = s.replace(a, b)
            return s
        lines = [f"% {title} {legend}", "\\begin{tabular}{l" + "rrr" * len(cols) + "}", "\\toprule",
                 " & ".join(esc(h) for h in header) + " \\\\", "\\midrule"]
        lines += [" & ".join(esc(x) for x in b) + " \\\\" for b in body]
        lines += ["\\bottomrule", "\\end{tabular}"]
        lines += [f"% {esc(f)}" for f in foot]
        return "\n".join(lines) + "\n"
    lines = [f"{title}  {legend}", "", "| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(b) + " |" for b in body]
    if foot:
        lines.append("")
        lines += [f"- {f}" for f in foot]
    return "\n".join(lines) + "\n"
