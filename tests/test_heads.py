"""Whole-head pruning of attention blocks: exact surgery, survey/plan/knapsack items, replay and safe loading."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ultralytics.nn.modules.block import Attention

from edgeprune.budget.costs import conv_census, predictor_for
from edgeprune.budget.knapsack import allocate
from edgeprune.latency.features import latency_features
from edgeprune.models.attention import HeadPrunedAttention
from edgeprune.models.checkpoint import build_from_yaml, load_model, save_model
from edgeprune.pruning.heads import compose, drop_heads
from edgeprune.pruning.replay import replay
from edgeprune.pruning.structured import PruneConfig, prune_at_ratio, prune_to_widths, split_block_copy, survey
from edgeprune.targets import load_target

IMGSZ = 64


def _randomised_attention(dim=128, heads=2) -> Attention:
    torch.manual_seed(0)
    block = Attention(dim, num_heads=heads)
    for bn in (block.qkv.bn, block.pe.bn, block.proj.bn):  # non-trivial statistics: a wrong slice shows
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
    return block.eval()


@pytest.mark.parametrize("kept", [[0], [1], [0, 2]])
def test_dropping_heads_removes_exactly_their_share(kept):
    """The pruned block computes what the original computes with the dropped heads' values left out of proj."""
    heads = 3 if 2 in kept else 2
    block = _randomised_attention(dim=32 * heads, heads=heads)
    x = torch.rand(2, block.qkv.conv.in_channels, 5, 6)
    seen = {}
    handle = block.proj.register_forward_pre_hook(lambda _m, args: seen.setdefault("into_proj", args[0]))
    with torch.no_grad():
        block(x)
    handle.remove()
    values = [c for h in kept for c in range(h * block.head_dim, (h + 1) * block.head_dim)]
    pruned = _randomised_attention(dim=32 * heads, heads=heads)
    drop_heads(pruned, kept)
    assert type(pruned) is HeadPrunedAttention and pruned.num_heads == len(kept)
    assert pruned.proj.conv.out_channels == x.shape[1], "the block still writes its full width (the residual)"
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), pruned.proj(seen["into_proj"][:, values]))
    with pytest.raises(ValueError):
        drop_heads(pruned, [len(kept)])


def test_heads_are_opt_in_and_then_pruned_replayed_and_loaded(tmp_path):
    model = build_from_yaml("yolo26n.yaml", 6)
    plain = survey(model, PruneConfig(imgsz=IMGSZ))
    assert not plain.heads and any(".attn.qkv" in name for name in plain.locked), "off by default: locked, reported"
    cfg = PruneConfig(imgsz=IMGSZ, attention_heads=True, criterion="random")
    found = survey(model, cfg)
    assert found.heads == {"model.10.m.0.attn", "model.22.m.0.1.attn"}
    assert not any(".attn." in name for name in found.locked), "attention convs move with their heads"
    pruned, result = prune_at_ratio(model, 0.5, cfg)
    assert set(result.heads) == found.heads and all(len(e["kept"]) == 1 for e in result.heads.values())
    for name in found.heads:
        block = pruned.get_submodule(name)
        assert type(block) is HeadPrunedAttention and block.num_heads == 1
        assert block.qkv.conv.in_channels == model.get_submodule(name).qkv.conv.in_channels
    x = torch.rand(2, 3, IMGSZ, IMGSZ)
    record = json.loads(json.dumps(result.replay_record()))
    rebuilt = replay(model, record)
    assert [k for k, v in rebuilt.state_dict().items() if not torch.equal(v, pruned.state_dict()[k])] == []
    assert torch.equal(rebuilt(x)[0], pruned(x)[0])
    path = save_model(pruned, tmp_path / "heads.pt")
    loaded = load_model(path)  # the weights-only loader: HeadPrunedAttention is on the allowlist
    torch.testing.assert_close(loaded.float().eval()(x)[0], pruned(x)[0])


def test_iterative_records_compose_to_the_original_heads():
    first = {"model.10.m.0.attn": {"heads": 4, "kept": [0, 2, 3]}}
    then = {"model.10.m.0.attn": {"heads": 3, "kept": [0, 2]}, "model.22.attn": {"heads": 2, "kept": [1]}}
    assert compose(first, then) == {"model.10.m.0.attn": {"heads": 4, "kept": [0, 3]},
                                    "model.22.attn": {"heads": 2, "kept": [1]}}


def test_heads_are_knapsack_items_priced_like_the_pruned_model():
    model = build_from_yaml("yolo26n.yaml", 6)
    cfg = PruneConfig(imgsz=IMGSZ, attention_heads=True)
    found = survey(model, cfg)
    census = conv_census(split_block_copy(model), IMGSZ)
    rng = np.random.default_rng(3)
    keep = {n: (1 if n in found.heads else found.channels[n] if any(n in p for p in found.pairs)
                else max(8, int(c * rng.uniform(0.4, 1)) // 8 * 8)) for n, c in found.channels.items()}
    pruned, _ = prune_to_widths(model, keep, cfg)
    counted = census.features(*census.widths(found.channels, keep, found.effects))
    real = latency_features(pruned, IMGSZ)
    assert {k: round(counted[k], 6) for k in real} == pytest.approx(real, abs=1e-5)
    predict = predictor_for(load_target("rpi"), None)
    full = predict(census.features(*census.widths(found.channels, found.channels, found.effects)))
    allocation = allocate(found, census, predict, 0.3 * full, cfg.round_to)
    assert all(allocation.keep[n] >= 1 for n in found.heads), "a block keeps at least one head"
    assert all(allocation.keep[n] % 8 == 0 or allocation.keep[n] == found.channels[n]
               for n in found.channels if n not in found.heads)


@pytest.mark.slow
@pytest.mark.parametrize("name, precision", [("onnx", "fp32"), ("tflite", "fp32"), ("tflite", "int8"),
                                             ("tensorrt", "int8"), ("coreml", "int8")])
def test_every_format_exports_a_head_pruned_model(name, precision, tmp_path):
    """The subclass' reshapes trace, convert and (where the host runs the file) compute what torch computes.
    yolo11n: the same attention block as yolo26n, and no top-k whose near-ties on random weights reorder rows."""
    from edgeprune import formats
    from edgeprune.formats.graph import denormalize, deploy_graph

    pruned, result = prune_at_ratio(build_from_yaml("yolo11n.yaml", 6), 0.5,
                                    PruneConfig(imgsz=IMGSZ, attention_heads=True, criterion="l1"))
    assert list(result.heads) == ["model.10.m.0.attn"]
    calib = np.random.default_rng(0).random((4, 3, IMGSZ, IMGSZ), dtype=np.float32)
    suffix = formats.get(name).caps.suffix
    out = formats.get(name).export(pruned, tmp_path / f"m_{precision}{suffix}", IMGSZ, precision, calib)
    if name == "coreml":  # converts and is inspected on Linux; predicts only on macOS
        from edgeprune.formats.coreml.export import inspect_spec

        assert inspect_spec(out)["ops"].get("matmul", 0) >= 2, "the attention block converted"
        return
    x = calib[:2]
    got = formats.load_runner(out, threads=1, imgsz=IMGSZ).run(x)
    ref = denormalize(deploy_graph(pruned, IMGSZ)(torch.from_numpy(x)).detach().numpy(), IMGSZ)
    assert got.shape == ref.shape and np.isfinite(got).all()
    if precision == "fp32":
        assert np.abs(got - ref).max() < 1e-2, "boxes in pixels of a 64 px input"
