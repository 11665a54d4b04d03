"""Budget-driven compression: the knapsack's widths, the candidate sizes, the clear error and a timed check."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.budget.costs import conv_census, predictor_for
from edgeprune.budget.knapsack import allocate, ladder
from edgeprune.budget.plan import check_reachable, fit_size, plan_budget, predict_module
from edgeprune.budget.sizes import Sizes, candidate_sizes
from edgeprune.data.dataset import load_dataset
from edgeprune.errors import EdgepruneError
from edgeprune.latency.features import latency_features
from edgeprune.models.checkpoint import build_from_yaml
from edgeprune.pruning.structured import PruneConfig, prune_to_widths, split_block_copy, survey
from edgeprune.targets import load_target

IMGSZ = 96
FAMILIES = ("yolo11n.yaml", "yolov8n.yaml", "yolo26n.yaml")


def _random_keep(found, rng, round_to=8):
    keep = {n: max(8, int(c * rng.uniform(0.3, 1)) // round_to * round_to) for n, c in found.channels.items()}
    for a, b in found.pairs:
        if a and b:
            keep[a] = keep[b] = max(keep[a], keep[b])
        for r in (a, b):
            if r and not (a and b):
                keep[r] = found.channels[r]
    return keep


@pytest.mark.parametrize("family", FAMILIES)
def test_counted_features_equal_the_pruned_models(family):
    """The knapsack prices widths without building them: its counts must be those of the real pruned network."""
    model = build_from_yaml(family, 6)
    cfg = PruneConfig(imgsz=IMGSZ)
    found = survey(model, cfg)
    census = conv_census(split_block_copy(model), IMGSZ)
    keep = _random_keep(found, np.random.default_rng(1))
    pruned, _ = prune_to_widths(model, keep, cfg)
    counted = census.features(*census.widths(found.channels, keep, found.effects))
    real = latency_features(pruned, IMGSZ)
    assert {k: round(counted[k], 6) for k in real} == pytest.approx(real, abs=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_knapsack_respects_every_constraint(family):
    model = build_from_yaml(family, 6)
    target = load_target("rpi")
    cfg = PruneConfig(imgsz=IMGSZ, round_to=8)
    found = survey(model, cfg)
    census = conv_census(split_block_copy(model), IMGSZ)
    predict = predictor_for(target, None)
    full = predict(census.features(*census.widths(found.channels, found.channels, found.effects)))
    budget = 0.6 * full
    allocation = allocate(found, census, predict, budget, cfg.round_to)
    assert allocation.fits and allocation.predicted_ms <= budget and allocation.keep != found.channels
    for name, kept in allocation.keep.items():
        channels = found.channels[name]
        assert kept == channels or (kept % 8 == 0 and kept >= 8), f"{name}: {kept} is off the round_to grid"
        assert kept >= min(ladder(channels, 8, 8, 0.75)), f"{name} below its floor"
    for a, b in found.pairs:  # split halves stay equally wide; a half beside a locked one stays whole
        if a and b:
            assert allocation.keep[a] == allocation.keep[b]
        for r in (a, b):
            if r and not (a and b):
                assert allocation.keep[r] == found.channels[r]
    before = {n: m.out_channels for n, m in split_block_copy(model).named_modules() if isinstance(m, nn.Conv2d)}
    pruned = split_block_copy(prune_to_widths(model, allocation.keep, cfg)[0])
    after = {n: m.out_channels for n, m in pruned.named_modules() if isinstance(m, nn.Conv2d)}
    for name in found.locked:
        if name in before:
            assert after[name] == before[name], f"locked {name} changed"
    candidate = fit_size(model, IMGSZ, budget, predict, cfg)  # the real pruned model, corrected until it fits
    assert candidate is not None and candidate.pruned and candidate.predicted_ms <= budget
    assert candidate.predicted_ms >= 0.85 * budget, "a plan that wastes the budget is not the most accurate one"


def test_a_budget_below_the_fastest_candidate_is_one_clear_error(tiny_model):
    target = dataclasses.replace(load_target("rpi"), budget=dataclasses.replace(load_target("rpi").budget,
                                                                                  latency_ms=0.01))
    with pytest.raises(EdgepruneError) as error:
        check_reachable(tiny_model, target, Sizes((64,), "test"), predictor_for(target, None), PruneConfig(imgsz=64))
    assert "cannot be met" in error.value.problem and "fastest candidate" in error.value.problem
    assert " ms" in error.value.problem and "--budget" in error.value.fix


def test_candidate_sizes_come_from_the_model_not_the_profile(tiny_data, tiny_model):
    target = load_target("rpi")
    assert target.recipe.imgsz == 0 and 640 in target.recipe.imgsz_candidates, "profiles list sizes, fix none"
    dataset = load_dataset(tiny_data)
    model = build_from_yaml("yolo11n.yaml", 6)
    model.args = {"imgsz": 640}  # a user's 640-px checkpoint
    sizes = candidate_sizes(target, dataset, model)
    assert sizes.largest == 640 and all(s <= 640 for s in sizes.candidates) and "trained at 640" in sizes.why
    model.args = {"imgsz": 320}
    assert candidate_sizes(target, dataset, model).largest == 320
    assert candidate_sizes(load_target("rpi", imgsz=128), dataset, model).candidates == (128,)
    from edgeprune.budget.sizes import data_size

    assert candidate_sizes(target, dataset, None).largest == data_size(dataset), "a yaml model: the data's size"


def test_every_candidate_is_exported_and_timed_and_the_chosen_widths_rebuild_the_timed_model(tiny_data, tmp_path):
    """host profile (device.measure_here): each candidate is exported to ONNX and run, and the plan chooses on the
    timer's numbers, not its estimate. The timer is a deterministic stand-in for a clock (the exported file's weight
    count) so the test cannot flake on a busy machine; real timings are bench-budget's job."""
    import onnx

    from edgeprune import formats

    target = load_target("host")
    exporter = formats.get(target.device.format)
    model = build_from_yaml("yolo11n.yaml", 6)
    imgsz = 128
    timed_files = []

    def timed(module, size, precision="fp32"):
        path = exporter.export(module, tmp_path / f"m{len(timed_files)}.onnx", size, precision, None)
        formats.load_runner(path, threads=1, imgsz=size).run(np.zeros((1, 3, size, size), np.float32))
        timed_files.append(path)
        weights = sum(int(np.prod(t.dims)) for t in onnx.load(str(path)).graph.initializer)
        return 1.0 + weights / 1e5  # "ms": grows with what pruning removes, unlike the estimate's FLOPs

    unpruned = timed(model, imgsz)
    budget = 0.7 * unpruned
    target = dataclasses.replace(target, budget=dataclasses.replace(target.budget, latency_ms=budget))
    plan = plan_budget(model, target, Sizes((imgsz,), "test"), None, PruneConfig(imgsz=imgsz), lambda m, s: 0.0,
                       timer=lambda m, s, precision: timed(m, s, precision))
    chosen = plan.chosen
    assert len(timed_files) > 2, "candidates were exported and run"
    assert chosen.pruned and chosen.measured_ms <= plan.aim_ms < budget and "scaled" in plan.source
    pruned = prune_to_widths(model, chosen.keep, PruneConfig(imgsz=imgsz))[0]
    assert timed(pruned, imgsz) == pytest.approx(chosen.measured_ms, abs=1e-3), \
        "the plan's widths rebuild the model it timed"
    assert predict_module(pruned, imgsz, predictor_for(target, None)) > 0


COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]  # COCO's 80 category ids


def _coco_fixture(root, images=6):
    """COCO's layout and 80 category ids (with their gaps), at 640 x 480 like COCO's images."""
    import json

    from PIL import Image

    rng = np.random.default_rng(0)
    categories = [{"id": cid, "name": f"class{cid}"} for cid in COCO_IDS]
    (root / "annotations").mkdir(parents=True)
    for folder in ("train2017", "val2017"):
        (root / folder).mkdir()
        entries, anns = [], []
        for i in range(1, images + 1):
            Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(root / folder / f"{i:012d}.jpg")
            entries.append({"id": i, "file_name": f"{i:012d}.jpg", "width": 640, "height": 480})
            for k in range(2):
                anns.append({"id": len(anns) + 1, "image_id": i, "category_id": COCO_IDS[(3 * i + k) % 80],
                             "bbox": [40 + 100 * k, 60, 120, 90], "area": 10800, "iscrowd": 0})
        (root / "annotations" / f"instances_{folder}.json").write_text(
            json.dumps({"images": entries, "annotations": anns, "categories": categories}))
    return root


@pytest.mark.slow
def test_a_640px_80_class_checkpoint_gets_a_size_from_the_budget(tmp_path, monkeypatch):
    """The real-user path: yolo11n at 640 px with 80 classes on COCO-format data; the rpi budget picks the size
    (never above 640) and says why; the run stops after the plan."""
    import json

    import edgeprune.stages as stages
    from edgeprune.data.coco_subset import build_coco_subset
    from edgeprune.models.checkpoint import save_model
    from edgeprune.pipeline import DeployRequest, deploy

    coco = _coco_fixture(tmp_path / "coco")
    data, _ = build_coco_subset(coco, tmp_path / "subset", tmp_path / "subset.yaml", per_class=6, negatives=0.0)
    model = build_from_yaml("yolo11n.yaml", 80)
    model.args = {"imgsz": 640}  # what Ultralytics records for yolo11n.pt
    model.names = dict(enumerate(load_dataset(data).names))
    checkpoint = save_model(model, tmp_path / "yolo11n-640.pt")

    def stop(*args, **kwargs):
        raise KeyboardInterrupt  # pruning and what follows are other tests' business

    monkeypatch.setattr(stages, "prune_to_widths", stop)
    with pytest.raises(KeyboardInterrupt):
        deploy(DeployRequest(target="rpi", model=str(checkpoint), data=str(data), run_dir=tmp_path / "run",
                             out=tmp_path / "dist", eval_limit=2, latency_budget_ms=40))  # "p90 <= 40 ms on a Pi 5"
    plan = json.loads((tmp_path / "run" / "plan" / "plan.json").read_text())
    assert plan["sizes"][0] == 640 and max(plan["sizes"]) == 640 and "trained at 640" in plan["sizes_why"]
    chosen = plan["chosen"]
    assert chosen["imgsz"] <= 640 and chosen["predicted_ms"] <= plan["budget_ms"] == 40
    assert "budget 40 ms" in plan["reason"] and "estimate (roofline)" in plan["source"]
    assert any(c["imgsz"] == 640 and c["pruned"] for c in plan["candidates"]), "640 px needs pruning on a Pi 5"


def test_a_device_measurement_over_budget_says_how_to_replan():
    from edgeprune.report import replan_hint

    target = load_target("rpi")
    hint = replan_hint(target, {"budget": {"pass": False, "measured_ms": 52.0, "percentile": 90}})
    assert "make deploy TARGET=rpi LATENCY_TABLE=" in hint and "probe" in hint
    assert replan_hint(target, {"budget": {"pass": True}}) == ""
    assert replan_hint(target, {"dry_run": True, "budget": {"pass": False}}) == "", "dry runs time nothing"


def test_precision_is_searched_where_the_runtime_offers_two(tiny_model):
    """jetson: INT8 and FP16 candidates at every size; INT8 is charged the guard's allowed drop when it competes with
    FP16; a device table measured at INT8 cannot price FP16, which is then left out with a note."""
    target = load_target("jetson")
    assert target.recipe.searched_precisions == ("int8", "fp16")
    target = dataclasses.replace(target, budget=dataclasses.replace(target.budget, latency_ms=1000.0))
    sizes = Sizes((96, 64), "test")
    plan = plan_budget(tiny_model, target, sizes, None, PruneConfig(imgsz=96, round_to=16), lambda m, s: s / 1000)
    assert {c.precision for c in plan.candidates} == {"int8", "fp16"}
    by = {c.precision: c for c in plan.candidates}
    assert by["int8"].score == pytest.approx(by["int8"].proxy_map - target.recipe.quantize.max_map_drop)
    assert by["fp16"].score == by["fp16"].proxy_map and plan.chosen.precision == "fp16", "equal proxies: FP16 wins"
    assert any("charged" in n for n in plan.notes) and "fp16" in plan.reason()

    class Table:  # only the key and a flat cost matter here
        key = {"precision": "int8", "runtime": "tensorrt", "threads": 1}
        source = "measured: a test device"
        coefficients = {"p99": [0.0] * 12}
        feature_names = ["const"] + [f"x{i}" for i in range(11)]

    from edgeprune.budget.plan import predictors_for

    notes = []
    predictors = predictors_for(tiny_model, target, sizes, Table(), None, notes)
    assert set(predictors) == {"int8"} and "fp16: not searched" in notes[0]


def test_near_ties_go_to_the_larger_input():
    """Closer than PROXY_TIE the proxy cannot rank; the larger input wins (fine-tuning restores channels, not
    pixels). A clearer lead still wins at a smaller size."""
    from edgeprune.budget.plan import PROXY_TIE, Candidate, choose

    def cand(imgsz, score, ms=1.0):
        return Candidate(imgsz, True, {}, ms, proxy_map=score, score=score)

    near = [cand(192, 0.383), cand(224, 0.383 - PROXY_TIE / 2), cand(256, 0.301)]
    assert choose(near).imgsz == 224
    clear = [cand(192, 0.383), cand(224, 0.383 - 2 * PROXY_TIE)]
    assert choose(clear).imgsz == 192
    assert choose([cand(224, 0.4, 3.0), cand(224, 0.4, 2.0)]).predicted_ms == 2.0, "equal: the faster"


def test_profiles_reject_a_precision_their_format_cannot_export():
    with pytest.raises(EdgepruneError, match="precision_candidates"):
        load_target("rpi", **{"recipe.precision_candidates": ["int8", "fp16"]})
    with pytest.raises(EdgepruneError, match="budget.margin"):
        load_target("rpi", **{"budget.margin": 0.7})


def test_verify_times_only_the_chosen_candidate_and_corrects_a_miss(tiny_model):
    """For formats whose export is slow: the plan ranks on predictions, then times the winner; a winner timed over
    the budget is re-planned at its size until it fits."""
    target = load_target("rpi")
    predict = predictor_for(target, None)
    full = predict_module(tiny_model, 96, predict)
    target = dataclasses.replace(target, budget=dataclasses.replace(target.budget, latency_ms=0.8 * full))
    timed = []

    def slow_device(module, imgsz, precision):  # the real device is 15 % slower than predicted
        timed.append(imgsz)
        return 1.15 * predict_module(module, imgsz, predict)

    plan = plan_budget(tiny_model, target, Sizes((96,), "test"), None, PruneConfig(imgsz=96), lambda m, s: 0.5,
                       verify=slow_device)
    assert plan.chosen.measured_ms is not None and plan.chosen.measured_ms <= plan.aim_ms
    assert plan.chosen.corrections >= 1 and any("timed here" in n for n in plan.notes)
    assert set(timed) == {96} and len(timed) == plan.chosen.corrections + 2, "only the winner was timed (and again)"
    assert plan.chosen.confirmed_ms is not None and plan.chosen.confirmed_ms <= plan.budget_ms


def test_a_chosen_candidate_timed_over_the_budget_the_second_time_is_corrected(tiny_model):
    """One timing on a busy machine can be off by a quarter: the winner is timed again, and a miss is corrected."""
    target = load_target("rpi")
    predict = predictor_for(target, None)
    full = predict_module(tiny_model, 96, predict)
    target = dataclasses.replace(target, budget=dataclasses.replace(target.budget, latency_ms=0.8 * full))
    calls = []

    def disturbed(module, imgsz, precision):  # the first repeated timing of the same widths is 30 % slow
        ms = predict_module(module, imgsz, predict)
        repeat = ms in calls and not any(c < 0 for c in calls)
        calls.append(-ms if repeat else ms)
        return 1.3 * ms if repeat else ms

    plan = plan_budget(tiny_model, target, Sizes((96,), "test"), None, PruneConfig(imgsz=96), lambda m, s: 0.5,
                       verify=disturbed)
    assert any("when timed again; corrected" in n for n in plan.notes), plan.notes
    assert plan.chosen.confirmed_ms is not None and plan.chosen.confirmed_ms <= plan.budget_ms
    first_winner = -next(c for c in calls if c < 0)
    assert plan.chosen.measured_ms < first_winner, "corrected to narrower widths than the first winner"


def test_int8_is_timed_at_the_guards_most_float_level():
    """The guard runs after the plan and may keep parts in float (slower); the last level floats a superset of
    every earlier one, so timing at it bounds what the guard ships."""
    from edgeprune import formats
    from edgeprune.formats.onnx.qdq import FLOAT_NODE_PATTERNS, parse_level
    from edgeprune.formats.tflite.export import FLOAT_SCOPES

    floated = {"tflite": lambda level: set(FLOAT_SCOPES[level]),
               "onnx": lambda level: set(FLOAT_NODE_PATTERNS[parse_level(level)[0]])}
    for name, scopes_of in floated.items():
        exporter = formats.get(name)
        timed = exporter.timing_scope("int8")
        assert timed == exporter.caps.guard_levels[-1]
        assert all(scopes_of(level) <= scopes_of(timed) for level in exporter.caps.guard_levels)
        assert exporter.timing_scope("fp32") == "none"


def test_the_here_timer_exports_at_the_timing_scope(tiny_data, tiny_model, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from edgeprune import formats
    from edgeprune.budget import timing

    tflite, scopes, target = formats.get("tflite"), [], load_target("rpi")

    class Recording:
        caps = tflite.caps
        timing_scope = tflite.timing_scope

        def export(self, model, out, imgsz, precision, calibration=None, **options):
            scopes.append(options.get("float_scope"))
            return out

    monkeypatch.setattr(timing.formats, "get", lambda name: Recording())
    monkeypatch.setattr(timing.formats, "load_runner", lambda path, **kw: SimpleNamespace(run=lambda batch: batch))
    timer = timing.here_timer(target, load_dataset(tiny_data), tmp_path)
    timer(tiny_model, IMGSZ, "int8")
    assert scopes == ["head"]


def test_a_table_measured_here_earlier_is_anchored_to_a_timing_now(tiny_model, monkeypatch):
    """This machine drifts by tens of per cent: a table probed here in a slow spell would make every plan
    needlessly small (bench-budget once planned with a table 1.5x slow against a reference timed now)."""
    from types import SimpleNamespace

    from edgeprune.budget import plan as budget_plan
    from edgeprune.budget.costs import Predictor

    table = Predictor("measured: this host", "p90", True, lambda features: 10.0, lambda module, imgsz: 10.0)
    monkeypatch.setattr(budget_plan, "predictor_for", lambda target, latency_model: table)
    notes = []
    predictors = budget_plan.predictors_for(tiny_model, load_target("rpi"), Sizes((IMGSZ,), "test"),
                                            SimpleNamespace(key={"precision": "int8"}), lambda m, s, p: 5.0, notes)
    assert predict_module(tiny_model, IMGSZ, predictors["int8"]) == pytest.approx(5.0)
    assert predictors["int8"].measured and "table anchored" in notes[0]
    untimed = budget_plan.predictors_for(tiny_model, load_target("rpi"), Sizes((IMGSZ,), "test"),
                                         SimpleNamespace(key={"precision": "int8"}), None, [])
    assert predict_module(tiny_model, IMGSZ, untimed["int8"]) == 10.0, "a device's own table is left as measured"


@pytest.mark.parametrize("family", ("yolo11n.yaml", "yolo26n.yaml"))
def test_a_flops_goal_met_by_the_knapsack_cuts_unevenly_where_macs_are_cheap_to_save(family):
    """The knapsack priced in MACs reaches the FLOPs goal like the uniform cut does, with other widths: the
    convs at stride 2-8, where one channel costs the most MACs, lose a larger share than under one ratio."""
    from edgeprune.budget.flops import prune_to_flops

    model = build_from_yaml(family, 6)
    cfg = PruneConfig(flops_reduction=0.5, imgsz=IMGSZ, criterion="l2")
    knap, knap_result = prune_to_flops(model, dataclasses.replace(cfg, allocation="knapsack"))
    _, uniform_result = prune_to_flops(model, cfg)
    assert abs(knap_result.flops_reduction - 0.5) <= cfg.tolerance
    assert knap_result.layers != uniform_result.layers

    def high_res_kept(result) -> float:
        early = [v for name, v in result.layers.items() if name.split(".")[1] in {"0", "1", "2", "3", "4"}]
        return sum(after for _, after in early) / sum(before for before, _ in early)

    assert high_res_kept(knap_result) < high_res_kept(uniform_result)
    with torch.no_grad():
        assert knap(torch.zeros(1, 3, IMGSZ, IMGSZ)) is not None


def test_the_knapsack_flops_goal_refuses_what_it_would_ignore(tiny_model):
    from edgeprune.budget.flops import prune_to_flops
    from edgeprune.pruning.structured import prune

    for extra in ({"global_ranking": True}, {"overrides": (("model.2.", 0.2),)}, {"allocation": "greedy"}):
        cfg = PruneConfig(flops_reduction=0.5, imgsz=IMGSZ, **{"allocation": "knapsack", **extra})
        with pytest.raises(EdgepruneError, match="knapsack|allocation 'greedy'"):
            prune_to_flops(tiny_model, cfg)
    with pytest.raises(EdgepruneError, match="prune_to_flops"):
        prune(tiny_model, PruneConfig(flops_reduction=0.5, imgsz=IMGSZ, allocation="knapsack"))


def test_a_survey_passed_back_cuts_like_a_fresh_one_and_only_under_its_own_config(tiny_model):
    """The knapsack's corrections reuse one survey: the cut must equal the one that scores the model again."""
    cfg = PruneConfig(imgsz=IMGSZ)
    found = survey(tiny_model, cfg)
    keep = _random_keep(found, np.random.default_rng(3))
    reused, reused_result = prune_to_widths(tiny_model, keep, cfg, surveyed=found)
    fresh, fresh_result = prune_to_widths(tiny_model, keep, cfg)
    assert reused_result.kept == fresh_result.kept and reused_result.macs_after == fresh_result.macs_after
    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    with torch.no_grad():
        assert torch.equal(reused.eval()(x)[0], fresh.eval()(x)[0])
    with pytest.raises(EdgepruneError, match="another prune config"):
        prune_to_widths(tiny_model, keep, dataclasses.replace(cfg, imgsz=2 * IMGSZ), surveyed=found)


@pytest.mark.parametrize("family", ("yolo11n.yaml", "yolo26n.yaml"))
def test_an_additive_price_re_prices_only_the_touched_items_and_allocates_the_same(family):
    """MACs add up over convs, so re-pricing only the items that share a conv with the stepped one must give
    exactly the widths that re-pricing every item gives."""
    from edgeprune.budget.flops import GMACS

    model = build_from_yaml(family, 6)
    cfg = PruneConfig(imgsz=IMGSZ)
    found = survey(model, cfg)
    census = conv_census(split_block_copy(model), IMGSZ)
    aim = 0.5 * GMACS(census.features(*census.widths(found.channels, {}, found.effects)))
    local = allocate(found, census, GMACS, aim, cfg.round_to)
    every = allocate(found, census, dataclasses.replace(GMACS, additive=False), aim, cfg.round_to)
    assert GMACS.additive and local.fits and local.keep != found.channels
    assert (local.keep, local.steps, local.predicted_ms) == (every.keep, every.steps, every.predicted_ms)
