"""Capabilities, not names: an objective declared outside the package, with any combination of capabilities, is
treated by the loop and the tasks according to what it declares (no edit outside its own file)."""

import pytest
from benchmark.objectives.base import Objective
from benchmark.objectives.mar import MAR

from benchmark import Capabilities, register_objective


@register_objective("test_uncond_decoder")
class UncondDecoder(MAR):
    """MAR's loss under another name: an unconditional decoder."""

    capabilities = Capabilities(decoder=True, t5=True)


@register_objective("test_cond_decoder")
class CondDecoder(MAR):
    """The same loss declared text-conditioned (as FLUID is)."""

    capabilities = Capabilities(decoder=True, text_conditioned=True, t5=True)


@register_objective("test_needs_only")
class NeedsOnly(Objective):
    """An objective written against the older ``needs``: its capabilities are derived."""

    needs = frozenset({"decoder", "t5"})


def _comps(objective):
    from benchmark.config import build_config
    from benchmark.testing import small_overrides
    from benchmark.train import build

    cfg = build_config(objective, overrides=small_overrides(objective, tasks=""))
    return build(cfg), cfg


@pytest.mark.parametrize("objective,generates,text_to_image", [
    ("test_uncond_decoder", True, False), ("test_cond_decoder", True, True), ("clip", False, False)])
def test_tasks_read_capabilities(objective, generates, text_to_image, one_thread):
    from benchmark.tasks.clip_score import ClipScore
    from benchmark.tasks.fid import FID
    from benchmark.tasks.zeroshot import ZeroShot

    comps, cfg = _comps(objective)
    assert (FID().applies(comps, cfg) is None) == generates
    assert (ClipScore().applies(comps, cfg) is None) == text_to_image
    assert (ZeroShot().applies(comps, cfg) is None) == (objective == "clip")
    assert hasattr(comps.backbone, "head") == generates  # the loop built the decoder only when declared


def test_needs_still_declares_capabilities():
    caps = NeedsOnly.capabilities
    assert caps.decoder and caps.t5 and caps.text_conditioned and not caps.clip_text
    assert UncondDecoder.needs == frozenset({"decoder", "t5"}) and not UncondDecoder.capabilities.text_conditioned
