import pytest

from edgeprune.errors import EdgepruneError
from edgeprune.targets import available_targets, load_target


def test_rpi_profile_loads_into_validated_dataclass():
    t = load_target("rpi")
    assert t.runtime == "tflite" and t.precision == "int8" and t.imgsz % 32 == 0
    assert t.hardware.cores == 4 and t.latency_budget_ms > 0
    assert load_target("rpi", imgsz=64).imgsz == 64


def test_unknown_target_lists_available():
    with pytest.raises(EdgepruneError) as error:
        load_target("toaster")
    assert "unknown target 'toaster'" in str(error.value)
    for name in available_targets():
        assert name in str(error.value)


def test_unknown_and_invalid_keys_are_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("description: x\nruntime: tflite\nartefact: tflite\nprecision: int8\nimgsz: 256\n"
                   "latency_budget_ms: 10\nlatency_budgt_ms: 5\n")
    with pytest.raises(EdgepruneError, match="unknown key.*latency_budgt_ms"):
        load_target(str(bad))
    bad.write_text("description: x\nruntime: tflite\nartefact: tflite\nprecision: int4\nimgsz: 250\n"
                   "latency_budget_ms: 10\nhardware: {cores: 4, tops: 3}\n")
    with pytest.raises(EdgepruneError, match="hardware.*tops"):
        load_target(str(bad))
    bad.write_text("description: x\nruntime: tflite\nartefact: tflite\nprecision: int4\nimgsz: 250\n"
                   "latency_budget_ms: 10\n")
    with pytest.raises(EdgepruneError, match="precision 'int4'.*imgsz 250"):
        load_target(str(bad))


def test_pruning_and_distillation_keys_are_validated(tmp_path):
    base = "description: x\nruntime: tflite\nartefact: tflite\nprecision: int8\nimgsz: 256\nlatency_budget_ms: 10\n"
    good = tmp_path / "good.yaml"
    good.write_text(base + "prune_criterion: taylor\nprune_global_ranking: true\ndistill_weight: 0.5\n")
    t = load_target(str(good))
    assert (t.prune_criterion, t.prune_global_ranking) == ("taylor", True)
    assert (t.distill_weight, t.distill_temperature) == (0.5, 2.0)
    bad = tmp_path / "bad.yaml"
    bad.write_text(base + "prune_criterion: l3\ndistill_weight: -1\n")
    with pytest.raises(EdgepruneError, match="prune_criterion 'l3'.*distill_weight -1"):
        load_target(str(bad))
    assert load_target("rpi").distill_weight == 0.0, "distillation stays off by default"
