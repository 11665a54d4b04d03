"""The deploy pipeline's prune and fine-tune stages with taylor, global ranking and distillation switched on."""

import json

import pytest
import torch

from edgeprune.paths import PROJECT_ROOT
from edgeprune.models.checkpoint import load_model
from edgeprune.pipeline import DeployRequest, deploy
from edgeprune.pruning.replay import replay

pytestmark = pytest.mark.slow


def _deploy_until_export(target, tiny_data, tmp_path, monkeypatch, **options):
    """Run baseline, prune and fine-tune of a tiny deploy with this profile; stop before the export."""
    import edgeprune.stages as stages

    def stop(*args, **kwargs):
        raise KeyboardInterrupt  # the export stage is not what these tests are about

    monkeypatch.setattr(stages, "export_with_guard", stop)
    request = DeployRequest(target=str(target), model="yolo11n.yaml", data=str(tiny_data), out=tmp_path / "dist",
                            run_dir=tmp_path / "run", epochs=1, imgsz=64, calibration_images=4, baseline_epochs=1,
                            eval_limit=4, **options)
    with pytest.raises(KeyboardInterrupt):
        deploy(request)
    return tmp_path / "run"


def test_taylor_global_distill_stages(tiny_data, tmp_path, monkeypatch):
    profile = (PROJECT_ROOT / "targets" / "rpi.yaml").read_text()
    for key, value in (("criterion", "taylor"), ("global_ranking", "true"), ("attention_heads", "true"),
                       ("distill_weight", "1.0")):
        assert f"\n    {key}:" in profile
        profile = "\n".join(f"    {key}: {value}" if line.startswith(f"    {key}:") else line
                            for line in profile.splitlines())
    target = tmp_path / "rpi-options.yaml"
    target.write_text(profile)

    run = _deploy_until_export(target, tiny_data, tmp_path, monkeypatch, latency_budget_ms=0.6)  # the budget goal
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert stages["prune"]["config"]["criterion"] == "taylor" and stages["prune"]["config"]["global_ranking"]
    assert stages["plan"]["config"]["attention_heads"] and stages["prune"]["config"]["attention_heads"]
    assert "data" in stages["prune"]["inputs"], "taylor's scores depend on the data"
    assert "teacher" in stages["finetune"]["inputs"] and stages["finetune"]["config"]["distill_weight"] == 1.0
    record = json.loads((run / "prune" / "record.json").read_text())
    assert record["kept_channels"]["heads"] == {"model.10.m.0.attn": {"heads": 2, "keep": "0"}} or \
        record["kept_channels"]["heads"] == {"model.10.m.0.attn": {"heads": 2, "keep": "1"}}, "the budget took a head"
    rebuilt = replay(load_model(run / "baseline" / "model.pt"), record["kept_channels"])
    pruned = load_model(run / "prune" / "model.pt")
    assert all(torch.equal(a, b) for a, b in zip(rebuilt.state_dict().values(), pruned.state_dict().values()))
    tuned = load_model(run / "finetune" / "model.pt")
    assert type(tuned.get_submodule("model.10.m.0.attn")).__name__ == "HeadPrunedAttention", "fine-tuning kept it"
    header = (run / "finetune" / "ultralytics" / "results.csv").read_text().splitlines()[0]
    assert "train/kd_loss" in header.replace(" ", "")


def test_iterative_prune_stage_fine_tunes_between_cuts(tiny_data, tmp_path, monkeypatch):
    profile = (PROJECT_ROOT / "targets" / "rpi.yaml").read_text()
    assert "\n    steps: 1" in profile
    target = tmp_path / "rpi-steps.yaml"
    target.write_text(profile.replace("\n    steps: 1", "\n    steps: 2").replace("goal: budget", "goal: flops"))

    run = _deploy_until_export(target, tiny_data, tmp_path, monkeypatch)  # steps cut to a FLOPs goal
    stage = json.loads((run / "manifest.json").read_text())["stages"]["prune"]
    assert stage["config"]["steps"] == 2 and "data" in stage["inputs"]
    steps = stage["metrics"]["pruning"]["steps"]
    assert [s["step"] for s in steps] == [1, 2] and steps[0]["flops_reduction"] < steps[1]["flops_reduction"]
    assert (run / "prune" / "step1" / "ultralytics" / "weights" / "last.pt").exists(), "fine-tuned between cuts"
    record = json.loads((run / "prune" / "record.json").read_text())
    rebuilt = replay(load_model(run / "baseline" / "model.pt"), record["kept_channels"])
    pruned = load_model(run / "prune" / "model.pt")
    assert [v.shape for v in rebuilt.state_dict().values()] == [v.shape for v in pruned.state_dict().values()]
