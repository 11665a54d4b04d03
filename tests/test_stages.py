"""Deploy's stages are units: each can be built and run alone from a Run whose earlier outputs exist."""

from __future__ import annotations

from edgeprune import stages
from edgeprune.data.dataset import load_dataset
from edgeprune.manifest import sha256_file
from edgeprune.models.checkpoint import save_model
from edgeprune.pipeline import DeployRequest, StageRunner
from edgeprune.targets import load_target


def _run(tiny_data, tiny_model, tmp_path) -> stages.Run:
    model = save_model(tiny_model, tmp_path / "input.pt")
    request = DeployRequest(target="rpi", model=str(model), data=str(tiny_data), run_dir=tmp_path / "run")
    target = load_target("rpi", imgsz=64, finetune_epochs=0, calibration_images=4, flops_reduction=0.5)
    return stages.Run(request, target, load_dataset(tiny_data), str(model), tmp_path / "run")


def test_the_stage_list_is_the_pipeline():
    assert [s.__name__ for s in stages.STAGES] == ["baseline_stage", "plan_stage", "prune_stage", "finetune_stage",
                                                    "export_stage", "reference_stage"]


def test_baseline_then_prune_run_alone(tiny_data, tiny_model, tmp_path):
    run = _run(tiny_data, tiny_model, tmp_path)
    baseline = stages.baseline_stage(run)
    assert (baseline.name, baseline.inputs["model"]) == ("baseline", sha256_file(tmp_path / "input.pt"))
    run.metrics["baseline"] = baseline.run()
    assert baseline.outputs() == [run.base_pt] and run.base_pt.is_file() and "map50_95" in run.metrics["baseline"]

    prune = stages.prune_stage(run)  # built only now: its input is the baseline's finished file
    assert prune.inputs == {"model": sha256_file(run.base_pt), "data": run.data_sha}
    assert prune.config["flops_reduction"] == 0.5
    metrics = prune.run()
    assert run.pruned_pt.is_file() and run.record.is_file() and metrics["params"] < run.metrics["baseline"]["params"]
    assert stages.finetune_stage(run) is None, "0 fine-tuning epochs: no stage, the export starts from the cut"
    assert run.tuned_pt == run.pruned_pt


def test_runner_skips_a_stage_whose_inputs_did_not_change(tiny_data, tiny_model, tmp_path, capsys):
    run = _run(tiny_data, tiny_model, tmp_path)
    runner = StageRunner(run.run_dir)
    first = runner.run(stages.baseline_stage(run))
    assert runner.run(stages.baseline_stage(run)) == first
    assert "[baseline] up to date, skipped" in capsys.readouterr().out
