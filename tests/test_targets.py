import pytest

from edgeprune.errors import EdgepruneError
from edgeprune.targets import available_targets, load_target

DEVICE = "description: x\ndevice: {runtime: tflite, format: tflite}\n"


def test_rpi_profile_loads_into_validated_dataclass():
    t = load_target("rpi")
    assert t.device.runtime == "tflite" and t.recipe.precision == "int8" and t.recipe.imgsz % 32 == 0
    assert t.device.hardware.cores == 4 and t.budget.latency_ms > 0
    assert load_target("rpi", imgsz=64).recipe.imgsz == 64


def test_unknown_target_lists_available():
    with pytest.raises(EdgepruneError) as error:
        load_target("toaster")
    assert "unknown target 'toaster'" in str(error.value)
    for name in available_targets():
        assert name in str(error.value)


def test_unknown_and_invalid_keys_are_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEVICE + "budget: {latency_ms: 10, latency_budgt_ms: 5}\nrecipe: {precision: int8, imgsz: 256}\n")
    with pytest.raises(EdgepruneError, match="unknown key.*latency_budgt_ms"):
        load_target(str(bad))
    bad.write_text("description: x\ndevice: {runtime: tflite, format: tflite, hardware: {cores: 4, tops: 3}}\n"
                   "budget: {latency_ms: 10}\nrecipe: {precision: int4, imgsz: 250}\n")
    with pytest.raises(EdgepruneError, match="hardware.*tops"):
        load_target(str(bad))
    bad.write_text(DEVICE + "budget: {latency_ms: 10}\nrecipe: {precision: int4, imgsz: 250}\n")
    with pytest.raises(EdgepruneError, match="precision 'int4'.*imgsz 250"):
        load_target(str(bad))


def test_pruning_and_distillation_keys_are_validated(tmp_path):
    base = DEVICE + "budget: {latency_ms: 10}\nrecipe:\n  precision: int8\n  imgsz: 256\n"
    good = tmp_path / "good.yaml"
    good.write_text(base + "  prune: {criterion: taylor, global_ranking: true}\n  finetune: {distill_weight: 0.5}\n")
    t = load_target(str(good))
    assert (t.recipe.prune.criterion, t.recipe.prune.global_ranking) == ("taylor", True)
    assert (t.recipe.finetune.distill_weight, t.recipe.finetune.distill_temperature) == (0.5, 2.0)
    bad = tmp_path / "bad.yaml"
    bad.write_text(base + "  prune: {criterion: l3}\n  finetune: {distill_weight: -1, distill_features: -6}\n")
    with pytest.raises(EdgepruneError, match="criterion 'l3'.*distill_features -6.*distill_weight -1"):
        load_target(str(bad))
    assert load_target("rpi").recipe.finetune.distill_weight == 0.0, "distillation stays off by default"
    assert load_target("rpi").recipe.prune.allocation == "knapsack"
    bad.write_text(base + "  prune: {allocation: greedy}\n")
    with pytest.raises(EdgepruneError, match="allocation 'greedy'"):
        load_target(str(bad))


def test_profile_layers_are_separate_and_overrides_reach_them():
    t = load_target("rpi", imgsz=64, finetune_epochs=2, calibration_images=4, flops_reduction=0.3)
    assert (t.recipe.imgsz, t.recipe.finetune.epochs, t.recipe.quantize.calibration_images) == (64, 2, 4)
    assert t.recipe.prune.flops_reduction == 0.3 and t.device.format == "tflite" and t.budget.percentile == 90
    again = load_target(t, **{"recipe.quantize.max_map_drop": 0.02})
    assert again.recipe.quantize.max_map_drop == 0.02 and again.recipe.imgsz == 64
    with pytest.raises(EdgepruneError, match="unknown key.*imgsize"):
        load_target("rpi", **{"recipe.imgsize": 64})


def test_a_flat_profile_from_before_the_layers_names_where_each_key_went(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("description: x\nruntime: tflite\nartefact: tflite\nprecision: int8\nimgsz: 256\n"
                   "latency_budget_ms: 10\nfinetune_epochs: 3\n")
    with pytest.raises(EdgepruneError, match="artefact -> device.format.*finetune_epochs -> recipe.finetune.epochs"):
        load_target(str(old))
