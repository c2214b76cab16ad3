"""The paper's sweeps as data: the ablation grids of Tables 4, 5, 7, 8, 10-17 (derived from the table specs in
``benchmark.tables``, so a sweep fills exactly the rows its table reads) and the model sizes of Fig. 4.

``python -m benchmark sweep NAME [--dry-run] [--parallelism N]`` submits one Slurm array per sweep; grid
points whose record is completed are skipped, so resubmitting finishes only what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

ABLATION_TABLES = (4, 5, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17)
FIG4_SIZES = ("B", "L", "H", "G")  # §9.3 / Fig. 4: DREAM (sigma 0.45) against FLUID at each size
SWEEPS = (*(f"table{n}" for n in ABLATION_TABLES), "fig4")


@dataclass
class Point:
    label: str
    spec: dict[str, Any]  # objective, schedule, preset, data, recipe, set {key: value}, tasks [..]


def grid(name: str) -> list[Point]:
    """The grid points of a sweep, as override dicts (``TableSpec.overrides`` for tables)."""
    from benchmark.config import ConfigError
    from benchmark.tables import TABLES

    if name.startswith("table") and name[5:].isdigit() and int(name[5:]) in ABLATION_TABLES:
        table = TABLES[int(name[5:])]
        return [Point(row.label, table.overrides(row)) for row in table.rows]
    if name == "fig4":
        from benchmark.tables import BASE

        base_sets = {k[len("config."):]: v for k, v in BASE.items() if k.startswith("config.")}
        return [Point(f"{obj.upper()}-{size}", {
            "objective": obj, "schedule": "wm" if obj == "dream" else None, "preset": size, "data": "cc12m",
            "recipe": "official", "set": base_sets if obj == "dream" else {}, "tasks": ["lp", "fid/cc12m"]})
            for obj in ("dream", "fluid") for size in FIG4_SIZES]
    raise ConfigError(f"unknown sweep {name!r}; sweeps: {', '.join(SWEEPS)}")


def point_config(spec: dict[str, Any], cli: dict[str, Any]):
    """A grid point's RunConfig; ``cli`` holds the sweep command's own flags (preset, data, steps, tasks, out,
    seed, sets), which win over the point (a smaller preset or other data marks the table row with †)."""
    from benchmark.config import build_config

    obj = spec["objective"]
    over: dict[str, Any] = {"data.name": cli.get("data") or spec["data"], **spec.get("set", {})}
    tasks = cli.get("tasks")
    over["tasks"] = ",".join(spec["tasks"]) if tasks is None else ("" if tasks == "none" else tasks)
    if cli.get("steps"):
        over["train.steps"] = int(cli["steps"])
    if cli.get("out"):
        over["out"] = cli["out"]
    if cli.get("seed") is not None:
        over["seed"] = int(cli["seed"])
    over.update(cli.get("sets") or {})
    return build_config(obj, spec.get("schedule"), cli.get("preset") or spec["preset"], spec["recipe"], over)


def plan(name: str, cli: dict[str, Any]) -> list[dict[str, Any]]:
    """[{label, run_id, cfg | None, state, error}] with state in submit | completed | invalid; points that
    resolve to the same run id (e.g. a table's default row) appear once."""
    from benchmark.config import ConfigError, run_id
    from benchmark.status import record_state

    seen, out = set(), []
    for p in grid(name):
        try:
            cfg = point_config(p.spec, cli)
        except ConfigError as e:  # e.g. a CLIP layer beyond a tiny preset's encoder
            out.append({"label": p.label, "run_id": None, "cfg": None, "state": "invalid", "error": str(e)})
            continue
        rid = run_id(cfg)
        if rid in seen:
            continue
        seen.add(rid)
        state = record_state(Path(cfg.out) / rid)
        out.append({"label": p.label, "run_id": rid, "cfg": cfg, "state": "completed" if state == "completed"
                    else "submit", "error": None, "was": state})
    return out
