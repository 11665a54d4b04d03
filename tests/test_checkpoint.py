import pytest
import torch

from edgeprune.errors import EdgepruneError
from edgeprune.models.checkpoint import check_classes, load_model, model_nc, save_model


def test_roundtrip_is_plain_ultralytics(tiny_model, tmp_path):
    path = save_model(tiny_model, tmp_path / "m.pt")
    from ultralytics import YOLO

    assert YOLO(str(path)).model.model[-1].nc == 6
    assert model_nc(load_model(path)) == 6
    assert not list(tmp_path.glob("*.partial")), "atomic write leaves no temp files"


def test_missing_corrupt_and_foreign_checkpoints(tmp_path):
    with pytest.raises(EdgepruneError, match="does not exist"):
        load_model(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    with pytest.raises(EdgepruneError, match="corrupt"):
        load_model(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, foreign)
    with pytest.raises(EdgepruneError, match="not a YOLO detection model"):
        load_model(foreign)
    from ultralytics.nn.tasks import ClassificationModel

    cls = tmp_path / "cls.pt"
    torch.save({"model": ClassificationModel("yolo11n-cls.yaml", nc=3, verbose=False)}, cls)
    with pytest.raises(EdgepruneError, match="ClassificationModel"):
        load_model(cls)


def test_truncated_checkpoint(tiny_model, tmp_path):
    path = save_model(tiny_model, tmp_path / "m.pt")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(EdgepruneError, match="corrupt"):
        load_model(path)


def test_class_mismatch(tiny_model):
    with pytest.raises(EdgepruneError, match="class count mismatch: model m.pt predicts 6 classes, dataset d.yaml has 80"):
        check_classes(tiny_model, tuple(str(i) for i in range(80)), "m.pt", "d.yaml")
