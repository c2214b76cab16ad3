"""The training step reads nothing back from the device and traces as one graph (issue 12), and the host-planned
step computes what the former device-side code computed: same losses and gradients."""

import pytest
import torch
import torch.nn.functional as F
from benchmark.objectives.base import Masking, contrastive_loss, diffusion_rows
from benchmark.objectives.schedules import make_mask

from benchmark import registry
from benchmark.config import build_config
from benchmark.perf import SyncDetector, count_syncs, graph_breaks
from benchmark.testing import small_overrides

OBJECTIVES = ["clip", "mar", "fluid", "repa", "dream"]
RATIOS = {"below_gamma": 0.3, "gamma_to_phi": 0.6, "above_phi": 0.9}  # γ = 0.5, ϕ = 0.75


def setup(objective: str):
    import dataclasses

    from benchmark.data import build_train_data
    from benchmark.train import build, prepare_batch

    fields = {f.name for f in dataclasses.fields(registry.objectives.get(objective).Settings)}
    gates = {f"objective.{k}": v for k, v in (("gamma", 0.5), ("phi", 0.75)) if k in fields}  # all three regimes occur
    over = small_overrides(objective, **{"train.caption_dropout": 0.5, "tasks": "", **gates})
    cfg = build_config(objective, preset="tiny", overrides=over)
    comps = build(cfg)
    head = comps.backbone.__dict__["_modules"].get("head")
    if head is not None:  # a non-zero head output: the decoder and aligner then get gradients
        torch.nn.init.normal_(head.net.final.linear.weight, std=0.05)
    return comps, prepare_batch(comps, build_train_data(cfg).batch(0, 16), 0)


def masking(seq_len: int, ratio: float, seed: int = 5) -> Masking:
    """Four groups of four around ``ratio`` (different visible counts: the encoder pads)."""
    ratios = (torch.tensor([-0.04, 0.0, 0.04, 0.02], dtype=torch.float64) + ratio).clamp(0, 1)
    m, r, g = make_mask(ratios, 4, 16, seq_len, torch.Generator().manual_seed(seed))
    return Masking(m, r, g, 4)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_step_has_no_host_sync_and_no_graph_break(objective, one_thread):
    """Forward + backward of a planned step at ratios below γ, between γ and ϕ and above ϕ: no op that reads a
    device value (SyncDetector) and 0 graph breaks (dynamo.explain). The unplanned mask (a tensor, the former
    code path) is flagged: the detector can fail."""
    comps, batch = setup(objective)
    model = comps.model
    for ratio in RATIOS.values():
        mask = comps.objective.plan(masking(comps.backbone.seq_len, ratio), comps.backbone)

        def step(mask=mask):
            out = model(batch, mask, 1.0)
            if out["total"].requires_grad:
                out["total"].backward()

        n, ops = count_syncs(step)
        assert n == 0, (objective, ratio, dict(ops))
        breaks, reasons = graph_breaks(model.losses, batch, model.prepare(batch, mask), 1.0)  # what train.compile compiles
        assert breaks == 0, (objective, ratio, reasons)
    with SyncDetector() as d:  # the fallback (a mask planned from the device) reads the mask back
        model(batch, masking(comps.backbone.seq_len, 0.6), 1.0)
    assert d.count > 0


def test_detector_flags_each_kind_of_sync():
    x = torch.randn(8)
    for fn in (lambda: x.sum().item(), lambda: bool(x.max() > 0), lambda: x[x > 0], lambda: x.nonzero(),
               lambda: int(x.argmax())):
        assert count_syncs(fn)[0] >= 1
    assert count_syncs(lambda: x[torch.tensor([1, 2])] * 2 + x.max())[0] == 0


def old_losses(objective: str, comps, batch, m: Masking) -> torch.Tensor:
    """The former device-side step (boolean masks, .any() gates, the null condition on B rows), kept here as the
    reference the host-planned step must reproduce."""
    bb, obj, c = comps.backbone, comps.objective, comps.objective.cfg
    layers = tuple(x for x in (getattr(c, "clip_layer", 0), c.repa_layer if objective == "repa" else 0) if x)
    enc = bb.encode(batch.tokens, m.mask, return_layers=layers)  # the tensor path: sorts on the device
    total = torch.zeros(())
    if objective in ("clip", "dream"):
        participate = m.masked_fraction <= c.phi + 1e-9
        if bool(participate.any()):
            image = obj.clip.embed_image(enc.pool(c.clip_pool, c.clip_layer))
            clip = contrastive_loss(image, obj.clip.embed_text(batch.clip_ids), obj.clip.scale(), participate,
                                    c.clip_filter)
            total = total + c.clip_weight * clip
    if objective == "repa":
        target = obj.teacher(batch.images)
        h = enc.layers[c.repa_layer][:, enc.num_buffer:]
        valid = enc.valid[:, enc.num_buffer:]
        target = torch.gather(target, 1, enc.ids_keep.unsqueeze(-1).expand(-1, -1, target.shape[-1]))
        cos = F.cosine_similarity(obj.projector(h).float(), target.float(), dim=-1)
        total = total + c.repa_weight * ((1 - cos) * valid).sum() / valid.sum()
    if objective != "clip":
        rows = diffusion_rows(m, c.gamma)
        if bool(rows.any()):
            if objective == "mar":
                t5, valid = bb.null_condition(batch.t5_null, batch.tokens.shape[0]), None
            else:
                drop = batch.caption_drop
                t5 = torch.where(drop[:, None, None], batch.t5_null.expand_as(batch.t5), batch.t5)
                valid = batch.t5_valid if bb.cfg.text_pad_mask else None
            z = bb.decode(enc, bb.align_text(t5, valid), valid)
            g, mul = m.num_groups, bb.cfg.diffusion_batch_mul
            n_masked = torch.zeros(g).index_add_(0, m.group, m.mask.float().sum(1))
            w = (1.0 / (g * n_masked[m.group] * mul))[:, None].expand_as(rows)[rows]
            zr, xr = z[rows].repeat(mul, 1), batch.tokens[rows].repeat(mul, 1)
            total = total + c.diff_weight * (bb.head(xr.float(), zr.float()) * w.repeat(mul)).sum()
    return total


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_planned_step_matches_the_device_side_step(objective, one_thread):
    """Same losses and gradients as the former code: bitwise on CPU where the ops are the same; MAR's null
    condition now goes through the aligner once instead of once per row (allclose)."""
    comps, batch = setup(objective)
    model, compared = comps.model, 0
    for ratio in RATIOS.values():
        m = masking(comps.backbone.seq_len, ratio)
        results = []
        for new in (True, False):
            torch.manual_seed(7)  # the diffusion head's (t, noise) draws
            model.zero_grad(set_to_none=True)
            total = model(batch, comps.objective.plan(m, comps.backbone), 1.0)["total"] if new else \
                old_losses(objective, comps, batch, m)
            if total.requires_grad:
                total.backward()
            results.append((total.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                              if p.grad is not None}))
        (new_total, new_g), (old_total, old_g) = results
        assert new_g.keys() == old_g.keys(), (objective, ratio)
        if objective == "mar":
            assert torch.allclose(new_total, old_total, rtol=1e-6, atol=0)
            for n in new_g:
                assert torch.allclose(new_g[n], old_g[n], rtol=1e-4, atol=1e-7), (ratio, n)
        else:
            assert torch.equal(new_total, old_total), (objective, ratio, new_total, old_total)
            for n in new_g:
                assert torch.equal(new_g[n], old_g[n]), (objective, ratio, n)
        compared += len(new_g)
    assert compared > 20


def test_ddp_rows_are_the_global_masks_rows():
    """A rank builds only its rows of the global mask (sorted after slicing) and they equal the global mask's."""
    ratios = torch.tensor([0.2, 0.5, 0.7, 0.9], dtype=torch.float64)
    full = make_mask(ratios, 4, 16, 64, torch.Generator().manual_seed(3))
    part = make_mask(ratios, 4, 16, 64, torch.Generator().manual_seed(3), rows=slice(8, 12))
    for a, b in zip(part, full):
        assert torch.equal(a, b[8:12])
