import subprocess
import sys
import textwrap
from copy import deepcopy

import pytest
import torch

from edgeprune.models.blocks import refuse_split_blocks, unfuse_split_blocks
from edgeprune.models.checkpoint import save_model
from edgeprune.pruning.structured import PruneConfig, count_macs, prune

IMGSZ = 64


def _model(cfg: str):
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    return DetectionModel(cfg, nc=6, verbose=False).eval()


@pytest.mark.parametrize("cfg", ["yolo11n.yaml", "yolov8n.yaml"])
def test_split_blocks_unfuse_and_refuse_keep_outputs(cfg):
    model = _model(cfg)
    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    ref = model(x)[0]
    work = deepcopy(model)
    assert unfuse_split_blocks(work), "the family has split blocks"
    torch.testing.assert_close(work(x)[0], ref)
    refuse_split_blocks(work)
    torch.testing.assert_close(work(x)[0], ref)
    assert type(work.model[2]) is type(model.model[2])


@pytest.mark.parametrize("cfg", ["yolo11n.yaml", "yolov8n.yaml"])
def test_prune_reaches_flops_goal_and_keeps_output_shape(cfg):
    model = _model(cfg)
    pruned, result = prune(model, PruneConfig(flops_reduction=0.5, imgsz=IMGSZ))
    macs0, params0 = count_macs(model, IMGSZ)
    macs1, params1 = count_macs(pruned, IMGSZ)
    assert 0.4 <= 1 - macs1 / macs0 <= 0.6
    assert params1 < 0.75 * params0
    assert result.macs_after == macs1 and result.layers
    x = torch.rand(2, 3, IMGSZ, IMGSZ)
    assert pruned(x)[0].shape == model(x)[0].shape
    assert torch.isfinite(pruned(x)[0]).all()
    assert any("head output" in why for why in result.locked.values())
    widths = [m.out_channels for n, m in pruned.named_modules()
              if isinstance(m, torch.nn.Conv2d) and n not in result.locked]
    assert all(w % 8 == 0 for w in widths), "channel counts rounded to multiples of 8"
    modules = {type(m).__module__.split(".")[0] for m in pruned.modules()}
    assert modules <= {"ultralytics", "torch"}, "only Ultralytics / torch classes remain"


def test_pruned_checkpoint_loads_with_plain_ultralytics(tmp_path):
    pruned, _ = prune(_model("yolo11n.yaml"), PruneConfig(flops_reduction=0.5, imgsz=IMGSZ))
    path = save_model(pruned, tmp_path / "pruned.pt")
    script = textwrap.dedent(f"""
        import sys, numpy as np
        from ultralytics import YOLO
        model = YOLO({str(path)!r})
        result = model.predict(np.zeros(({IMGSZ}, {IMGSZ}, 3), np.uint8), imgsz={IMGSZ}, verbose=False)
        assert "edgeprune" not in sys.modules, "loading needed edgeprune"
        print("params", sum(p.numel() for p in model.model.parameters()))
    """)
    env = {"YOLO_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    import os

    env.update({k: v for k, v in os.environ.items() if k.startswith("YOLO_") or k in ("HOME", "OMP_NUM_THREADS")})
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"params {sum(p.numel() for p in pruned.parameters())}" in out.stdout


def test_per_layer_overrides_prune_only_the_named_block():
    from edgeprune.pruning.structured import prune_at_ratio

    cfg = PruneConfig(imgsz=IMGSZ, overrides=(("model.8.", 0.5),))
    _, result = prune_at_ratio(_model("yolo11n.yaml"), 0.0, cfg)
    assert result.layers and all(name.startswith("model.8.") for name in result.layers), result.layers


def test_a_loaded_checkpoint_has_the_same_prunable_groups_as_the_model_it_saved(tmp_path):
    """A checkpoint loads with frozen weights; the stem (model.0, model.1) must stay prunable all the same."""
    from ultralytics.nn.tasks import DetectionModel

    from edgeprune.models.checkpoint import load_model
    from edgeprune.pruning.structured import survey

    model = DetectionModel("yolo11n.yaml", nc=6, verbose=False).eval()
    save_model(model, tmp_path / "model.pt")
    loaded = load_model(tmp_path / "model.pt")
    assert not any(p.requires_grad for p in loaded.parameters())
    cfg = PruneConfig(criterion="l2", imgsz=64)
    groups = survey(loaded, cfg).channels
    assert {"model.0.conv", "model.1.conv"} <= set(groups) and set(groups) == set(survey(model, cfg).channels)
    pruned, result = prune(loaded, PruneConfig(flops_reduction=0.5, criterion="l2", imgsz=64))
    assert "model.1.conv" in result.layers and not any(p.requires_grad for p in loaded.parameters())
