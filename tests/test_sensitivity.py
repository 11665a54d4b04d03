"""The INT8 guard's sensitivity search: units cover the graph, ranking reads detections, the search
floats exactly the units it reports, and stops at the first candidate within budget."""

from pathlib import Path

import numpy as np
import pytest
import torch

from edgeprune import formats
from edgeprune.quantize import sensitivity
from edgeprune.formats.base import Unit

IMGSZ = 64


@pytest.fixture(scope="module")
def model():
    from ultralytics.nn.tasks import DetectionModel

    from test_device_scripts import _informative  # scores and boxes that differ per anchor

    torch.manual_seed(0)
    return _informative(DetectionModel("yolo11n.yaml", nc=6, verbose=False).eval())


def test_units_are_blocks_with_convolutions_and_head_scales(model):
    names = [u.name for u in sensitivity.float_units(model)]
    assert names[:3] == ["model.0", "model.1", "model.2"]
    assert "model.11" not in names and "model.12" not in names  # Upsample, Concat: nothing to quantize
    assert names[-3:] == ["model.23.scale0", "model.23.scale1", "model.23.scale2"]


def test_onnx_units_cover_every_convolution_once(model, tmp_path):
    """Every Conv of the graph belongs to exactly one unit (the DFL integral is a MatMul, never quantized)."""
    import re

    import onnx

    from edgeprune.formats.onnx.export import export_fp32

    nodes = [n.name for n in onnx.load(str(export_fp32(model, IMGSZ, tmp_path / "m.onnx"))).graph.node
             if n.op_type == "Conv"]
    patterns = [formats.get("onnx").unit_pattern(u) for u in sensitivity.float_units(model)]
    owners = {name: sum(bool(re.search(p, name)) for p in patterns) for name in nodes}
    assert nodes and all(k == 1 for k in owners.values()), {n: k for n, k in owners.items() if k != 1}


def _det(*rows):
    return np.array(rows, dtype=np.float32).reshape(-1, 6)


def _raw(dets: np.ndarray, k: int = 10) -> np.ndarray:
    """End-to-end layout (1, k, 6) holding these detections, zero-padded."""
    out = np.zeros((1, k, 6), np.float32)
    out[0, : len(dets)] = dets
    return out


def test_detection_error_is_zero_for_equal_outputs_and_one_when_all_are_lost():
    ref = _raw(_det([10, 10, 30, 30, 0.9, 1], [40, 40, 60, 60, 0.5, 2]))
    assert sensitivity.detection_error(ref, ref) == 0
    assert sensitivity.detection_error(ref, _raw(_det())) == 1
    shifted = _raw(_det([12, 10, 32, 30, 0.9, 1], [40, 40, 60, 60, 0.5, 2]))
    wrong_class = _raw(_det([10, 10, 30, 30, 0.9, 3], [40, 40, 60, 60, 0.5, 2]))
    assert 0 < sensitivity.detection_error(ref, shifted) < sensitivity.detection_error(ref, wrong_class) < 1
    extra = _raw(_det([10, 10, 30, 30, 0.9, 1], [40, 40, 60, 60, 0.5, 2], [0, 0, 5, 5, 0.8, 4]))
    assert sensitivity.detection_error(ref, extra) > 0  # spurious detections count too


def test_greedy_keeps_units_that_help_until_the_budget_holds(tmp_path):
    units = [Unit(4), Unit(9), Unit(2), Unit(7)]
    built = []

    def build(chosen, name):
        built.append(tuple(u.name for u in chosen))
        return tmp_path / name

    gain = {"model.4": 0.02, "model.9": -0.01, "model.2": 0.005, "model.7": 0.001}
    measure = lambda path: {"map50_95": 0.40 + sum(gain[n] for n in built[-1])}  # noqa: E731
    tried = sensitivity.greedy(units, 4, build, measure, fits=lambda m: 0.43 - m <= 0.005, baseline_map=0.40)
    # model.9 made it worse: dropped; 0.425 fits (0.43 - 0.425 <= 0.005): stop before model.7
    assert built == [("model.4",), ("model.4", "model.9"), ("model.4", "model.2")]
    assert [u.name for u in tried[-1][0].units] == ["model.4", "model.2"]
    built.clear()
    sensitivity.greedy(units, 1, build, measure, fits=lambda m: False, baseline_map=0.40)
    assert built == [("model.4",)]  # max_units kept
    built.clear()
    sensitivity.greedy(units, 1, build, measure, fits=lambda m: False, baseline_map=0.99)
    assert built == [("model.4",), ("model.9",)]  # nothing helps: at most 2 x max_units candidates


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_guard_search_floats_the_units_it_reports(model, fmt, tmp_path):
    """A budget no level meets forces the search; the kept file has its chosen units in float, others INT8."""
    from edgeprune import formats
    from edgeprune.quantize.guard import export_with_guard

    exporter = formats.get(fmt)
    calib = np.random.default_rng(0).random((8, 3, IMGSZ, IMGSZ), dtype=np.float32)
    measured = []

    def measure(path: Path) -> dict:
        measured.append(path)
        return {"map50_95": 0.1 * len(measured) / 100}  # rises a little with each candidate, never fits

    out = tmp_path / f"model_int8{exporter.caps.suffix}"
    metrics = export_with_guard(exporter, model, out, IMGSZ, "int8", calib, reference_map=1.0, max_drop=0.01,
                                measure=measure, search_units=2)
    guard = metrics["accuracy_guard"]
    assert not guard["within_budget"] and out.exists()
    ranking = guard["sensitivity"]["ranking"]
    assert ranking and all(r["raw_error"] >= 0 for r in ranking)
    assert guard["float_units"] == [r["unit"] for r in ranking[:2]]  # each candidate better: both kept
    assert guard["chosen"] == "+".join([guard["sensitivity"]["base"], *guard["float_units"]])
    assert [t.get("float_units") for t in guard["tried"][-2:]] == [guard["float_units"][:1], guard["float_units"]]
    floated = [u for u in sensitivity.float_units(model) if u.name in guard["float_units"]]
    other = next(u for u in sensitivity.float_units(model) if u.name not in guard["float_units"])
    dtype = _onnx_conv_weight_is_quantized if fmt == "onnx" else _tflite_unit_is_int8
    assert not any(dtype(out, u) for u in floated) and dtype(out, other)
    assert not list(tmp_path.glob(".guard-*")), "staging folders are removed"


def _onnx_conv_weight_is_quantized(path: Path, unit: Unit) -> bool:
    import re

    import onnx

    graph = onnx.load(str(path)).graph
    producers = {o: n.op_type for n in graph.node for o in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv" and re.search(formats.get("onnx").unit_pattern(unit), n.name)]
    assert convs, unit.name
    return any(producers.get(c.input[1]) == "DequantizeLinear" for c in convs)


def _tflite_unit_is_int8(path: Path, unit: Unit) -> bool:
    import re

    from ai_edge_litert.interpreter import Interpreter

    tensors = [t for t in Interpreter(model_path=str(path)).get_tensor_details()  # not the QUANTIZE ops' outputs
               if re.search(formats.get("tflite").unit_pattern(unit), t["name"] + ";") and not t["name"].endswith("_quantized")]
    assert tensors, unit.name
    return any(np.dtype(t["dtype"]) == np.int8 for t in tensors)
