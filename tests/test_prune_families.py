"""Every detection family Ultralytics' yamls build survives prune -> save -> plain YOLO reload -> val -> ONNX."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from edgeprune.models.checkpoint import save_model
from edgeprune.pruning.structured import PruneConfig, prune_at_ratio

FAMILIES = ["yolov3u.yaml", "yolov5nu.yaml", "yolov6n.yaml", "yolov8n.yaml", "yolov9t.yaml", "yolov10n.yaml",
            "yolo11n.yaml", "yolo12n.yaml", "yolo26n.yaml"]
IMGSZ = 64

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("cfg", FAMILIES)
def test_family_prunes_and_round_trips(cfg, tiny_data, tmp_path):
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel(cfg, nc=6, verbose=False).eval()
    pruned, result = prune_at_ratio(model, 0.3, PruneConfig(imgsz=IMGSZ))
    assert result.params_after < result.params_before and result.macs_after < result.macs_before
    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    ref, out = model(x), pruned(x)
    ref, out = (ref[0] if isinstance(ref, (list, tuple)) else ref), (out[0] if isinstance(out, (list, tuple)) else out)
    assert out.shape == ref.shape
    path = save_model(pruned, tmp_path / "pruned.pt")
    data_yaml = tmp_path / "data.yaml"
    from edgeprune.data.dataset import load_dataset

    load_dataset(tiny_data).ultralytics_yaml(data_yaml)
    script = textwrap.dedent(f"""
        import json, sys
        from ultralytics import YOLO
        model = YOLO({str(path)!r})
        metrics = model.val(data={str(data_yaml)!r}, imgsz={IMGSZ}, batch=4, device="cpu", plots=False, verbose=False)
        onnx = model.export(format="onnx", imgsz={IMGSZ}, device="cpu")
        print(json.dumps({{"edgeprune_imported": "edgeprune" in sys.modules, "map": float(metrics.box.map),
                          "onnx": str(onnx), "params": sum(p.numel() for p in model.model.parameters())}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not report["edgeprune_imported"], "a pruned model must load without edgeprune"
    assert report["params"] == sum(p.numel() for p in pruned.parameters()), "the saved file is the pruned model"
    assert report["onnx"].endswith(".onnx")
