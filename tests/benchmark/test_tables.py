"""Paper tables as data, table specs, and `python -m benchmark table N` (golden files; UPDATE_GOLDEN=1 rewrites)."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import pytest

from benchmark import tables
from benchmark.cli import main
from benchmark.tables import PAPER_DIR, TABLES, TASK_VERSIONS, build_table, load_paper, load_records

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


COLOR = re.compile(r"\\(?:cellcolor|rowcolor)\s*([a-z]+)!\d\d")  # LaTeX colour marks left by the conversion
TRANSPOSED = {4, 5, 7, 8, *range(10, 18)}  # ablations: the paper prints settings as columns


def _blocks() -> dict[int, list[str]]:
    """Table N -> the lines of the paper text from its caption on (first occurrence)."""
    text = PAPER_TXT.read_text(encoding="utf-8")
    starts = [(int(m.group(1)), m.start()) for m in re.finditer(r"^Table (\d+):", text, re.M)]
    out: dict[int, list[str]] = {}
    for i, (n, s) in enumerate(starts):
        end = starts[i + 1][1] if i + 1 < len(starts) else len(text)
        out.setdefault(n, text[s:min(end, s + 4000)].splitlines())
    return out


def _plain(line: str) -> str:
    return " ".join(COLOR.sub(" ", line).split())


def _paper_cells(n: int, lines: list[str]) -> tuple[dict, dict]:
    """An independent parse of the paper's table: {(row, column): [values as printed]} and their footnote marks."""
    spec = TABLES[n]
    cells: dict[tuple[str, str], list[str]] = {}
    marks: dict[tuple[str, str], list[set[str]]] = {}
    if n in TRANSPOSED:
        header = lines[1]
        assert _plain(header) == " ".join(r.label for r in spec.rows), (n, _plain(header))
        greyed = {r.label for r in spec.rows if re.search(r"gray!\d\d\s*" + re.escape(r.label) + r"(\s|$)", header)}
        for c in spec.columns:
            raw = next(x for x in lines[2:] if _plain(x).startswith(c.label + " "))
            toks = COLOR.sub(lambda m: f" {m.group(1)}:", raw).replace(": ", ":").split()[2:]  # after the arrow
            assert len(toks) == len(spec.rows), (n, c.label, toks)
            for r, t in zip(spec.rows, toks):
                grey = r.label in greyed or t.startswith("gray:")  # the grey default cell
                t = t.split(":")[-1]
                if t != "N/A":
                    cells[(r.label, c.label)] = [t]
                    marks[(r.label, c.label)] = [{"default setting"} if grey else set()]
        return cells, marks
    start = 1
    for r in spec.rows:
        label = r.label
        if n == 6:  # rows printed under "64 NFE Passes" / "128 NFE Passes"
            budget, label = label.split(": ")
            label = label.replace("w/", "w./")
            start = next(i for i, x in enumerate(lines) if _plain(x) == f"{budget} Passes")
        for line in lines[start:]:
            p = re.sub(r"^(Generation only|Representation only|Unified) ", "", _plain(line))
            if p.startswith(label + " "):
                break
        else:
            raise AssertionError((n, label))
        toks = p[len(label):].split()
        if n == 1 and toks and re.fullmatch(r"[a-z]+\d{4}[a-z0-9]*", toks[0]):
            toks = toks[1:]  # citation key
        row_marks = set()
        if "gray" in COLOR.findall(line):
            row_marks.add("extra labels" if n == 1 else "external model")
        ci = -1
        for t in toks:
            if not t.startswith("("):  # "(5.16*)" is a second value for the previous cell
                ci += 1
                if t in ("-", "✗"):
                    continue
            m = re.fullmatch(r"\(?(\d+\.?\d*)(\*?)\)?", t)
            assert m, (n, r.label, t)
            key = (r.label, spec.columns[ci].label)
            cells.setdefault(key, []).append(m.group(1))
            marks.setdefault(key, []).append(row_marks | ({"30K samples"} if m.group(2) else set()))
    return cells, marks


@pytest.mark.skipif(not PAPER_TXT.exists(), reason="paper text not available")
def test_every_paper_value_against_paper_text():
    """Every cell of Tables 1-17, re-read from the paper text, equals the CSV (values, order, footnote marks)."""
    blocks = _blocks()
    total = 0
    for n in TABLES:
        cells, marks = _paper_cells(n, blocks[n])
        ours: dict[tuple[str, str], list[str]] = {}
        notes: dict[tuple[str, str], list[set[str]]] = {}
        for r in load_paper(n):
            ours.setdefault((r["row"], r["column"]), []).append(r["value"])
            notes.setdefault((r["row"], r["column"]), []).append({x.strip() for x in r["note"].split(";") if x.strip()})
        if n == 2:  # the one value given under the table: REPA probed on its CLIP-aligned layer
            assert re.search(r"yielding a slightly higher accuracy of 64\.4", "\n".join(blocks[2]))
            cells[("REPA", "LP IN-1K")].append("64.4")
            marks[("REPA", "LP IN-1K")].append(set(notes[("REPA", "LP IN-1K")][1]))
        assert ours == cells, n
        assert notes == marks, n
        total += sum(map(len, cells.values()))
    assert total == 286


# ---------------------------------------------------------------- fixture records
def _record(run_id, objective, schedule, metrics, *, preset="L", data="cc12m", recipe="official", seed=0,
            status="completed", sigma=0.45, warmup=36.0, versions=None, **cfg_objective):
    """A record shaped like benchmark.records.RunRecord's (tasks keyed by the variant run)."""
    obj = {"name": objective, "clip_weight": 0.005, "gamma": 0.5, "phi": 0.75, "clip_layer": 0, "clip_pool": "all",
           "repa_teacher": "dinov2_b", "repa_layer": 8, **cfg_objective}
    tasks = {v: {"version": (versions or {}).get(v, 1), "status": "completed"} for v in metrics}
    return {"schema": 1, "run_id": run_id, "status": status, "attempt": 1, "objective": objective, "schedule": schedule,
            "preset": preset, "recipe": recipe, "data": data, "seed": seed,
            "config": {"preset": preset, "recipe": recipe, "seed": seed, "objective": obj,
                       "schedule": {"name": schedule, "sigma": sigma, "warmup_epochs": warmup},
                       "train": {"epochs": 48.0}, "data": {"name": data}},
            "tasks": tasks, "metrics": metrics, "higher_is_better": {}}


def _write(runs: Path, rec: dict) -> None:
    d = runs / rec["run_id"]
    d.mkdir(parents=True)
    (d / "record.json").write_text(json.dumps(rec))


ROB = dict(zip(["in_a", "in_r", "in_s", "in_h", "v2_mf", "v2_t7", "v2_top", "objectnet", "avg"],
               [33.0, 55.0, 42.5, 25.5, 71.0, 79.0, 83.0, 41.0, 56.9]))
ZS = {f"acc@{r / 10:.1f}": v for r, v in enumerate([60.0, 59.0, 57.5, 55.0, 51.0, 46.0, 40.0, 31.0, 20.0, 9.0])}
ZS.update({f"{k}_std": 0.5 for k in list(ZS)})


def _records() -> list[dict]:
    main = {"recipe": "paper", "sigma": 0.55}
    repa_clip = {"recipe": "paper", "repa_teacher": "clip_l", "repa_layer": 6}
    tiny = {"preset": "tiny", "data": "synthetic"}
    sad = {"sad/k1-nfe64-self": {"throughput": 3.2, "fid": 4.6, "cs": 29.0}, "sad/k9-nfe128-self":
           {"throughput": 1.8, "fid": 4.3, "cs": 30.0}}
    return [
        # main results (Tables 1-3, 9): DREAM-L paper recipe, three seeds -> mean ± std; COCO not evaluated yet
        *[_record(f"dream-wm-L-cc12m-aaaa-s{s}", "dream", "wm",
                  {"lp": {"top1": v}, "ft": {"top1": 82.5 + s / 10}, "robustness": ROB,
                   "fewshot": {"dtd": 88.0, "imagenet": 95.5, "avg": 89.0 + s, "avg_ci95": 0.4},
                   "seg": {"miou": 36.0, "pixacc": 76.0, "macc": 45.0}, "depth": {"rmse": 0.61, "arel": 0.19, "d1": 0.7},
                   "fid/cc12m": {"fid": f}, "clip_score/cc12m": {"cs": 30.0}}, seed=s, **main)
          for s, v, f in [(0, 72.0, 4.4), (1, 72.6, 4.3), (2, 73.2, 4.2)]],
        _record("repa-fx-L-cc12m-abab-s0", "repa", "fx", {"lp": {"top1": 63.0}, "fid/cc12m": {"fid": 4.5},
                "fid/coco": {"fid": 10.2}, "clip_score/coco": {"cs": 30.5}}, **repa_clip),
        # REPA at layer 4 (Table 7): a Table 2 REPA run too, but not in the paper's setting, so not used there
        _record("repa-fx-L-cc12m-acac-s0", "repa", "fx", {"lp": {"top1": 58.5}, "fid/cc12m": {"fid": 4.8}},
                **{**repa_clip, "repa_layer": 4}),
        # another preset than the paper's, same data: marked, Δ still shown
        _record("fluid-fx-B-cc12m-adad-s0", "fluid", "fx", {"lp": {"top1": 45.0}, "fid/cc12m": {"fid": 5.0}},
                preset="B", **main),
        # tiny/synthetic runs: filled but marked, never a reproduction, no Δ; their metrics carry synthetic names
        _record("clip-none-tiny-synthetic-bbbb-s0", "clip", "none", {"lp/synthetic": {"top1": 31.7},
                "zeroshot/synthetic": ZS}, **tiny),
        _record("fluid-fx-tiny-synthetic-cccc-s0", "fluid", "fx", {"lp/synthetic": {"top1": 12.5},
                "fid/synthetic": {"fd_ref": 35.2}, "clip_score/synthetic": {"agreement": 20.0}}, **tiny),
        _record("dream-wm-tiny-synthetic-dddd-s0", "dream", "wm", {
            "lp/synthetic": {"top1": 40.0}, "fewshot/synthetic": {"syn_shapes": 55.0, "avg": 55.0, "avg_std": 1.5},
            "seg/synthetic": {"miou": 20.0, "pixacc": 60.0, "macc": 30.0},
            "depth/synthetic": {"rmse": 0.3, "arel": 0.1}, "fid/synthetic": {"fd_ref": 30.1},
            "clip_score/synthetic": {"agreement": 25.0}, "zeroshot/synthetic": ZS,
            "sad/k1-nfe64-self": {"throughput": 12.5, "fd_ref": 31.0, "agreement": 24.0}}, **tiny),
        # DREAM-L ablations (official recipe, sigma 0.45)
        _record("dream-uni-L-cc12m-eeee-s0", "dream", "uni", {"lp": {"top1": 73.0}, "fid/cc12m": {"fid": 4.95}}),
        _record("dream-wm-L-cc12m-ffff-s0", "dream", "wm", {"lp": {"top1": 72.4}, "fid/cc12m": {"fid": 4.60}, **sad}),
        _record("dream-wm-L-cc12m-ffff-s1", "dream", "wm", {"lp": {"top1": 72.8}, "fid/cc12m": {"fid": 4.54},
                "sad/k1-nfe64-self": {"throughput": 3.4, "fid": 4.5, "cs": 29.2}}, seed=1),
        _record("dream-cd-L-cc12m-gggg-s0", "dream", "cd", {"lp": {"top1": 73.3}}),  # FID not evaluated yet
        _record("dream-wm-L-cc12m-kkkk-s0", "dream", "wm", {"lp": {"top1": 71.8}, "fid/cc12m": {"fid": 4.80}}, sigma=0.35),
        _record("dream-wm-L-cc12m-llll-s0", "dream", "wm", {"lp": {"top1": 72.3}}, warmup=30.0),
        _record("dream-wm-B-cc12m-mmmm-s0", "dream", "wm", {"lp": {"top1": 65.0}, "fid/cc12m": {"fid": 6.1}},
                preset="B", gamma=0.25),
        _record("dream-wm-L-cc12m-nnnn-s0", "dream", "wm", {"lp": {"top1": 63.0}, "fid/cc12m": {"fid": 8.9}}, phi=0.25),
        _record("dream-wm-L-cc12m-oooo-s0", "dream", "wm", {"lp": {"top1": 72.1}, "fid/cc12m": {"fid": 4.7}},
                clip_weight=0.01),
        _record("dream-wm-L-cc12m-pppp-s0", "dream", "wm", {"lp": {"top1": 72.0}, "fid/cc12m": {"fid": 4.58}},
                clip_pool="buffer"),
        _record("dream-wm-L-cc12m-qqqq-s0", "dream", "wm", {"lp": {"top1": 66.0}, "fid/cc12m": {"fid": 4.55}}, clip_layer=6),
        _record("clip-wm-L-cc12m-rrrr-s0", "clip", "wm", {"lp": {"top1": 70.5}}),  # CLIP-M (Table 5)
        _record("repa-fx-L-cc12m-ssss-s0", "repa", "fx", {"lp": {"top1": 68.0}, "fid/cc12m": {"fid": 4.7}}),  # DINOv2
        # excluded: another lp version, a run still going, a failed run
        _record("mar-fx-L-cc12m-hhhh-s0", "mar", "fx", {"lp": {"top1": 99.0}}, versions={"lp": 7}, **main),
        _record("dream-fx-L-cc12m-iiii-s0", "dream", "fx", {"lp": {"top1": 99.0}, "fid/cc12m": {"fid": 0.1}},
                status="running"),
        _record("repa-fx-L-cc12m-jjjj-s0", "repa", "fx", {"lp": {"top1": 99.0}}, status="failed",
                **{**repa_clip, "repa_layer": 8}),
    ]


@pytest.fixture(autouse=True)
def _fixed_versions(request, monkeypatch):
    """Fixture records are written at version 1: tables read them against TASK_VERSIONS, not the live registry."""
    if "task_versions_follow" not in request.node.name:
        monkeypatch.setattr(tables, "task_versions", lambda: dict(TASK_VERSIONS))


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative runs dir: the golden files hold "runs/<run_id>"
    r = Path("runs")
    for rec in _records():
        _write(r, rec)
    return r


def _golden(name: str, text: str, runs: Path) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"missing golden {path}; run with UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8")


@pytest.mark.parametrize("n,fmt", [*[(n, "md") for n in range(1, 18)], (2, "csv"), (6, "json"), (4, "latex")])
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


def test_settings_never_averaged_together(runs):
    """A row without runs in the paper's setting shows the closest setting's runs only (FLUID-B, not FLUID-tiny)."""
    rows = {r["row"]: r for r in json.loads(build_table(2, runs, "json"))["rows"]}
    assert rows["FLUID"]["runs"] == ["fluid-fx-B-cc12m-adad-s0"] and rows["FLUID"]["differs"] == {"preset": ["B"]}
    assert rows["FLUID"]["cells"]["LP IN-1K"]["ours"] == 45.0
    assert rows["FLUID"]["cells"]["LP IN-1K"]["delta"] == pytest.approx(45.0 - 48.1)  # same data set: Δ shown
    # the REPA row: the CLIP-L layer-6 run only, not the layer-4 (Table 7) or DINOv2 (Table 8) runs
    assert rows["REPA"]["runs"] == ["repa-fx-L-cc12m-abab-s0"] and rows["REPA"]["reproduction"]
    # a version mismatch in lp keeps the record out of lp tables only
    t3 = {r["row"]: r for r in json.loads(build_table(3, runs, "json"))["rows"]}
    assert t3["MAR"]["runs"] == ["mar-fx-L-cc12m-hhhh-s0"]


def _tiny_runs(root: Path) -> Path:
    """What the embedded default leaves after tiny runs of three objectives (metrics as the tasks name them)."""
    tiny = {"preset": "tiny", "data": "synthetic"}
    for rec in [
        _record("dream-wm-tiny-synthetic-1111-s0", "dream", "wm", {"lp/synthetic": {"top1": 31.7},
                "fid/synthetic": {"fd_ref": 41.25}, "clip_score/synthetic": {"agreement": 22.5}}, **tiny),
        _record("dream-wm-tiny-synthetic-1112-s1", "dream", "wm", {"lp/synthetic": {"top1": 30.1},
                "fid/synthetic": {"fd_ref": 43.75}, "clip_score/synthetic": {"agreement": 27.5}}, seed=1, **tiny),
        _record("clip-none-tiny-synthetic-2222-s0", "clip", "none", {"lp/synthetic": {"top1": 32.6}}, **tiny),
        _record("fluid-fx-tiny-synthetic-3333-s0", "fluid", "fx", {"lp/synthetic": {"top1": 11.0},
                "fid/synthetic": {"fd_ref": 52.0}}, **tiny),
    ]:
        _write(root, rec)
    return root


def test_embedded_default_table_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = _tiny_runs(Path("tiny"))
    _golden("table_02_tiny.md", build_table(2, runs, "md"), runs)
    rows = {r["row"]: r for r in json.loads(build_table(2, runs, "json"))["rows"]}
    d = rows["DREAM"]
    assert not d["reproduction"] and d["differs"]["data"] == ["synthetic"]
    lp, fid, cs = d["cells"]["LP IN-1K"], d["cells"]["CC12M FID"], d["cells"]["CC12M CS"]
    assert lp["ours"] == pytest.approx((31.7 + 30.1) / 2) and lp["std"] == pytest.approx(abs(31.7 - 30.1) / 2 ** 0.5)
    assert lp["delta"] is None and lp["metric"] == "lp/synthetic.top1" and lp["other"]  # the stand-in, marked
    assert fid["metric"] == "fid/synthetic.fd_ref" and fid["other"] and fid["ours"] == 42.5 and fid["delta"] is None
    assert cs["metric"] == "clip_score/synthetic.agreement" and cs["other"] and cs["ours"] == 25.0
    md = build_table(2, runs, "md")
    assert "| 42.50 ± 1.77 ‡ | 4.25 | — |" in md  # fd_ref is never shown as the paper's FID
    assert "fid/synthetic.fd_ref = Fréchet distance in a synthetic reference network's features, not FID; no Δ" in md
    assert "lp/synthetic.top1 = measured on the synthetic stand-in data" in md
    # footnotes recommend only commands that can run: the stand-ins for synthetic runs, never fid/coco there
    assert "--tasks fid/coco" not in md and "no synthetic stand-in; real data only" in md


def test_sad_rows_at_other_decoding_steps(tmp_path):
    """`bench sample --decode-steps 16` on a tiny run writes nfe16 / nfe32 rows: the 64 / 128 NFE rows read them."""
    rec = _record("dream-wm-tiny-synthetic-4444-s0", "dream", "wm", {
        "sad/k9-nfe16-self": {"throughput": 1.0, "fd_ref": 1.0, "agreement": 1.0},  # S=8: also 2 S, but S < 16
        "sad/k1-nfe16-self": {"throughput": 40.0, "fd_ref": 50.0, "agreement": 20.0},
        "sad/k9-nfe32-self": {"throughput": 38.0, "fd_ref": 45.0, "agreement": 30.0}}, preset="tiny", data="synthetic")
    for name in rec["tasks"]:
        rec["tasks"][name]["steps"] = 16 if name != "sad/k9-nfe16-self" else 8
    _write(tmp_path, rec)
    rows = {r["row"]: r["cells"] for r in json.loads(build_table(6, tmp_path, "json"))["rows"]}
    assert rows["64 NFE: DREAM (K=1)"]["FID"]["ours"] == 50.0 and rows["64 NFE: DREAM (K=1)"]["FID"]["other"]
    assert rows["128 NFE: DREAM (K=9 w/ SD)"]["CLIP"]["ours"] == 30.0  # nfe32 at S=16 preferred to nfe16 at S=8
    assert rows["128 NFE: DREAM (K=1)"]["FID"]["ours"] is None
    md = build_table(6, tmp_path, "md")
    assert "64 NFE: DREAM (K=1): read sad/k1-nfe16-self (S=16 decoding steps; the paper's S=64, same NFE/S)" in md


def test_sad_rows_read_bench_sample_variants(runs):
    rows = {r["row"]: r for r in json.loads(build_table(6, runs, "json"))["rows"]}
    k1 = rows["64 NFE: DREAM (K=1)"]["cells"]
    assert k1["FID"]["metric"] == "sad/k1-nfe64-self.fid" and k1["FID"]["n"] == 2
    assert k1["FID"]["ours"] == pytest.approx((4.6 + 4.5) / 2) and k1["FID"]["delta"] == pytest.approx(4.57 - 4.55)
    assert k1["Throughput"]["ours"] == pytest.approx(3.3) and k1["CLIP"]["ours"] == pytest.approx(29.1)
    k9 = rows["128 NFE: DREAM (K=9 w/ SD)"]["cells"]
    assert (k9["FID"]["ours"], k9["FID"]["n"], k9["CLIP"]["ours"]) == (4.3, 1, 30.0)
    assert rows["128 NFE: DREAM (K=17 w/ SD)"]["cells"]["FID"]["ours"] is None
    md = build_table(6, runs, "md")
    assert ("missing 128 NFE: DREAM (K=17 w/ SD) [sad/k17-nfe128-self]: "
            "python -m benchmark bench sample --run runs/dream-wm-L-cc12m-ffff-s0") in md
    t17 = {r["row"]: r for r in json.loads(build_table(17, runs, "json"))["rows"]}
    assert t17["9"]["cells"]["CS"]["metric"] == "sad/k9-nfe128-self.cs"


def test_tolerance_states_and_colour(runs):
    t12 = {r["row"]: r for r in json.loads(build_table(12, runs, "json"))["rows"]}
    assert t12["0.5"]["cells"]["LP"]["within_tolerance"] == "ok"  # |72.6 - 72.5| <= 0.5
    assert t12["0.25"]["cells"]["LP"]["within_tolerance"] == "worse"  # 65.0 vs 72.7
    assert t12["0.25"]["cells"]["FID"]["within_tolerance"] == "worse"  # 6.10 vs 4.73, lower is better
    assert t12["0"]["cells"]["LP"]["within_tolerance"] is None
    coloured = build_table(12, runs, "md", color=True)
    assert "| \x1b[31m-7.7\x1b[0m |" in coloured and "\x1b[32m+0.1\x1b[0m" in coloured
    assert "\x1b" not in build_table(12, runs, "md")


def test_grid_and_command():
    spec = TABLES[12]
    assert len(spec.grid()) == 4
    assert spec.grid()[1]["set"]["objective.gamma"] == 0.25
    cmd = spec.command(spec.rows[1])
    assert cmd.startswith("python -m benchmark run --objective dream --schedule wm --preset L --data cc12m")
    assert "--set objective.gamma=0.25" in cmd
    assert spec.command(spec.rows[2]).count("--set") == 1  # only the held-out CC12M-50K reference pairs
    assert "--set data.holdout=50000 " in spec.command(spec.rows[2])
    # Table 11: the warm-up is matched as a fraction of training; the command sets epochs of the 48-epoch recipe
    t11 = TABLES[11]
    assert "--set schedule.warmup_epochs=42.0 " in t11.command(t11.rows[2]) and t11.command(t11.rows[1]).count("--set") == 1
    # Tables 6, 17: the DREAM ablation run, then `bench sample`; the main DREAM row: paper recipe (sigma 0.55)
    cmd6 = TABLES[6].command(TABLES[6].rows[3])
    assert cmd6.endswith("--recipe official --set data.holdout=50000 --tasks none && python -m benchmark bench sample "
                         "--run <run dir>")
    assert TABLES[2].command(TABLES[2].rows[-1]).endswith("--recipe paper --set data.holdout=50000 --tasks "
                                                          + ",".join(TABLES[2].run_tasks()))


def test_task_versions_follow_registered_tasks(tmp_path):
    """Tables accept the version each registered task writes now (and bench sample's for sad)."""
    from benchmark import registry
    from benchmark.bench_sample import SAD_VERSION

    lp = registry.tasks.get("lp").version
    assert tables.task_versions()["lp"] == lp and tables.task_versions()["sad"] == SAD_VERSION
    for v in (lp, lp + 1):
        _write(tmp_path, _record(f"dream-wm-L-cc12m-v{v}-s0", "dream", "wm", {"lp": {"top1": 50.0}}, versions={"lp": v}))
    rejected: list = []
    assert [r["run_id"] for r in load_records(tmp_path, ["lp"], rejected)] == [f"dream-wm-L-cc12m-v{lp}-s0"]
    assert [(r["run_id"], why) for r, why in rejected] == [(f"dream-wm-L-cc12m-v{lp + 1}-s0",
                                                            f"task version lp v{lp + 1} (current v{lp})")]


def test_cli_table(runs, capsys):
    assert main(["table", "4", "--runs", str(runs)]) == 0
    assert capsys.readouterr().out.startswith("Table 4:")
    assert main(["table", "99", "--runs", str(runs)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown table 99; tables: 1, 2, 3,")


def test_figure_series_and_run_choice(runs):
    from benchmark import figures

    recs = load_records(runs)
    clip, mark = figures._runs(recs, {"objective": "clip", "schedule": "none"}, tables.ABL, ("zeroshot", "zeroshot/synthetic"))
    assert [r["run_id"] for r in clip] == ["clip-none-tiny-synthetic-bbbb-s0"] and mark == " †"
    dream, mark = figures._runs(recs, tables.BASE, tables.ABL, ("lp", "fid/cc12m"))
    assert [r["run_id"] for r in dream] == ["dream-wm-L-cc12m-ffff-s0", "dream-wm-L-cc12m-ffff-s1"] and mark == ""
    a = _record("a", "dream", "wm", {"lp@12": {"top1": 60.0}, "lp@24": {"top1": 70.0}, "lp": {"top1": 72.0}})
    b = _record("b", "dream", "wm", {"lp@12": {"top1": 62.0}, "lp": {"top1": 73.0}}, seed=1)
    assert figures._series([a, b], "lp", "top1") == {12.0: 61.0, 24.0: 70.0, 48.0: 72.5}  # final at train.epochs


def test_cli_figure(runs, tmp_path):
    pytest.importorskip("matplotlib")
    for n in (4, 6, 7):
        out = tmp_path / f"fig{n}.png"
        assert main(["figure", str(n), "--out", str(out), "--runs", str(runs)]) == 0
        assert out.stat().st_size > 1000
    assert main(["figure", "5", "--out", str(tmp_path / "x.png"), "--runs", str(runs)]) == 2


@pytest.mark.parametrize("with_decode_steps", [True, False])
def test_sad_k1_at_twice_the_budget_fills_the_128_nfe_row(tmp_path, with_decode_steps):
    """`bench sample --decode-steps 16` decodes K=1 at 2 S in 32 steps: that entry is the 128-NFE row, not the 64."""
    rec = _record("dream-wm-tiny-synthetic-5555-s0", "dream", "wm", {
        "sad/k1-nfe16-self": {"throughput": 40.0, "fd_ref": 50.0, "agreement": 20.0},
        "sad/k1-nfe32-self": {"throughput": 20.0, "fd_ref": 48.0, "agreement": 22.0},
        "sad/k9-nfe32-self": {"throughput": 38.0, "fd_ref": 45.0, "agreement": 30.0}}, preset="tiny", data="synthetic")
    for name in rec["tasks"]:
        rec["tasks"][name]["steps"] = 32 if name == "sad/k1-nfe32-self" else 16
        if with_decode_steps:  # what bench sample writes now; older records are read by their K = 1 entries' steps
            rec["tasks"][name]["decode_steps"] = 16
    _write(tmp_path, rec)
    rows = {r["row"]: r["cells"] for r in json.loads(build_table(6, tmp_path, "json"))["rows"]}
    assert rows["64 NFE: DREAM (K=1)"]["CLIP"]["ours"] == 20.0
    assert rows["128 NFE: DREAM (K=1)"]["CLIP"]["ours"] == 22.0
    assert rows["128 NFE: DREAM (K=9 w/ SD)"]["CLIP"]["ours"] == 30.0
