"""Paper tables as data, table specs, and `python -m benchmark table N` (golden files; UPDATE_GOLDEN=1 rewrites)."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.tables import PAPER_DIR, TABLES, build_table, load_paper

GOLDEN = Path(__file__).parent / "golden"
PAPER_TXT = Path(__file__).resolve().parents[2].parent / "shared" / "spec" / "dream-paper.txt"


def test_every_paper_csv_parses_and_labels_match_spec():
    assert sorted(TABLES) == list(range(1, 18))
    total = 0
    for n, spec in TABLES.items():
        rows = load_paper(n)
        assert rows, n
        assert list(rows[0]) == ["table", "row", "column", "value", "note"]
        labels = {r.label for r in spec.rows}
        cols = {c.label for c in spec.columns}
        for r in rows:
            assert r["table"] == str(n)
            assert r["row"] in labels, (n, r["row"])
            assert r["column"] in cols, (n, r["column"])
            float(r["value"])
        total += len(rows)
    assert total >= 280
    with open(PAPER_DIR / "figures.csv", newline="", encoding="utf-8") as f:
        figs = list(csv.DictReader(f))
    assert {r["table"] for r in figs} <= {"fig4", "fig6"}


def test_footnote_marks_are_notes():
    t1 = load_paper(1)
    assert any(r["row"] == "DREAM" and r["value"] == "5.16" and "30K" in r["note"] for r in t1)
    assert all("extra labels" in r["note"] for r in t1 if r["row"] in ("StableRep-L/16", "LaCLIP-L/16", "4M-L"))
    assert any("external model" in r["note"] for r in load_paper(6))


def _blocks() -> dict[int, str]:
    text = re.sub(r"\\(?:cellcolor|rowcolor)\s*[a-z]+!\d\d", " ", PAPER_TXT.read_text(encoding="utf-8"))
    starts = [(int(m.group(1)), m.start()) for m in re.finditer(r"^Table (\d+):", text, re.M)]
    out = {}
    for i, (n, s) in enumerate(starts):
        end = starts[i + 1][1] if i + 1 < len(starts) else len(text)
        out.setdefault(n, text[s:min(end, s + 4000)])
    return out


SAMPLE = [(1, "LPL", "CC12M FID", "6.22"), (1, "4M-L", "FT", "86.6"), (1, "DREAM", "COCO CS", "31.5"),
          (2, "MAR", "IN-A", "20.6"), (2, "FLUID", "COCO FID", "9.62"), (2, "REPA", "ON", "39.1"),
          (2, "DREAM", "Avg.", "57.2"), (3, "CLIP", "Country211", "42.9"), (3, "REPA", "MIT Indoors", "81.2"),
          (3, "DREAM", "Average", "90.1"), (4, "FX", "LP", "4.6"), (4, "CD", "FID", "5.80"),
          (5, "CLIP-M", "LP", "70.8"), (6, "128 NFE: DREAM (K=2 w/ Ext. CLIP)", "FID", "4.50"),
          (7, "8", "LP", "66.1"), (8, "DINOv2", "FID", "4.67"), (9, "FLUID", "RMSE", "0.76"),
          (10, "UNI", "FID", "4.88"), (11, "42", "LP", "72.4"), (12, "0.75", "FID", "7.25"),
          (13, "0.25", "FID", "8.65"), (14, "0.002", "FID", "4.76"), (15, "Buffer Tokens", "LP", "72.1"),
          (16, "6", "LP", "66.6"), (17, "17", "CS", "30.2")]


@pytest.mark.skipif(not PAPER_TXT.exists(), reason="paper text not available")
@pytest.mark.parametrize("n,row,col,value", SAMPLE)
def test_sample_values_against_paper_text(n, row, col, value):
    got = [r["value"] for r in load_paper(n) if r["row"] == row and r["column"] == col]
    assert got and got[0] == value
    assert re.search(rf"(?<![\d.]){re.escape(value)}(?![\d])", _blocks()[n]), (n, value)


# ---------------------------------------------------------------- fixture records
def _record(run_id, objective, schedule, metrics, *, preset="L", data="cc12m", recipe="official", seed=0,
            status="completed", sigma=0.45, versions=None, **cfg_objective):
    obj = {"name": objective, "clip_weight": 0.005, "gamma": 0.5, "phi": 0.75, "clip_layer": 0, "clip_pool": "all",
           **cfg_objective}
    tasks = {t.split(".")[0].split("/")[0]: {"version": (versions or {}).get(t.split("/")[0], 1), "status": "completed"}
             for t in metrics}
    return {"schema": 1, "run_id": run_id, "status": status, "attempt": 1, "objective": objective, "schedule": schedule,
            "preset": preset, "recipe": recipe, "data": data, "seed": seed,
            "config": {"preset": preset, "recipe": recipe, "seed": seed, "objective": obj,
                       "schedule": {"name": schedule, "sigma": sigma, "warmup_epochs": 36.0},
                       "train": {"epochs": 48.0}, "data": {"name": data}},
            "tasks": tasks, "metrics": metrics, "higher_is_better": {}}


def _write(runs: Path, rec: dict) -> None:
    d = runs / rec["run_id"]
    d.mkdir(parents=True)
    (d / "record.json").write_text(json.dumps(rec))


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative runs dir: the golden files hold "runs/<run_id>"
    r = Path("runs")
    recs = [
        # DREAM-L paper recipe, three seeds -> mean ± std (reproduction)
        *[_record(f"dream-wm-L-cc12m-aaaa-s{s}", "dream", "wm", {"lp": {"top1": v}, "fid/cc12m": {"fid": f}},
                  recipe="paper", sigma=0.55, seed=s) for s, v, f in [(0, 72.0, 4.4), (1, 72.6, 4.3), (2, 73.2, 4.2)]],
        # tiny/synthetic runs: filled but marked, never a reproduction
        _record("clip-none-tiny-synthetic-bbbb-s0", "clip", "none", {"lp": {"top1": 31.7}}, preset="tiny", data="synthetic"),
        _record("fluid-fx-tiny-synthetic-cccc-s0", "fluid", "fx", {"lp": {"top1": 12.5}}, preset="tiny", data="synthetic"),
        _record("dream-wm-tiny-synthetic-dddd-s0", "dream", "wm", {"lp": {"top1": 40.0}}, preset="tiny", data="synthetic"),
        # DREAM-L ablations (official recipe, sigma 0.45)
        _record("dream-uni-L-cc12m-eeee-s0", "dream", "uni", {"lp": {"top1": 73.0}, "fid/cc12m": {"fid": 4.95}}),
        _record("dream-wm-L-cc12m-ffff-s0", "dream", "wm", {"lp": {"top1": 72.4}, "fid/cc12m": {"fid": 4.60}}),
        _record("dream-wm-L-cc12m-ffff-s1", "dream", "wm", {"lp": {"top1": 72.8}, "fid/cc12m": {"fid": 4.54}}, seed=1),
        _record("dream-cd-L-cc12m-gggg-s0", "dream", "cd", {"lp": {"top1": 73.3}}),  # FID not evaluated yet
        # excluded: another lp version, and a run still going
        _record("mar-fx-L-cc12m-hhhh-s0", "mar", "fx", {"lp": {"top1": 99.0}}, versions={"lp": 7}),
        _record("dream-fx-L-cc12m-iiii-s0", "dream", "fx", {"lp": {"top1": 99.0}, "fid/cc12m": {"fid": 0.1}},
                status="running"),
        _record("repa-fx-L-cc12m-jjjj-s0", "repa", "fx", {"lp": {"top1": 99.0}}, status="failed"),
    ]
    for rec in recs:
        _write(r, rec)
    return r


def _golden(name: str, text: str, runs: Path) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"missing golden {path}; run with UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8")


@pytest.mark.parametrize("n,fmt", [(2, "md"), (4, "md"), (5, "md"), (10, "md"), (2, "csv"), (4, "json"), (4, "latex")])
def test_golden(runs, n, fmt):
    _golden(f"table_{n:02d}.{fmt}", build_table(n, runs, fmt), runs)


def test_every_table_builds(runs):
    for n in TABLES:
        out = build_table(n, runs, "md")
        assert out.startswith(f"Table {n}:")


def test_excluded_records_never_mixed(runs):
    t2 = json.loads(build_table(2, runs, "json"))
    rows = {r["row"]: r for r in t2["rows"]}
    assert rows["MAR"]["runs"] == []
    assert "99" not in build_table(4, runs, "md")
    t4 = json.loads(build_table(4, runs, "json"))
    fx = next(r for r in t4["rows"] if r["row"] == "FX")
    assert fx["runs"] == [] and fx["cells"]["LP"]["ours"] is None


def test_seeds_delta_and_marks(runs):
    t2 = json.loads(build_table(2, runs, "json"))
    rows = {r["row"]: r for r in t2["rows"]}
    d = rows["DREAM"]
    assert d["reproduction"] and len(d["runs"]) == 3  # the tiny DREAM run is not mixed with the L runs
    assert d["cells"]["LP IN-1K"]["ours"] == pytest.approx(72.6)
    assert d["cells"]["LP IN-1K"]["std"] == pytest.approx(0.6)
    assert d["cells"]["LP IN-1K"]["delta"] == pytest.approx(-0.1)
    assert d["cells"]["CC12M FID"]["delta"] == pytest.approx(4.25 - 4.3)  # lower FID is better: positive = better
    assert not rows["CLIP"]["reproduction"] and rows["CLIP"]["differs"]["preset"] == ["tiny"]
    md = build_table(2, runs, "md")
    assert "| CLIP † |" in md and "not a reproduction" in md
    assert "missing MAR: python -m benchmark run --objective mar --preset L --data cc12m --recipe paper" in md


def test_grid_and_command():
    spec = TABLES[12]
    assert len(spec.grid()) == 4
    assert spec.grid()[1]["set"]["objective.gamma"] == 0.25
    cmd = spec.command(spec.rows[1])
    assert cmd.startswith("python -m benchmark run --objective dream --schedule wm --preset L --data cc12m")
    assert "--set objective.gamma=0.25" in cmd


def test_cli_table(runs, capsys):
    assert main(["table", "4", "--runs", str(runs)]) == 0
    assert capsys.readouterr().out.startswith("Table 4:")
    assert main(["table", "99", "--runs", str(runs)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown table 99; tables: 1, 2, 3,")


def test_cli_figure(runs, tmp_path):
    pytest.importorskip("matplotlib")
    for n in (4, 6, 7):
        out = tmp_path / f"fig{n}.png"
        assert main(["figure", str(n), "--out", str(out), "--runs", str(runs)]) == 0
        assert out.stat().st_size > 1000
