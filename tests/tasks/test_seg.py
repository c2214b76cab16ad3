"""Segmentation probe: metrics on a hand-made confusion example (with torchmetrics), slide inference, the anchor's
augmentation, and the probe on synthetic scenes against the majority-class baseline."""


import pytest
import torch
import torch.nn.functional as F
from benchmark.tasks import _dense as D

from benchmark.testing import small_overrides

# 4 classes; class 3 appears nowhere (absent from labels and predictions); two pixels are ignored.
LABEL = torch.tensor([[0, 0, 1, 1, 2], [2, 2, 255, 0, 1], [0, 255, 1, 1, 2]])
PRED = torch.tensor([[0, 1, 1, 1, 2], [2, 0, 3, 0, 1], [0, 2, 1, 2, 2]])


def test_confusion_metrics_by_hand():
    conf = D.confusion(PRED, LABEL, 4)
    assert conf.sum() == 13 and conf[:, 3].sum() == 0  # the ignored pixel predicted as 3 is dropped
    m = D.seg_metrics(conf)
    # per class (I, U, label): 0: I=3, label 4, pred 4 -> U=5; 1: I=4, label 5, pred 5 -> U=6; 2: I=3, label 4, pred 4
    # -> U=5; 3: union 0 -> excluded (NaN), not counted as 0.
    assert m["miou"] == pytest.approx(100 * (3 / 5 + 4 / 6 + 3 / 5) / 3)
    assert m["pixacc"] == pytest.approx(100 * 10 / 13)
    assert m["macc"] == pytest.approx(100 * (3 / 4 + 4 / 5 + 3 / 4) / 3)


def test_metrics_agree_with_torchmetrics():
    from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 6, (3, 17, 19), generator=g)
    label[label == 5] = 255  # ignored
    label[:, :2] = 255
    pred = torch.randint(0, 6, (3, 17, 19), generator=g)
    pred[pred == 4] = 0  # class 4: in labels, never predicted; class 5: predicted only on ignored/other pixels
    conf = D.confusion(pred, label, 6)
    ours = D.seg_metrics(conf)
    iou = MulticlassJaccardIndex(6, average="none", ignore_index=255)(pred, label)
    union = conf.sum(0) + conf.sum(1) - conf.diag()
    assert ours["miou"] == pytest.approx(100 * iou[union > 0].mean().item(), rel=1e-5)
    pix = MulticlassAccuracy(6, average="micro", ignore_index=255)(pred, label)
    assert ours["pixacc"] == pytest.approx(100 * pix.item(), rel=1e-5)
    acc = MulticlassAccuracy(6, average="none", ignore_index=255)(pred, label)
    assert ours["macc"] == pytest.approx(100 * acc[conf.sum(1) > 0].mean().item(), rel=1e-5)


def test_slide_inference():
    g = torch.Generator().manual_seed(0)
    img = torch.randn(2, 3, 16, 16, generator=g)
    conv = torch.nn.Conv2d(3, 5, 3, padding=1)

    def predict(x):
        return F.interpolate(conv(F.avg_pool2d(x, 4)), size=x.shape[-2:], mode="bilinear", align_corners=False)

    with torch.no_grad():  # one window covering the image == whole-image inference
        assert torch.allclose(D.slide_inference(predict, img, 5, 16, 11), predict(img))
        # a per-pixel predictor gives the same map whatever the windows (overlaps are averaged)
        wide = torch.randn(1, 3, 16, 40, generator=g)
        point = torch.nn.Conv2d(3, 5, 1)
        assert torch.allclose(D.slide_inference(point, wide, 5, 16, 11), point(wide), atol=1e-6)


def test_random_crop_avoids_dominated_crops():
    torch.manual_seed(0)
    label = torch.zeros(40, 40, dtype=torch.long)
    label[:, 20:] = 1  # 16-px crops: 7 of the 25 offsets keep both classes under 75 %

    def dominated_rate(ratio):
        n = 0
        for _ in range(200):
            _, t = D.random_crop(torch.zeros(3, 40, 40), label, (16, 16), cat_max_ratio=ratio)
            n += int(torch.bincount(t.flatten(), minlength=2).max() >= 0.75 * t.numel())
        return n / 200

    # without the constraint 18/25 = 72 % of crops are dominated; with 10 re-draws 0.72^10 = 3.7 %
    assert dominated_rate(1.0) > 0.6 and dominated_rate(0.75) < 0.1


def test_seg_train_set_pads_with_ignore():
    class Tiny(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return torch.full((3, 20, 60), 200, dtype=torch.uint8), torch.ones(20, 60, dtype=torch.long)

    torch.manual_seed(1)
    for _ in range(10):
        x, y = D.SegTrainSet(Tiny(), 32)[0]
        assert x.shape == (3, 32, 32) and y.shape == (32, 32)
        assert set(y.unique().tolist()) <= {1, 255}
        pad = y == 255
        assert torch.all(x[:, pad] == 0)  # padding is 0 after normalisation
    # the short side is drawn in [16, 64]: at least once it is below 32 and the crop is padded
    torch.manual_seed(2)
    assert any((D.SegTrainSet(Tiny(), 32)[0][1] == 255).any() for _ in range(20))


@pytest.fixture(scope="module")
def random_encoder():
    """A small random-init encoder (its features carry the patch colours, little of the shapes)."""
    from benchmark.config import build_config
    from benchmark.train import build

    over = small_overrides(**{"eval.dense_mode": "fast", "eval.dense_n_train": 256, "eval.dense_n_test": 128,
                              "eval.dense_batch": 16, "eval.seg_iters": 120, "eval.seg_warmup": 12,
                              "eval.seg_recipe": "dinov3"})
    cfg = build_config("clip", overrides=over)
    comps = build(cfg, torch.device("cpu"))
    comps.model.eval()
    return comps, cfg


def test_seg_probe_beats_majority_class(random_encoder, monkeypatch):
    """End to end (cached features, head, schedule, upsampling, slide inference, metrics) on features that carry
    the classes: a frozen "encoder" whose patch features are the patch's class histogram in a random basis + noise
    (looked up by image). The trained head must be far above the majority class; a shuffled lookup must not be."""
    from benchmark.tasks.seg import Segmentation

    from benchmark.data import SYNTHETIC_SPLITS
    from benchmark.data.dense import SyntheticDense

    comps, cfg = random_encoder
    table = {}
    for split, n in (("probe_train", cfg.eval.dense_n_train), ("probe_test", cfg.eval.dense_n_test)):
        ds = SyntheticDense(n, SYNTHETIC_SPLITS[split], cfg.model.image_size, "seg")
        for img, y in zip(ds.images, ds.targets):
            table[img.numpy().tobytes()] = F.avg_pool2d(F.one_hot(y, 7).permute(2, 0, 1)[None].float(), 4)[0]
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(64, 7, generator=g)

    def oracle(model, x, layer=0, tokens="image"):
        imgs = ((x + 1) * 127.5).round().to(torch.uint8)
        hist = torch.stack([table[im.numpy().tobytes()] for im in imgs])
        return torch.einsum("dk,bkhw->bdhw", basis, hist) + 0.1 * torch.randn(len(x), 64, *hist.shape[-2:])

    monkeypatch.setattr(D, "patch_features", oracle)
    task = Segmentation()
    m = task.run(comps, cfg)
    ex = task.extra()
    assert ex["classes"] == 7 and ex["data"] == "synthetic" and ex["lr"] == 1e-3 and ex["baseline_class"] == 0
    assert "native" in ex["resolution"] and ex["n_test"] == 128
    assert ex["baseline_miou"] == pytest.approx(ex["baseline_pixacc"] / 7)  # background IoU = its pixel share
    # (pixel accuracy is not asserted: at 8x8 logits bilinearly upsampled, object borders bleed over the background)
    assert m["miou"] > ex["baseline_miou"] + 30 and m["macc"] > 100 / 7 + 50, (m, ex)
    assert ex["loss_last"] < 0.75 * ex["loss_first"]

    keys = list(table)  # the same features assigned to the wrong images: nothing to learn
    vals = [table[k] for k in keys]
    perm = torch.randperm(len(keys), generator=g).tolist()
    table.clear()
    table.update({keys[i]: vals[j] for i, j in enumerate(perm)})
    m2 = Segmentation().run(comps, cfg)
    assert m2["miou"] < ex["baseline_miou"] + 10, m2


def test_missing_ade20k_names_the_key(random_encoder, tmp_path):
    from benchmark.tasks.seg import Segmentation

    comps, cfg = random_encoder
    from benchmark.config import from_dict

    real = from_dict(cfg.to_dict())
    real.data.name, real.eval.dense_mode, real.eval.ade20k_root = "cc12m", "full", str(tmp_path)
    with pytest.raises(FileNotFoundError, match="eval.ade20k_root"):
        Segmentation().run(comps, real)
