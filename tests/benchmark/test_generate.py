"""`generate` and `bench sample` on a (barely) trained tiny run: the grid, the Table-6 row names and NFE,
the record entries."""

import json
from pathlib import Path

import pytest
import torch

from benchmark.bench_sample import ROWS
from benchmark.config import build_config
from benchmark.generate import gen_spec
from benchmark.testing import small_overrides


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    import benchmark.tasks._reference as ref

    monkeypatch.setattr(ref, "DEFAULT_RECIPE", ref.RefRecipe(n_train=512, epochs=1, batch=32, width=8))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_table6_rows_names_and_accounting():
    e = build_config("dream").eval
    specs = {gen_spec(e, k, m * 64, rerank, 64).name: gen_spec(e, k, m * 64, rerank, 64) for k, m, rerank in ROWS}
    assert {n: (s.steps, s.select_step, s.nfe) for n, s in specs.items()} == {
        "sad/k1-nfe64-self": (64, 64, 64), "sad/k1-nfe128-self": (128, 128, 128), "sad/k2-nfe128-clip": (64, 64, 128),
        "sad/k5-nfe128-self": (64, 16, 128), "sad/k9-nfe128-self": (64, 8, 128), "sad/k17-nfe128-self": (64, 4, 128)}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from benchmark.run import execute

    out = tmp_path_factory.mktemp("gen")
    over = small_overrides(**{"out": str(out), "tasks": "", "train.steps": 2, "eval.sample_steps": 4,
                              "model.sample_steps": 5, "eval.gen_batch": 16})
    cfg = build_config("dream", "wm", overrides=over)
    return execute(cfg)


def test_generate_grid(run_dir, tmp_path):
    from PIL import Image

    from benchmark.cli import main

    out = tmp_path / "grid.png"
    prompts = ["a large red circle in the center on a white background", "a medium blue square at the top left on a "
               "black background"]
    args = ["generate", "--run", str(run_dir), "--out", str(out), "--seeds", "3", "--steps", "4"]
    for p in prompts:
        args += ["--prompt", p]
    assert main(args) == 0
    img = Image.open(out)
    px = json.loads((run_dir / "record.json").read_text())["config"]["model"]["image_size"]
    assert img.size == (3 * (px + 1) + 1, 2 * (px + 1) + 1)  # 3 seeds x 2 prompts, padding 1
    assert out.with_suffix(".txt").read_text().splitlines() == prompts
    sad = tmp_path / "sad.png"
    assert main(["generate", "--run", str(run_dir), "--out", str(sad), "--candidates", "3", "--select-step", "2",
                 "--steps", "4", "--prompt", prompts[0]]) == 0
    assert Image.open(sad).size == (px, px)  # make_grid of one image: no padding


def test_generate_bad_input(run_dir, tmp_path, capsys):
    from benchmark.cli import main

    assert main(["generate", "--run", str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    assert main(["generate", "--run", str(run_dir), "--out", str(tmp_path / "x.png"), "--candidates", "4",
                 "--nfe", "9", "--steps", "4"]) == 2  # no integer T gives 4T + (4 - T) = 9
    assert "error:" in capsys.readouterr().err


def test_bench_sample_writes_rows(run_dir):
    from benchmark.bench_sample import bench_sample

    rows = bench_sample(str(run_dir), prompts_n=6, steps=4, rows=[(1, 4, "self"), (2, 8, "clip"), (3, 8, "self")])
    rec = json.loads((Path(run_dir) / "record.json").read_text())
    for name, k, t in [("sad/k1-nfe4-self", 1, 4), ("sad/k2-nfe8-clip", 2, 4), ("sad/k3-nfe8-self", 3, 2)]:
        m = rec["metrics"][name]
        assert set(m) == {"throughput", "fd_ref", "agreement"} and m["throughput"] > 0 and 0 <= m["agreement"] <= 100
        assert rec["tasks"][name]["version"] == 1 and rec["tasks"][name]["K"] == k and rec["tasks"][name]["select_step"] == t
        assert rec["higher_is_better"][name] == {"throughput": True, "fd_ref": False, "agreement": True}
    sad = rows[2]
    assert sad["score_selected"] >= sad["score_mean"]  # the kept candidate is the best of its prompt
    assert rec["tasks"]["sad/k2-nfe8-clip"]["judge"] == "reference-network"


def test_bench_sample_rows_with_the_compiled_decoding_step(run_dir):
    """`bench sample --run --compile`: the Table-6 row decodes through the compiled step (dynamo's eager backend here:
    the guards and graphs, not inductor's code) and records that it did."""
    import torch._dynamo

    from benchmark.bench_sample import bench_sample

    rows = bench_sample(str(run_dir), prompts_n=2, steps=4, rows=[(1, 4, "self")], compile=True, backend="eager")
    rec = json.loads((Path(run_dir) / "record.json").read_text())
    assert rows[0]["compiled"] == "eager" and rec["tasks"]["sad/k1-nfe4-self"]["compiled"] == "eager"
    assert rec["metrics"]["sad/k1-nfe4-self"]["throughput"] > 0
    torch._dynamo.reset()
