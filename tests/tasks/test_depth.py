"""Depth probe: SigLoss, RMSE/ARel/δ against their formulas, the Eigen crop, the bin head, the schedule, and the
probe on synthetic depth maps against the mean-depth baseline."""

import math

import numpy as np
import pytest
import torch
from benchmark.tasks import _dense as D

from benchmark.testing import small_overrides


def test_sig_loss_formula():
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(2, 5, 7, generator=g) * 5 + 0.1
    gt = torch.rand(2, 5, 7, generator=g) * 5 + 0.1
    valid = torch.rand(2, 5, 7, generator=g) > 0.3
    d = np.log(pred[valid].numpy().astype(np.float64) + 1e-3) - np.log(gt[valid].numpy().astype(np.float64) + 1e-3)
    full = math.sqrt(np.var(d, ddof=1) + 0.15 * np.mean(d) ** 2)
    assert D.sig_loss(pred, gt, valid).item() == pytest.approx(full, rel=1e-5)
    assert D.sig_loss(pred, gt, valid, warmup=True).item() == pytest.approx(math.sqrt(0.15) * abs(np.mean(d)), rel=1e-5)
    # scale invariance of the variance term: a global factor only moves the mean term
    scaled = D.sig_loss(pred * 2 + 1e-3, gt, valid) ** 2 - 0.15 * (np.mean(d) + math.log(2)) ** 2
    assert scaled.item() == pytest.approx(np.var(d, ddof=1), rel=1e-3)


def test_depth_metrics_formulas():
    gt = torch.tensor([1.0, 2.0, 4.0, 8.0])
    pred = torch.tensor([1.1, 1.0, 5.5, 8.0])
    m = D.depth_metrics(pred, gt)
    assert m["rmse"] == pytest.approx(math.sqrt((0.01 + 1.0 + 2.25 + 0.0) / 4))
    assert m["arel"] == pytest.approx((0.1 / 1 + 1.0 / 2 + 1.5 / 4 + 0) / 4)
    # max ratios: 1.1, 2.0, 1.375, 1.0 -> thresholds 1.25, 1.5625, 1.953125
    assert (m["d1"], m["d2"], m["d3"]) == pytest.approx((0.5, 0.75, 0.75))


def test_eigen_crop_on_480x640():
    m = D.eigen_mask(480, 640)
    assert m.sum() == (471 - 45) * (601 - 41)
    rows, cols = m.any(1).nonzero().flatten(), m.any(0).nonzero().flatten()
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (45, 470, 41, 600)
    assert m[45:471, 41:601].all()
    half = D.eigen_mask(240, 320)  # rescaled to the GT size
    assert half.sum() == (235 - 22) * (300 - 20)


def test_depth_head_linear_bins():
    head = D.LinearDepthHead(8, bins=4, min_depth=1.0, max_depth=4.0).eval()
    x = torch.randn(2, 8, 3, 3)
    logits = head.conv(head.bn(x))
    w = torch.relu(logits) + 0.1
    expect = (w / w.sum(1, keepdim=True) * torch.tensor([1.0, 2.0, 3.0, 4.0])[None, :, None, None]).sum(1, keepdim=True)
    assert torch.allclose(head(x), expect, atol=1e-6)
    assert head(x).min() >= 1.0 and head(x).max() <= 4.0


def test_one_cycle_schedule():
    lr = [D.one_cycle(i, 100, 10, 1.0, 0.01, 0.0) for i in range(101)]
    assert lr[0] == pytest.approx(0.01) and lr[5] == pytest.approx(0.505) and lr[10] == pytest.approx(1.0)
    assert lr[55] == pytest.approx(0.5) and lr[100] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(lr[10:], lr[11:]))


@pytest.fixture(scope="module")
def random_encoder():
    from benchmark.config import build_config
    from benchmark.train import build

    over = small_overrides(**{"eval.dense_mode": "fast", "eval.dense_n_train": 256, "eval.dense_n_test": 128,
                              "eval.dense_batch": 16, "eval.depth_iters": 150, "eval.depth_warmup": 15,
                              "eval.depth_lr": 3e-3})
    cfg = build_config("clip", overrides=over)
    comps = build(cfg, torch.device("cpu"))
    comps.model.eval()
    return comps, cfg


def test_depth_probe_beats_mean_depth(random_encoder):
    from benchmark.tasks.depth import Depth

    comps, cfg = random_encoder
    task = Depth()
    m = task.run(comps, cfg)
    ex = task.extra()
    assert ex["data"] == "synthetic" and not ex["eigen_crop"] and ex["n_test"] == 128 and ex["delta_unit"] == "fraction"
    assert 3.0 < ex["baseline_depth"] < 9.0  # floor 3-9 m, objects nearer
    # a random-init encoder still carries the image row and the object colour: clearly better than the mean depth
    assert m["rmse"] < 0.95 * ex["baseline_rmse"] and m["arel"] < 0.85 * ex["baseline_arel"], (m, ex)
    assert m["d1"] > ex["baseline_d1"] + 0.1, (m, ex)


def test_missing_nyu_names_the_key(random_encoder, tmp_path):
    from benchmark.tasks.depth import Depth

    from benchmark.config import from_dict

    comps, cfg = random_encoder
    real = from_dict(cfg.to_dict())
    real.data.name, real.eval.dense_mode, real.eval.nyu_root = "cc12m", "full", str(tmp_path)
    with pytest.raises(FileNotFoundError, match="eval.nyu_root"):
        Depth().run(comps, real)
