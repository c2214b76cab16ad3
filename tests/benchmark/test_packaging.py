"""The installed package: one import root, package data in the wheel, and a run from a wheel (not the checkout)."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from benchmark.testing import small_overrides

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the tracked files (the checkout itself is left untouched)."""
    src = tmp_path_factory.mktemp("src")
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if name.startswith("tests/"):
            continue
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
                   check=True, capture_output=True, text=True)
    (whl,) = out.glob("dream_bench-*.whl")
    return whl


def test_wheel_has_one_import_root_and_its_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    roots = {n.split("/")[0] for n in names if not n.startswith("dream_bench-")}
    assert roots == {"benchmark"}, roots
    for needed in ("benchmark/results/paper/table_02.csv", "benchmark/results/paper/figures.csv",
                   "benchmark/slurm/profiles/local.toml", "benchmark/models/backbone.py", "benchmark/tasks/lp.py",
                   "benchmark/objectives/dream.py"):
        assert needed in names, needed


def test_wheel_install_runs_outside_the_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, text=True)
    work = tmp_path / "work"  # cwd outside the checkout: nothing of the repo on sys.path but the installed copy
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}

    def bench(*argv: str) -> str:
        r = subprocess.run([sys.executable, "-m", "benchmark", *argv], cwd=work, env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout

    where = subprocess.run([sys.executable, "-c", "import benchmark.models.backbone as b, benchmark.tables as t; "
                            "print(b.__file__); print(t.PAPER_DIR)"], cwd=work, env=env, capture_output=True,
                           text=True, check=True).stdout.split()
    assert all(p.startswith(str(site)) for p in where), where
    assert "dream" in bench("list", "objectives")
    assert "Table 2" in bench("table", "2", "--runs", str(work / "runs"))
    sets = [a for k, v in small_overrides().items() for a in ("--set", f"{k}={v}")]
    bench("run", "--objective", "dream", "--schedule", "wm", "--steps", "2", "--tasks", "none", "--out", str(work / "runs"),
          *sets)
    (record,) = (work / "runs").glob("*/record.json")
    assert '"completed"' in record.read_text()
