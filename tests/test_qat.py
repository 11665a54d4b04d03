"""Quantization-aware fine-tuning: fake INT8 in the live training model only, checkpoints stay plain float."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeprune.quantize import qat


def test_fake_quant_weight_is_per_channel_int8():
    w = torch.randn(4, 3, 3, 3) * torch.tensor([1.0, 10.0, 0.1, 3.0]).view(4, 1, 1, 1)
    q = qat.fake_quant_weight(w)
    scale = w.abs().amax(dim=(1, 2, 3)) / 127
    levels = q / scale.view(4, 1, 1, 1)
    assert torch.allclose(levels, levels.round(), atol=1e-3), "every weight sits on its channel's int8 grid"
    assert ((q - w).abs() <= scale.view(4, 1, 1, 1) / 2 + 1e-6).all()


def test_fake_quant_input_ranges_include_zero_and_pass_gradients():
    x = torch.linspace(0.5, 2.0, 50, requires_grad=True)
    y = qat.fake_quant_input(x, 0.5, 2.0, symmetric=False)  # range widened to [0, 2]: zero is exact
    assert torch.allclose(y, x, atol=2.0 / 255)
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x)), "straight-through inside the range"
    s = qat.fake_quant_input(torch.tensor([-1.0, 0.0, 1.0]), -1.0, 1.0, symmetric=True)
    assert torch.allclose(s, torch.tensor([-1.0, 0.0, 1.0]), atol=1e-6)


def test_attach_changes_training_forward_only_until_detach(tiny_model):
    import copy

    model = copy.deepcopy(tiny_model).eval()
    head = model.model[-1]
    for p in head.dfl.parameters():
        p.requires_grad_(False)  # as Ultralytics' trainer freezes it
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        plain = model(x)[0]
    patched = qat.attach(model, symmetric=False)
    assert patched == sum(1 for m in model.modules() if isinstance(m, torch.nn.Conv2d)) - 1, "all but DFL"
    assert not hasattr(head.dfl.conv, qat.ATTR)
    with torch.no_grad():
        assert torch.equal(model(x)[0], plain), "no range observed yet: eval stays float"
        model.train()
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()  # keep running statistics fixed, so only the fake quantization differs
        model(x)  # one training step's forward observes the input ranges
        model.eval()
        fake = model(x)[0]
        first_fake = model.model[0](x)
    assert qat.fake_quant_calls(model) == 2 * patched + 1 and not torch.equal(plain, fake)
    qat.detach(model)
    with torch.no_grad():
        assert torch.equal(model(x)[0], plain)
        first_plain = model.model[0](x)
    error = (first_fake - first_plain).abs().max() / first_plain.abs().max()
    assert 1e-4 < error < 0.05, f"first layer through int8: relative error {error:.4f}"
    assert not any(hasattr(m, qat.ATTR) or "forward" in vars(m) for m in model.modules())


@pytest.mark.slow
def test_qat_training_runs_through_fake_int8_and_saves_plain_checkpoints(tiny_model, tiny_data, tmp_path,
                                                                         monkeypatch):
    import copy

    from edgeprune.data.dataset import load_dataset
    from edgeprune.training import trainer

    live = []
    real_attach = qat.attach

    def spy(model, symmetric):
        live.append(model)
        return real_attach(model, symmetric)

    monkeypatch.setattr(qat, "attach", spy)
    start = copy.deepcopy(tiny_model)
    cfg = trainer.TrainConfig(epochs=1, imgsz=64, batch=8, qat="asymmetric", warmup_epochs=0.0, close_mosaic=1)
    tuned = trainer.train(copy.deepcopy(tiny_model), load_dataset(tiny_data), cfg, tmp_path / "qat")
    assert live and qat.fake_quant_calls(live[0]) > 0, "the training forward went through fake INT8"
    changed = [not torch.equal(a, b) for a, b in zip(start.state_dict().values(), tuned.state_dict().values())]
    assert any(changed)
    assert not any(hasattr(m, qat.ATTR) for m in tuned.modules())
    best = tmp_path / "qat" / "ultralytics" / "weights" / "best.pt"
    code = ("import json, sys; from ultralytics import YOLO; m = YOLO(sys.argv[1]).model; "
            "print(json.dumps(sorted({type(x).__module__.split('.')[0] for x in m.modules()})))")
    out = subprocess.run([sys.executable, "-c", code, str(best)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-1500:]
    assert set(json.loads(out.stdout.strip().splitlines()[-1])) <= {"ultralytics", "torch"}, "no edgeprune classes"


def test_qat_retry_keeps_the_better_artefact(tmp_path, monkeypatch):
    """The retry replaces the PTQ files only when the QAT artefact measures better."""
    from edgeprune import stages
    from edgeprune.targets import load_target

    class Exporter:
        class caps:
            guard_levels = ("none",)

        def export(self, model, out, imgsz, precision, calibration, **_):
            out.write_text(f"qat-{model}")
            return out

    monkeypatch.setattr(stages, "train", lambda model, dataset, cfg, work_dir, **_: f"{model}+{cfg.qat}")
    target = load_target("rpi")
    for qat_map, winner in ((0.50, "qat-tuned+asymmetric"), (0.30, "ptq")):
        folder = tmp_path / f"case{qat_map}"
        folder.mkdir()
        artefact = folder / "model_int8.tflite"
        artefact.write_text("ptq")
        ptq = {"map50_95": 0.40, "accuracy_guard": {"within_budget": False}}
        out = stages.quantization_aware_retry(Exporter(), "tuned", artefact, 64, np.zeros((1, 3, 64, 64)), 0.45,
                                              target, None, folder / "qat", lambda path: {"map50_95": qat_map}, ptq)
        assert artefact.read_text() == winner
        assert out["accuracy_guard"]["qat"]["kept"] is (winner != "ptq")
        assert not [p for p in folder.iterdir() if p.name.startswith(".")], "no leftovers"


@pytest.mark.slow
def test_ddp_worker_state_trains_the_pruned_module_with_qat(tiny_model, tiny_data, tmp_path):
    """With several GPUs Ultralytics pickles trainer.model and the callbacks into a worker script
    (generate_ddp_file); run that script here (one CPU worker) and check it trained the pruned module."""
    from ultralytics.utils.dist import generate_ddp_file

    from edgeprune.data.dataset import load_dataset
    from edgeprune.training.trainer import TrainConfig, make_trainer
    from edgeprune.models.checkpoint import load_model, param_count
    from edgeprune.pruning.structured import PruneConfig, prune_at_ratio

    pruned, _ = prune_at_ratio(tiny_model, 0.5, PruneConfig(imgsz=64))
    cfg = TrainConfig(epochs=1, imgsz=64, batch=8, qat="symmetric", warmup_epochs=0.0, close_mosaic=1)
    dataset = load_dataset(tiny_data)
    overrides = cfg.overrides(dataset.ultralytics_yaml(tmp_path / "data.yaml"), tmp_path / "ultralytics")
    script = Path(generate_ddp_file(make_trainer(pruned.train(), overrides, cfg)))
    try:
        run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    finally:
        script.unlink(missing_ok=True)
        script.with_suffix(".pt").unlink(missing_ok=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "QAT: " in run.stdout + run.stderr, "the worker attached fake INT8 from the pickled callback"
    trained = load_model(tmp_path / "ultralytics" / "weights" / "last.pt")
    assert param_count(trained) == param_count(pruned) < param_count(tiny_model), "the pruned module, not the yaml"
