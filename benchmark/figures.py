"""`python -m benchmark figure 4|6|7 --out FILE.png`: the paper's figures from the run records.

Conventions for metrics the figures read (records are only read, never recomputed):
- Fig. 4 (size B/L/H/G, DREAM sigma 0.45): ``metrics.lp.top1`` and ``metrics["fid/cc12m"].fid``; the paper's
  points given in the text (``results/paper/figures.csv``, FID of DREAM-B and DREAM-G) are drawn as crosses.
- Fig. 6 (sigma 0.35/0.45/0.55 over training): intermediate evaluations are stored as task variants
  ``"<task>@<epoch>"``, e.g. ``metrics["lp@12"]["top1"]``, ``metrics["fid/cc12m@24"]["fid"]``; the final
  ``metrics.lp`` / ``metrics["fid/cc12m"]`` are plotted at ``config.train.epochs``.
- Fig. 7 (zero-shot accuracy vs masking ratio; CLIP, CLIP-M, DREAM): ``metrics.zeroshot["acc@<ratio>"]``.
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path
from typing import Any

from benchmark.tables import ABL, BASE, DEFAULT_RUNS, MARK, PAPER_DIR, RowSpec, choose_runs, load_records

log = logging.getLogger(__name__)
FIGURES = (4, 6, 7)
SD = "sad/k9-nfe128-self"  # Fig. 4 "with Semantically Aligned Decoding": Table 6's DREAM (K=9 w/ SD) setting
SIZES = ("B", "L", "H", "G")


def _paper_points(fig: str) -> list[dict[str, str]]:
    with open(PAPER_DIR / "figures.csv", newline="", encoding="utf-8") as f:
        return [r for r in csv.DictReader(f) if r["table"] == fig and r["value"] != ""]


def _runs(recs: list[dict[str, Any]], match: dict[str, Any], paper: dict[str, Any],
          tasks: tuple[str, ...]) -> tuple[list[dict[str, Any]], str]:
    """The seeds of one setting for a curve (the paper's setting if present, as in the tables), among the runs
    that hold one of ``tasks`` (task variants, or their ``@epoch`` evaluations), and a legend mark."""
    row = RowSpec("", match, paper)
    has = [r for r in recs if row.matches(r) and any(v.split("@")[0] in tasks for v in (r.get("metrics") or {}))]
    use, _ = choose_runs(row, has)
    return use, f" {MARK}" if use and row.differs(use[0]) else ""


def _mean(recs: list[dict[str, Any]], variant: str, key: str) -> float | None:
    vals = [r["metrics"][variant][key] for r in recs if key in (r.get("metrics") or {}).get(variant, {})]
    return sum(vals) / len(vals) if vals else None


def _nan(vals: list[float | None]) -> list[float]:
    return [float("nan") if v is None else v for v in vals]


def _std(v: list[float]) -> float:
    m = sum(v) / len(v)
    return (sum((x - m) ** 2 for x in v) / (len(v) - 1)) ** 0.5


def _series(recs: list[dict[str, Any]], task: str, key: str) -> dict[float, float]:
    """{epoch: mean value} from ``<task>@<epoch>`` variants plus the final metric at config.train.epochs."""
    pts: dict[float, list[float]] = {}
    for r in recs:
        for variant, vals in (r.get("metrics") or {}).items():
            m = re.fullmatch(re.escape(task) + r"@([0-9.]+)", variant)
            if m and key in vals:
                pts.setdefault(float(m.group(1)), []).append(vals[key])
        final = (r.get("metrics") or {}).get(task, {})
        if key in final:
            pts.setdefault(float(r["config"]["train"]["epochs"]), []).append(final[key])
    return {e: sum(v) / len(v) for e, v in sorted(pts.items())}


def make_figure(n: int, out: str | Path, runs_dir: str | Path = DEFAULT_RUNS) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rejected: list[tuple[dict[str, Any], str]] = []
    skipped: list[str] = []  # unreadable record.json files: load_records warns once per file
    recs = load_records(runs_dir, rejected=rejected, skipped=skipped)
    for rec, why in rejected:
        log.warning("figure %d: left out %s (%s)", n, rec.get("run_id"), why)
    synthetic = False  # a curve read from a synthetic stand-in (<task>/synthetic): said in the figure's note
    if n == 4:
        fig, (a1, a2) = plt.subplots(2, 1, figsize=(5, 6), sharex=True)
        for name, match in [("DREAM", BASE), ("FLUID", {"objective": "fluid"})]:
            lp, fid, sd = [], [], []
            for size in SIZES:
                group, _ = _runs(recs, {**match, "preset": size}, {**ABL, "preset": size}, ("lp", "fid/cc12m", SD))
                group = [r for r in group if r.get("data") == "cc12m"]  # sizes are compared on CC12M only
                lp.append(_mean(group, "lp", "top1"))
                fid.append(_mean(group, "fid/cc12m", "fid"))
                sd.append(_mean(group, SD, "fid"))
            a1.plot(SIZES, _nan(lp), "o-", label=f"{name} (ours)")
            a2.plot(SIZES, _nan(fid), "o-", label=f"{name} (ours)")
            if name == "DREAM" and any(v is not None for v in sd):  # the bottom panel's "with SD" curve
                a2.plot(SIZES, _nan(sd), "s--", label="DREAM + SD (ours, K=9, 128 NFE)")
        pts = [p for p in _paper_points("fig4") if p["column"] == "FID"]
        if pts:
            a2.plot([p["row"].split("-")[-1] for p in pts], [float(p["value"]) for p in pts], "kx", ms=9,
                    label="DREAM (paper, text)")
        a1.set_ylabel("LP top-1 (%)")
        a2.set_ylabel("FID CC12M-50K")
        a2.set_xlabel("model size")
        a1.set_title("Fig. 4: DREAM across model sizes (sigma 0.45)")
    elif n == 6:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 4))
        fd_ref = False
        for sigma in (0.35, 0.45, 0.55):
            group, mark = _runs(recs, {**BASE, "config.schedule.sigma": sigma}, ABL,
                                ("lp", "fid/cc12m", "fid", "lp/synthetic", "fid/synthetic"))
            for ax, task, key in [(a1, "lp", "top1"), (a2, "fid/cc12m", "fid")]:
                s = _series(group, task, key)
                if not s and task == "lp":
                    s = _series(group, "lp/synthetic", key)
                    synthetic = synthetic or bool(s)
                if not s and task == "fid/cc12m":  # synthetic runs: the reference network's distance, not FID
                    s = _series(group, "fid/synthetic", "fd_ref")
                    fd_ref = fd_ref or bool(s)
                ax.plot(list(s), list(s.values()), "o-", label=f"sigma={sigma}{mark}")
        a1.set_ylabel("LP top-1 (%)")
        a2.set_ylabel("fd_ref (synthetic reference network; not FID)" if fd_ref else "FID CC12M-50K (no SD)")
        for ax in (a1, a2):
            ax.set_xlabel("epoch")
        fig.suptitle("Fig. 6: masking standard deviation over training")
    elif n == 7:
        fig, a1 = plt.subplots(figsize=(6, 4))
        for name, match in [("CLIP", {"objective": "clip", "schedule": "none"}),
                            ("CLIP-M", {"objective": "clip", "schedule": "wm"}), ("DREAM", BASE)]:
            group, mark = _runs(recs, match, ABL, ("zeroshot", "zeroshot/synthetic"))
            zs = "zeroshot" if any("zeroshot" in (r.get("metrics") or {}) for r in group) else "zeroshot/synthetic"
            synthetic = synthetic or (bool(group) and zs != "zeroshot")
            pts: dict[float, list[float]] = {}
            for r in group:
                for k, v in (r.get("metrics") or {}).get(zs, {}).items():
                    m = re.fullmatch(r"acc@([0-9.]+)", k)  # not the "acc@0.5_std" companions
                    if m:
                        pts.setdefault(float(m.group(1)), []).append(v)
            xs = sorted(pts)
            ys = [sum(pts[x]) / len(pts[x]) for x in xs]
            # spread: over runs where there are several, else the task's own std over masking seeds
            err = [_std(pts[x]) if len(pts[x]) > 1 else (_mean(group, zs, f"acc@{x:.1f}_std") or 0.0) for x in xs]
            a1.errorbar(xs, ys, yerr=err, fmt="o-", capsize=2, label=f"{name}{mark} (n={len(group)})")
        a1.set_xlabel("masking ratio")
        a1.set_ylabel("zero-shot accuracy (%)")
        a1.set_title("Fig. 7: zero-shot accuracy vs masking ratio")
    else:
        raise KeyError(n)
    for ax in fig.axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    note = []
    if any(MARK in h for ax in fig.axes for h in ax.get_legend_handles_labels()[1]):
        note.append(f"{MARK} not the paper's setting (preset / data / recipe): not a reproduction")
    if synthetic:
        note.append("read from the synthetic stand-in (<task>/synthetic), not the real data set")
    if skipped:
        note.append(f"{len(skipped)} unreadable record(s) skipped")
    if note:
        fig.text(0.01, 0.005, "; ".join(note), fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return str(out)
