"""An end-to-end head's loss gains held for a whole fine-tuning run instead of Ultralytics' decay."""

import pytest
from ultralytics.nn.tasks import DetectionModel

from edgeprune.data.dataset import load_dataset
from edgeprune.errors import EdgepruneError
from edgeprune.training import end2end
from edgeprune.training.trainer import TrainConfig, train


def _model(yaml: str) -> DetectionModel:
    model = DetectionModel(yaml, nc=6, verbose=False)
    from edgeprune.pruning.taylor import _hyperparameters

    model.args = _hyperparameters(model)
    return model


def test_held_gains_outlast_the_decay_schedule():
    criterion = end2end.hold_gains(_model("yolo26n.yaml"), 1.0, 1.0)
    for _ in range(5):  # what the trainer calls after every epoch
        criterion.update()
    assert (criterion.o2m, criterion.o2o) == (1.0, 1.0)


def test_a_one_head_model_is_left_alone_and_bad_gains_are_refused():
    model = _model("yolo11n.yaml")
    assert end2end.hold_gains(model, 1.0, 1.0) is None
    with pytest.raises(EdgepruneError, match="one-to-one > 0"):
        end2end.hold_gains(_model("yolo26n.yaml"), 1.0, 0.0)
    with pytest.raises(EdgepruneError, match="two numbers"):  # refused before any training starts
        train(_model("yolo26n.yaml"), None, TrainConfig(end2end_gains=(1.0,)), None)


@pytest.mark.slow
def test_training_holds_the_gains_through_every_epoch(tiny_data, tmp_path, monkeypatch):
    """The trainer rebuilds nothing behind the held loss: after two epochs' updates it still has the held gains,
    where Ultralytics' own schedule would have moved the one-to-many gain from 0.8 to its final 0.1."""
    held = []
    hold = end2end.hold_gains
    monkeypatch.setattr(end2end, "hold_gains", lambda model, *gains: held.append(hold(model, *gains)) or held[-1])
    model = DetectionModel("yolo26n.yaml", nc=6, verbose=False)
    cfg = TrainConfig(epochs=2, imgsz=64, batch=8, warmup_epochs=0.0, close_mosaic=0, end2end_gains=(1.0, 0.5))
    train(model, load_dataset(tiny_data), cfg, tmp_path / "run")
    assert len(held) == 1 and held[0].updates == 2, "held once, then updated after each of the two epochs"
    assert (held[0].o2m, held[0].o2o) == (1.0, 0.5)
