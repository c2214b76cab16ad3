"""Fine-tuning: the layer-decay groups, stochastic depth, the weights it leaves alone, a short run."""

import pytest
import torch
from benchmark.tasks.ft import FineTune, FineTuneModel, layer_decay_groups, layer_id


def _small(**extra):
    from benchmark.config import build_config
    from benchmark.train import build

    over = {"model.width": 32, "model.depth": 6, "model.heads": 2, "model.buffer_tokens": 2, "model.head_width": 32,
            "model.aligner_depth": 1, "objective.proj_hidden": 32, "objective.embed_dim": 16, "train.batch_size": 16,
            "data.n_train": 256, "eval.n_probe_test": 64, **extra}
    cfg = build_config("dream", overrides={k: str(v) for k, v in over.items()})
    return build(cfg), cfg


@pytest.fixture(scope="module")
def small():
    return _small()


def test_layer_decay_groups(small):
    comps, _ = small
    net = FineTuneModel(comps.backbone, comps.tokenizer, 10, "all", 0.2)
    groups = layer_decay_groups(net, 0.05, 0.75)
    depth = len(net.encoder.encoder_blocks)  # 3
    n_layers = depth + 1
    where = {name: g for g in groups for name in g["names"]}
    # layer 0: buffer tokens, input projection (+ its LayerNorm), encoder position embedding
    for name in ("encoder.buffer", "encoder.encoder_pos", "encoder.z_proj.weight", "encoder.z_proj.bias",
                 "encoder.z_proj_ln.weight"):
        assert where[name]["layer"] == 0 and where[name]["lr_scale"] == pytest.approx(0.75 ** n_layers), name
    for k in range(depth):
        g = where[f"encoder.encoder_blocks.{k}.attn.qkv.weight"]
        assert g["layer"] == k + 1 and g["lr_scale"] == pytest.approx(0.75 ** (n_layers - k - 1))
    for name in ("encoder.encoder_norm.weight", "fc_norm.weight", "head.weight", "head.bias"):
        assert where[name]["lr_scale"] == 1.0, name
    # weight decay: matrices only, not 1-D params nor the buffer tokens / position embedding (MAE no_weight_decay)
    assert where["head.weight"]["weight_decay"] == 0.05 and where["encoder.z_proj.weight"]["weight_decay"] == 0.05
    for name in ("head.bias", "fc_norm.weight", "encoder.buffer", "encoder.encoder_pos"):
        assert where[name]["weight_decay"] == 0.0, name
    # every trainable parameter exactly once; nothing of the decoder, the diffusion head or the tokenizer
    names = [n for g in groups for n in g["names"]]
    assert sorted(names) == sorted(n for n, _ in net.named_parameters()) and len(set(names)) == len(names)
    assert not any(n.startswith(("encoder.decoder", "encoder.head.", "encoder.aligner", "encoder.text")) for n in names)
    assert layer_id("encoder.encoder_blocks.2.mlp.fc1.weight", 4) == 3


def test_drop_path_rises_linearly(small):
    from timm.layers import DropPath

    comps, _ = small
    net = FineTuneModel(comps.backbone, comps.tokenizer, 10, "all", 0.2)
    blocks = net.encoder.encoder_blocks
    assert isinstance(blocks[0].drop_path1, torch.nn.Identity)
    assert [b.drop_path1.drop_prob for b in blocks[1:]] == pytest.approx([0.1, 0.2])
    assert isinstance(blocks[2].drop_path2, DropPath)
    # the run's own backbone is untouched
    assert all(isinstance(b.drop_path1, torch.nn.Identity) for b in comps.backbone.encoder_blocks)
    assert net.head.weight.std() < 1e-4  # trunc-normal std 2e-5


def test_ft_short_run_trains_a_copy(small):
    comps, cfg = small
    before = {k: v.clone() for k, v in comps.backbone.state_dict().items()}
    ft = cfg.task_settings("ft")
    ft.epochs, ft.warmup_epochs, ft.batch, ft.n_train, ft.blr = 2, 1, 32, 64, 1e-3
    task = FineTune()
    m = task.run(comps, cfg)
    assert 0 <= m["top1"] <= 100 and m["chance"] == pytest.approx(100 / 48)
    ex = task.extra()
    assert ex["iters"] == 4 and ex["n_train"] == 64 and ex["n_test"] == 64 and len(ex["loss_first_last"]) == 2
    for k, v in comps.backbone.state_dict().items():
        assert torch.equal(v, before[k]), k
