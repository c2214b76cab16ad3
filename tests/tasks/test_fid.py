"""FID through clean-fid's real folder code path with a small stand-in feature extractor: ~0 for a set against
itself, larger against a shifted set, equal to clean-fid's own two-folder ``compute_fid`` and to the closed
form with scipy; cached reference statistics; the synthetic task end to end (fd_ref, never fid)."""

import numpy as np
import pytest
import torch
from benchmark.tasks.fid import folder_features, frechet, inception_extractor, reference_stats, stats
from scipy import linalg
from torchvision.io import write_png

pytestmark = pytest.mark.usefixtures("one_thread")  # fixture in tests/conftest.py


class StandIn(torch.nn.Module):
    """A fixed random conv net: [N, 3, 32, 32] in [0, 255] -> [N, 16] (what clean-fid hands an extractor)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, 2),
                                       torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())

    @torch.no_grad()
    def forward(self, x):
        return self.net(x / 127.5 - 1)


def write_folder(path, images):
    path.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        write_png(img, str(path / f"{i:05d}.png"))
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from benchmark.data.synthetic import SyntheticShapes

    root = tmp_path_factory.mktemp("fid")
    a = SyntheticShapes(120, seed=5).images
    b = SyntheticShapes(120, seed=6).images
    shifted = (a.float() * 0.6 + 90).clamp(0, 255).to(torch.uint8)  # washed out: a distribution shift
    return write_folder(root / "a", a), write_folder(root / "b", b), write_folder(root / "shift", shifted)


def closed_form(f1, f2):
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_fid_self_zero_shift_larger_matches_cleanfid(folders):
    from cleanfid import fid

    a, b, shift = folders
    net = StandIn()
    fa = folder_features(a, net, "clean", size=32)
    mu, sigma = stats(fa)
    assert abs(frechet(fa, mu, sigma)) < 1e-6
    d_same_dist = frechet(folder_features(b, net, "clean", size=32), mu, sigma)
    d_shift = frechet(folder_features(shift, net, "clean", size=32), mu, sigma)
    assert d_shift > 5 * d_same_dist > 0
    # clean-fid's own two-folder path with the same extractor and resize gives the same number
    from cleanfid.resize import make_resizer

    ref = fid.compute_fid(str(a), str(shift), mode="clean", num_workers=0, device=torch.device("cpu"),
                          custom_feat_extractor=net, custom_fn_resize=make_resizer("PIL", False, "bicubic", (32, 32)),
                          verbose=False)
    assert d_shift == pytest.approx(ref, rel=1e-6)
    assert d_shift == pytest.approx(closed_form(folder_features(shift, net, "clean", size=32), fa), rel=1e-4)


def test_reference_stats_cached_with_hash_under_the_data_cache(folders):
    from benchmark.data import cache_root

    a, _, _ = folders
    net = StandIn()
    mu, sigma, h = reference_stats(a, net, {"net": "standin"}, "clean", 32, "cpu")
    path = cache_root() / "fid_stats" / f"{h}.npz"
    assert path.exists() and "site-packages" not in str(path)
    mu2, sigma2, h2 = reference_stats(a, net, {"net": "standin"}, "clean", 32, "cpu")
    assert h2 == h and np.array_equal(mu, mu2) and np.array_equal(sigma, sigma2)
    _, _, h3 = reference_stats(a, net, {"net": "other"}, "clean", 32, "cpu")
    assert h3 != h


def test_inception_needs_a_local_file(monkeypatch, tmp_path):
    monkeypatch.delenv("DREAM_BENCH_INCEPTION", raising=False)
    with pytest.raises(FileNotFoundError, match="eval.inception_path"):
        inception_extractor("")
    with pytest.raises(FileNotFoundError, match="inception-2015-12-05.pt"):
        inception_extractor(str(tmp_path))


def test_real_protocol_without_reference_is_a_clear_error(monkeypatch):
    from benchmark.tasks.fid import FID

    from benchmark.config import build_config

    monkeypatch.delenv("DREAM_BENCH_GEN_REF", raising=False)
    cfg = build_config("dream", overrides={"data.name": "cc12m"})
    with pytest.raises(FileNotFoundError, match="eval.gen_root"):
        FID("coco").run(None, cfg)


@pytest.fixture(scope="module")
def tiny_model():
    """An untrained smaller-than-tiny DREAM (the task's plumbing, not its quality) and a small reference network."""

    from benchmark.config import build_config
    from benchmark.testing import small_overrides
    from benchmark.train import build

    over = small_overrides(**{"eval.gen_samples": 24, "eval.sample_steps": 4, "eval.gen_batch": 24,
                              "model.sample_steps": 5})
    cfg = build_config("dream", "wm", overrides=over)
    comps = build(cfg)
    comps.model.eval()
    return comps, cfg


@pytest.fixture(autouse=True)
def small_reference(monkeypatch):
    import benchmark.tasks._reference as ref

    monkeypatch.setattr(ref, "DEFAULT_RECIPE", ref.RefRecipe(n_train=512, epochs=1, width=8))


def test_synthetic_fid_task_reports_fd_ref(tiny_model):
    from benchmark.tasks.fid import FID

    comps, cfg = tiny_model
    task = FID("cc12m")
    out = task.run(comps, cfg)
    assert set(out) == {"fd_ref"} and out["fd_ref"] > 0 and np.isfinite(out["fd_ref"])
    ex = task.extra()
    assert ex["backend"] == "clean-fid" and ex["mode"] == "clean" and ex["n_samples"] == 24
    assert ex["feature_network"].startswith("reference-network:") and ex["generation"] == "sad/k1-nfe4-self"
    # a second run reuses the cached generation and the cached reference statistics: the same number
    assert FID().run(comps, cfg)["fd_ref"] == out["fd_ref"]
