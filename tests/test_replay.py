"""Kept-channel records: the pruned model can be rebuilt from the original weights and the record alone."""

import json

import pytest
import torch

from edgeprune import cli
from edgeprune.errors import EdgepruneError
from edgeprune.models.checkpoint import load_model, save_model
from edgeprune.pruning.replay import decode_runs, encode_runs, replay
from edgeprune.pruning.structured import ALLOCATIONS, CRITERIA, PruneConfig, prune_at_ratio

IMGSZ = 64


def _model(cfg: str):
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    return DetectionModel(cfg, nc=6, verbose=False).eval()


def _assert_identical(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert [k for k in sa if not torch.equal(sa[k], sb[k])] == []
    x = torch.rand(2, 3, IMGSZ, IMGSZ)
    assert torch.equal(a.eval()(x)[0], b.eval()(x)[0])


def test_runs_encoding_roundtrips():
    for idxs in ([], [3], [0, 1, 2, 5, 7, 8, 9, 15], list(range(64))):
        assert decode_runs(encode_runs(idxs)) == idxs
    assert encode_runs([0, 1, 2, 5, 7, 8, 9]) == "0-2,5,7-9"


@pytest.mark.parametrize("cfg", ["yolo11n.yaml", "yolov8n.yaml"])
def test_replay_rebuilds_the_pruned_model_exactly(cfg):
    """Random scores and global ranking scatter the kept indices: the hardest case for an index record."""
    model = _model(cfg)
    pruned, result = prune_at_ratio(model, 0.4, PruneConfig(imgsz=IMGSZ, criterion="random", global_ranking=True))
    record = json.loads(json.dumps(result.replay_record()))  # only what survives a JSON file
    assert set(record["convs"]) == set(result.layers)
    split_cv1 = [n for n in record["convs"] if n.endswith(".cv1.conv") and hasattr(model.get_submodule(n[:-9]), "c")]
    assert split_cv1, "split blocks' cv1 recorded as one conv (indices into the concatenated output)"
    _assert_identical(replay(model, record), pruned)
    assert len(json.dumps(record)) < 40_000, "record.json stays small"


def test_replay_refuses_another_architecture():
    _, result = prune_at_ratio(_model("yolov8n.yaml"), 0.4, PruneConfig(imgsz=IMGSZ))
    with pytest.raises(EdgepruneError):
        replay(_model("yolo11n.yaml"), result.replay_record())
    with pytest.raises(EdgepruneError, match="not an edgeprune kept-channel record"):
        replay(_model("yolov8n.yaml"), {"convs": {}})


def test_cli_prune_taylor_global_writes_a_replayable_record(tiny_data, tmp_path, capsys):
    assert cli.PRUNE_CRITERIA == CRITERIA and cli.PRUNE_ALLOCATIONS == ALLOCATIONS
    original = save_model(_model("yolo11n.yaml"), tmp_path / "base.pt")
    out = tmp_path / "pruned.pt"
    args = ["prune", "--model", str(original), "--flops", "0.5", "--criterion", "taylor", "--imgsz", str(IMGSZ),
            "--out", str(out)]
    assert cli.main(args) == 2
    assert "taylor needs data: pass --data" in capsys.readouterr().err
    assert cli.main(args + ["--global", "--data", str(tiny_data), "--loss-images", "8"]) == 0
    written = json.loads(out.with_suffix(".prune.json").read_text())
    assert abs(written["summary"]["flops_reduction"] - 0.5) <= 0.02
    _assert_identical(replay(load_model(original), written["kept_channels"]), load_model(out))
