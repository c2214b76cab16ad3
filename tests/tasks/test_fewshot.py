"""Few-shot: the batched logistic regression against sklearn, the episode sampler, CL2N, the task end to end."""

import numpy as np
import pytest
import torch
from benchmark.tasks._logreg import batched_logreg, logreg_predict, prototype_predict
from benchmark.tasks.fewshot import evaluate_episodes, sample_episodes
from sklearn.linear_model import LogisticRegression


def _episodes(E=60, K=5, shot=5, q=15, D=32, sep=0.4, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(E, K, D, generator=g)
    ys = torch.arange(K).repeat_interleave(shot).expand(E, -1)
    yq = torch.arange(K).repeat_interleave(q).expand(E, -1)
    e = torch.arange(E)[:, None]
    xs = torch.nn.functional.normalize(sep * means[e, ys] + torch.randn(E, K * shot, D, generator=g), dim=-1)
    xq = torch.nn.functional.normalize(sep * means[e, yq] + torch.randn(E, K * q, D, generator=g), dim=-1)
    return xs, ys, xq, yq


def test_batched_logreg_matches_sklearn_on_60_episodes():
    xs, ys, xq, yq = _episodes()
    W, b = batched_logreg(xs, ys, 5)
    pred = logreg_predict(xs, ys, xq, 5)
    same, acc_ours, acc_sk = 0, [], []
    for e in range(len(xs)):
        clf = LogisticRegression(C=1.0, solver="lbfgs", max_iter=10_000, tol=1e-8)
        clf.fit(xs[e].double().numpy(), ys[e].numpy())
        p = clf.predict(xq[e].double().numpy())
        same += int((p == pred[e].numpy()).all())
        acc_sk.append((p == yq[e].numpy()).mean())
        acc_ours.append((pred[e] == yq[e]).float().mean().item())
        # the same optimum: weights equal, intercepts equal up to the softmax's common shift
        np.testing.assert_allclose(W[e].double().numpy(), clf.coef_, atol=5e-3)
        bi = b[e].double().numpy()
        np.testing.assert_allclose(bi - bi.mean(), clf.intercept_ - clf.intercept_.mean(), atol=5e-3)
    assert same >= 59, same  # float32 ties may flip one borderline query at most
    assert abs(np.mean(acc_ours) - np.mean(acc_sk)) < 2e-3
    assert 0.3 < np.mean(acc_sk) < 0.95  # a problem where the classifier matters


def test_batched_logreg_other_C_and_float64():
    xs, ys, xq, _ = _episodes(E=4, K=3, shot=4, q=5, seed=1)
    for C in (0.1, 10.0):
        W, b = batched_logreg(xs, ys, 3, C=C, dtype=torch.float64, tol=1e-9)
        for e in range(len(xs)):
            clf = LogisticRegression(C=C, max_iter=10_000, tol=1e-10).fit(xs[e].double().numpy(), ys[e].numpy())
            np.testing.assert_allclose(W[e].numpy(), clf.coef_, atol=1e-5)


def test_prototype_cl2n_matches_a_loop():
    xs, ys, xq, _ = _episodes(E=5, q=3)
    pred = prototype_predict(xs, ys, xq, 5)
    for e in range(5):
        mu = xs[e].mean(0)
        s = torch.nn.functional.normalize(xs[e] - mu, dim=-1)
        q = torch.nn.functional.normalize(xq[e] - mu, dim=-1)
        protos = torch.stack([s[ys[e] == k].mean(0) for k in range(5)])
        ref = torch.tensor([int(((protos - qi) ** 2).sum(1).argmin()) for qi in q])
        assert torch.equal(pred[e], ref)


def test_episode_sampler():
    g = torch.Generator().manual_seed(0)
    ytr = torch.randint(0, 12, (600,), generator=g)
    yte = torch.randint(0, 12, (300,), generator=g)
    ytr[ytr == 11] = 10  # class 11: no train images -> never drawn
    s_idx, s_lab, q_idx, q_lab, q = sample_episodes(ytr, yte, 200, 5, 5, 7, torch.Generator().manual_seed(1))
    assert s_idx.shape == (200, 25) and q_idx.shape == (200, 5 * q) and q == 7
    for e in range(200):
        cls_s = ytr[s_idx[e]].view(5, 5)
        cls_q = yte[q_idx[e]].view(5, q)
        assert (cls_s == cls_s[:, :1]).all() and (cls_q == cls_s[:, :1]).all()  # one class per slot, both pools
        assert len(set(cls_s[:, 0].tolist())) == 5 and 11 not in cls_s[:, 0].tolist()
        assert len(set(s_idx[e].tolist())) == 25 and len(set(q_idx[e].tolist())) == 5 * q  # no repeats
    assert torch.equal(s_lab[0], torch.arange(5).repeat_interleave(5))


def test_evaluate_episodes_reads_the_features():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (1000,), generator=g)
    noise = torch.randn(1000, 32, generator=g)
    for clf in ("logreg", "proto"):
        r = evaluate_episodes(noise[:600], y[:600], noise[600:], y[600:], 100, 5, 5, 10, clf, 1.0, 0)
        assert abs(r["mean"] - 20) < 4  # chance on noise
        informative = torch.nn.functional.one_hot(y, 32).float() * 6 + noise
        r = evaluate_episodes(informative[:600], y[:600], informative[600:], y[600:], 100, 5, 5, 10, clf, 1.0, 0)
        assert r["mean"] > 90 and r["ci95"] == pytest.approx(1.96 * r["std"] / 100 ** 0.5)


def test_fewshot_task_on_synthetic(small_model):
    from benchmark.tasks.fewshot import FewShot

    comps, cfg = small_model
    cfg.task_settings("fewshot").episodes = 50
    task = FewShot()
    m = task.run(comps, cfg)
    names = ["syn_class", "syn_shape", "syn_color", "syn_position", "syn_background"]
    assert set(m) == {f"{n}{s}" for n in names for s in ("", "_std", "_ci95")} | {"avg"}
    assert m["avg"] == pytest.approx(np.mean([m[n] for n in names]))
    assert task.extra()["sets"]["syn_background"]["way"] == 4
    one = FewShot(variant="syn_shape").run(comps, cfg)  # the cache serves the features; same episodes
    assert one["syn_shape"] == m["syn_shape"]


@pytest.fixture(scope="module")
def small_model():
    from benchmark.config import build_config
    from benchmark.train import build

    over = {"model.width": 32, "model.depth": 4, "model.heads": 2, "model.buffer_tokens": 2, "objective.proj_hidden": 32,
            "objective.embed_dim": 16, "eval.n_probe_train": 300, "eval.n_probe_test": 200, "train.batch_size": 16,
            "data.n_train": 256}
    cfg = build_config("clip", overrides={k: str(v) for k, v in over.items()})
    comps = build(cfg)
    comps.model.eval()
    return comps, cfg
