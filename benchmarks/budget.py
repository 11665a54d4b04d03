"""Budget benchmark: edgeprune's budget search against the simple alternatives, at equal measured latency.

This host is the device. For each family (checkpoint), runtime and budget, from the same checkpoint and with
the same fine-tuning epochs for every row:
  (a) budget search: the plan `make deploy` runs (input size x knapsack widths predicted to fit, each
      candidate timed here and corrected on a miss, ranked by the proxy: a short fine-tune, then adaptive BN);
  (b) uniform FLOPs pruning at the largest size (the old `--flops` goal), bisected until its latency matches
      (a)'s (timed for ONNX Runtime; for LiteRT, whose INT8 export takes a minute here, predicted by the
      measured latency model — the final side-by-side timing shows where each row really landed);
  (c) the unpruned model at the largest candidate size whose measured latency fits the budget;
  (d) the next smaller official architecture: none exists below the n scale of these families, so it is
      reported as not applicable.
Runtimes: LiteRT full-INT8 `.tflite` (the rpi profile's artefact) and ONNX Runtime FP32 (the host profile);
for each, the plan's latency model is a probe of the checkpoint's pruned variants timed and fitted on this
host. This shared 2-core machine drifts by tens of per cent within minutes, so every timing is paired: the
candidate is timed in interleaved turns beside the unpruned model at the largest size (the reference) and
scaled to the reference's first timing. Budgets are fractions of that reference, and a row fits when its
measured ratio to the reference, in the final side-by-side run, is at most the budget's fraction.
Every row is fine-tuned N epochs ((c) too: the input size changed), exported through the same INT8 guard
(PTQ levels only: QAT would add epochs), and its mAP50-95 measured by running the file (pycocotools on the
full val split). All files of one (family, runtime) and the reference are finally timed side by side in
interleaved turns. Rows are cached by architecture, size and epochs, so an interrupted run resumes and equal
rows (e.g. (a) choosing the unpruned model at a smaller size, which is (c)) are trained once.

    python -m benchmarks.budget --out bench/budget                 # make bench-budget
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import edgeprune.env  # noqa: F401  (offline Ultralytics before models are built)
from edgeprune import formats
from edgeprune.budget.plan import plan_budget, predict_module
from edgeprune.budget.proxy import name as proxy_name
from edgeprune.budget.proxy import proxy_map
from edgeprune.budget.sizes import candidate_sizes
from edgeprune.budget.timing import here_timer
from edgeprune.data.batches import loss_batches
from edgeprune.data.dataset import load_dataset
from edgeprune.errors import EdgepruneError
from edgeprune.evaluation.artefact import artefact_metrics
from edgeprune.evaluation.detection import evaluate, torch_runner
from edgeprune.evaluation.latency import measure_interleaved
from edgeprune.evaluation.model_stats import model_stats
from edgeprune.latency import model as latency
from edgeprune.latency.probe import ProbePlan, build_probe
from edgeprune.manifest import atomic_write_json, atomic_write_text, sha256_file
from edgeprune.models.checkpoint import load_model, save_model
from edgeprune.paths import PROJECT_ROOT
from edgeprune.pruning.structured import DATA_CRITERIA, PruneConfig, prune, prune_to_widths, split_block_copy, survey
from edgeprune.quantize.calibration import calibration_set
from edgeprune.quantize.guard import export_with_guard
from edgeprune.targets import load_target
from edgeprune.training.trainer import finetune_recipe, train

RUNTIMES = {"litert-int8": "rpi", "onnxruntime-fp32": "host"}  # runtime label -> the profile whose artefact it runs
# Runtimes whose candidates the plan also exports and times (the host profile's measure_here path); a LiteRT INT8
# export takes about a minute here, so its plan ranks on the measured latency model, then times and corrects only
# the chosen candidate, and (b)'s bisection is predicted, then timed once.
TIMED_CANDIDATES = ("onnxruntime-fp32",)
ROWS = {"a": "budget search", "b": "uniform FLOPs pruning, equal measured latency", "c": "unpruned, smaller input",
        "p": "another candidate of the plan (--all-candidates: how well the proxy ranked)"}
DATA = PROJECT_ROOT / "datasets" / "synth.yaml"  # the bundled dataset every row is fine-tuned and measured on
PROXY_TRAIN, PROXY_VAL = 128, 64
FINAL_REPEATS = 3  # passes of the final side-by-side timing; the median counts
MATCH = 0.03  # (b)'s measured latency is accepted within this fraction of (a)'s


def checkpoint(name: str) -> Path:
    """A short family name (yolo11n-synth) is a shipped baseline; anything else a path."""
    shipped = PROJECT_ROOT / "baselines" / f"{name}.pt"
    return shipped if shipped.exists() else Path(name)


def arch_key(model: torch.nn.Module, imgsz: int, epochs: int, source: str) -> str:
    """A row's identity: its architecture (every conv's width), input size, epochs and starting checkpoint."""
    widths = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    return hashlib.sha256(json.dumps([widths, imgsz, epochs, source]).encode()).hexdigest()[:12]


def probed_latency_model(base, target, data, folder: Path, sizes: tuple[int, ...], variants: int):
    """The runtime's latency model measured on this host: a probe of `base`'s pruned variants, timed and fitted."""
    table = folder.with_name(folder.name + "-latency.json")
    if not table.exists():
        calibration = {s: calibration_set(data, s, 16) for s in sizes} if target.recipe.precision == "int8" else None
        build_probe(base, target, folder, ProbePlan(sizes, variants, seed=0), calibration)
        subprocess.run([sys.executable, str(folder / "probe_latency.py"), "--probe", str(folder), "--out", str(table),
                        "--threads", str(target.validation.threads), "--runs", "10", "--rounds", "6"], check=True)
    fitted = latency.fit(latency.load_table(table))
    print(f"  latency model: {fitted.source}; held-out {fitted.heldout.get('within_10pct', 0):.0%} within 10 %")
    return fitted


class Rows:
    """Fine-tune, export (INT8 guard) and evaluate a row once; the result is cached on disk by its key."""

    def __init__(self, data, target, epochs: int, work: Path, tuned_dir: Path, source: str, threads: int,
                 seed: int = 0):
        self.data, self.target, self.epochs, self.work, self.source, self.threads = (data, target, epochs, work,
                                                                                     source, threads)
        self.tuned_dir = tuned_dir  # fine-tuned models, shared by the runtimes of one family
        self.seed = seed  # the fine-tune's seed (data order, augmentation); seed 0's files keep the first layout
        self.exporter = formats.get(target.device.format)

    def finish(self, model: torch.nn.Module, imgsz: int) -> dict:
        key = arch_key(model, imgsz, self.epochs, self.source)
        seeded = f"seed{self.seed}" if self.seed else ""
        folder = self.work / "rows" / key / seeded
        done = folder / "row.json"
        if done.exists():
            return json.loads(done.read_text())
        start = time.time()
        folder.mkdir(parents=True, exist_ok=True)
        tuned_pt = self.tuned_dir / key / seeded / "tuned.pt"
        if tuned_pt.exists():
            tuned = load_model(tuned_pt)
        else:
            recipe = finetune_recipe(self.epochs, imgsz, seed=self.seed)
            tuned = train(model, self.data, recipe, tuned_pt.parent / "finetune") if self.epochs else model
            save_model(tuned, tuned_pt)
        precision = self.target.recipe.precision
        fp32 = evaluate(torch_runner(tuned), self.data, imgsz, desc=f"row {key} FP32")["map50_95"]
        calibration = (calibration_set(self.data, imgsz, self.target.recipe.quantize.calibration_images)
                       if precision == "int8" else None)
        artefact = folder / f"model_{precision}{self.exporter.caps.suffix}"
        out = export_with_guard(self.exporter, tuned, artefact, imgsz, precision, calibration, fp32,
                                self.target.recipe.quantize.max_map_drop,
                                lambda p: artefact_metrics(p, self.data, imgsz, self.threads, None, tuned, self.exporter))
        stats = model_stats(tuned, imgsz)
        row = {"key": key, "seed": self.seed, "imgsz": imgsz, "file": str(artefact), "fp32_map50_95": round(fp32, 4),
               "map50_95": round(out["map50_95"], 4), "map50": round(out["map50"], 4),
               "guard": (out.get("accuracy_guard") or {}).get("chosen", "none"), "params": stats["params"],
               "gflops": stats["gflops"], "finish_s": round(time.time() - start, 1)}
        atomic_write_json(done, row)
        return row


def starting_model(base: torch.nn.Module, tuned: torch.nn.Module, row: dict, target, data, epochs: int,
                   source: str) -> torch.nn.Module:
    """The pruned, not yet fine-tuned model a finished row started from, rebuilt from its fine-tuned widths: the
    same checkpoint cut to the same width per group by the row's criterion (the plan's for (a) and other
    candidates, l2 for (b)). Checked against the row's key, so a row that cannot be rebuilt is refused."""
    def widths(model):
        return {n: m.out_channels for n, m in split_block_copy(model).named_modules()
                if isinstance(m, torch.nn.Conv2d)}

    imgsz, wanted = row["imgsz"], widths(tuned)
    if wanted == widths(base):
        model = base
    else:
        cfg = (PruneConfig(criterion="l2", round_to=target.device.round_to, imgsz=imgsz) if row["row"] == "b" else
               PruneConfig.from_recipe(target.recipe.prune, target.device.round_to, imgsz))
        batches = (lambda: loss_batches(data, imgsz)) if cfg.criterion in DATA_CRITERIA else (lambda: None)
        keep = {group: wanted[group] for group in survey(base, cfg, batches()).channels}
        model = prune_to_widths(base, keep, cfg, batches())[0]
    if arch_key(model, imgsz, epochs, source) != row["key"]:
        raise EdgepruneError(f"row {row['key']} ({row['row']}, {imgsz} px) could not be rebuilt from its widths",
                             "it was pruned in a way widths alone do not describe (e.g. whole attention heads); "
                             "leave its budget out of --budget-fractions when re-seeding")
    return model


def plan_predictor(target, latency_model):
    from edgeprune.budget.costs import predictor_for

    return predictor_for(target, latency_model)


def uniform_matching(base, target, imgsz: int, goal_ms: float, budget_ms: float, timer, steps: int = 7,
                     predict=None):
    """Today's `--flops` pruning (uniform ratio, l2 magnitude, the default before the budget drove pruning) at
    `imgsz`, whose latency is nearest `goal_ms` without exceeding the budget: a bisection over the FLOPs goal,
    each trial exported and timed here, or (`predict`, for runtimes whose export takes a minute) predicted by
    the measured latency model, the match then checked by one timing."""
    lo, hi, trials = 0.0, 0.9, []
    precision = target.recipe.precision
    for _ in range(steps):
        goal = (lo + hi) / 2
        model, result = prune(base, PruneConfig(flops_reduction=goal, criterion="l2",
                                                round_to=target.device.round_to, imgsz=imgsz))
        ms = predict_module(model, imgsz, predict) if predict else timer(model, imgsz, precision)
        trials.append((abs(ms - goal_ms), ms > budget_ms, goal, ms, model, result))
        print(f"  (b) uniform -{result.flops_reduction:.0%} FLOPs: {ms:.2f} ms (goal {goal_ms:.2f} ms)")
        if abs(ms - goal_ms) <= MATCH * goal_ms:
            break
        lo, hi = (goal, hi) if ms > goal_ms else (lo, goal)
    _, _, goal, ms, model, result = min(trials, key=lambda t: (t[1], t[0]))  # within budget first, then nearest
    matched_on = "predicted" if predict else "measured"
    if predict:
        ms = timer(model, imgsz, precision)
    return model, {"flops_goal": round(goal, 4), "flops_reduction": round(result.flops_reduction, 4),
                   "matched_ms": round(ms, 3), "matched_on": matched_on, "trials": len(trials)}


def run_family(name: str, runtime: str, fractions: list[float], epochs: int, out: Path, threads: int,
               probe_variants: int, all_candidates: bool = False, proxy_epochs: int | None = None) -> dict:
    time_candidates = runtime in TIMED_CANDIDATES
    start = time.time()
    data = load_dataset(DATA)
    target = load_target(RUNTIMES[runtime], threads=threads)
    target = dataclasses.replace(target, device=dataclasses.replace(target.device, measure_here=True))
    path = checkpoint(name)
    base = load_model(path)
    sizes = candidate_sizes(target, data, base)
    work = out / f"{Path(name).stem}-{runtime}"
    timer = here_timer(target, data, work / "timing", reference=(base, sizes.largest))
    precision = target.recipe.precision
    probe_sizes = tuple(sorted({sizes.largest, sizes.candidates[len(sizes.candidates) // 2], min(sizes.candidates)},
                               reverse=True))
    latency_model = probed_latency_model(base, target, data, work / "probe", probe_sizes, probe_variants)
    unpruned = {s: timer(base, s, precision) for s in sizes.candidates}  # (c)'s candidates, and the budgets' base
    reference_ms = unpruned[sizes.largest]
    rows_cache = Rows(data, target, epochs, work, out / f"{Path(name).stem}-tuned", sha256_file(path)[:16], threads)
    proxy_images = {s: calibration_set(data, s, PROXY_TRAIN) for s in sizes.candidates}

    proxy_epochs = target.recipe.prune.proxy_epochs if proxy_epochs is None else proxy_epochs

    def proxy(model, imgsz):
        return proxy_map(model, data, imgsz, proxy_images[imgsz], PROXY_VAL, proxy_epochs, work / "proxy")

    batches = (lambda s: loss_batches(data, s)) if target.recipe.prune.criterion in DATA_CRITERIA else None

    budgets, rows = [], []
    for fraction in fractions:
        budget = round(fraction * reference_ms, 3)
        tb = dataclasses.replace(target, budget=dataclasses.replace(target.budget, latency_ms=budget))
        cfg = PruneConfig.from_recipe(target.recipe.prune, target.device.round_to, sizes.largest)
        print(f"{name} {runtime}: budget {budget:.2f} ms ({fraction:g} of the unpruned {reference_ms:.2f} ms)")
        try:
            plan = plan_budget(base, tb, sizes, latency_model, cfg, proxy, timer=timer if time_candidates else None,
                               batches=batches, verify=None if time_candidates else timer,
                               proxy_name=proxy_name(proxy_epochs))
        except EdgepruneError as error:  # below the fastest candidate: what deploy refuses, reported as a row
            print(f"  unreachable: {error.problem}")
            budgets.append({"fraction": fraction, "budget_ms": budget, "unreachable": error.problem})
            continue
        chosen = plan.chosen
        a_model = (prune_to_widths(base, chosen.keep, dataclasses.replace(cfg, imgsz=chosen.imgsz),
                                   batches(chosen.imgsz) if batches else None)[0] if chosen.pruned else base)
        timings = [t for t in (chosen.measured_ms, chosen.confirmed_ms) if t is not None]
        a_ms = sum(timings) / len(timings) if timings else timer(a_model, chosen.imgsz, precision)
        b_model, b_info = uniform_matching(base, tb, sizes.largest, a_ms, budget, timer,
                                           predict=None if time_candidates else plan_predictor(tb, latency_model))
        fits = [s for s in sizes.candidates if unpruned[s] <= budget]
        entries = {"a": (a_model, chosen.imgsz, {"plan_measured_ms": a_ms, "reason": plan.reason(),
                                                  "flops_reduction": chosen.flops_reduction,
                                                  "proxy_map": chosen.proxy_map}),
                   "b": (b_model, sizes.largest, {**b_info, "plan_measured_ms": b_info["matched_ms"],
                                                  "proxy_map": round(proxy(b_model, sizes.largest), 4)})}
        if fits:
            entries["c"] = (base, fits[0], {"plan_measured_ms": unpruned[fits[0]], "flops_reduction": 0.0,
                                            "proxy_map": round(proxy(base, fits[0]), 4)})
        others = [c for c in plan.candidates if c is not chosen] if all_candidates else []
        for i, other in enumerate(others):
            model = (prune_to_widths(base, other.keep, dataclasses.replace(cfg, imgsz=other.imgsz),
                                     batches(other.imgsz) if batches else None)[0] if other.pruned else base)
            entries[f"p{i}"] = (model, other.imgsz, {"plan_measured_ms": other.measured_ms,
                                                     "flops_reduction": other.flops_reduction,
                                                     "proxy_map": other.proxy_map})
        budgets.append({"fraction": fraction, "budget_ms": budget, "plan": plan.summary(), "reason": plan.reason(),
                        "c_fits": bool(fits), "d": "not applicable: no official architecture below the n scale"})
        for row, (model, imgsz, extra) in entries.items():
            finished = rows_cache.finish(model, imgsz)
            rows.append({"budget_fraction": fraction, "budget_ms": budget, "row": row, "label": ROWS[row[0]],
                         **extra, **finished})
            print(f"  ({row}) {imgsz} px: artefact mAP50-95 {finished['map50_95']:.4f}")
        atomic_write_json(work / "partial.json", {"budgets": budgets, "rows": rows})
    reference_file = next((work / "timing" / f"reference-{precision}").glob(f"model*{rows_cache.exporter.caps.suffix}"))
    result = {"family": name, "checkpoint": str(path), "data": str(DATA), "runtime": runtime, "target": target.name,
              "threads": threads, "precision": precision, "epochs": epochs, "percentile": target.budget.percentile,
              "proxy": proxy_name(proxy_epochs), "reference_file": str(reference_file), "reference_ms": reference_ms,
              "sizes": list(sizes.candidates), "unpruned_ms": {str(k): v for k, v in unpruned.items()},
              "latency_source": (latency_model.source + f" (held-out within 10 %: "
                                 f"{latency_model.heldout.get('within_10pct', 0):.0%})") if latency_model
              else "roofline anchored to a timing here", "budgets": budgets, "rows": rows,
              "proxy_quality": proxy_quality(rows)}
    record_final_timing(result)
    return {**result, "wall_s": round(time.time() - start, 1)}


def record_final_timing(result: dict, repeats: int = FINAL_REPEATS) -> dict:
    """Times every row's file beside the reference, and fills in each row's measured latency, whether it fits
    its budget, and the summary."""
    reference = (Path(result["reference_file"]), max(result["sizes"]))
    timed = time_side_by_side(result["rows"], reference, result["threads"], result["percentile"], repeats)
    for row in result["rows"]:
        row.update(timed[row["key"]])
        row["measured_scaled_ms"] = round(row["ratio_to_reference"] * result["reference_ms"], 3)
        row["within_budget"] = row["ratio_to_reference"] <= row["budget_fraction"]
    result["final_timing_repeats"] = repeats
    result["summary"] = summarize(result["budgets"], result["rows"])
    return result


def time_side_by_side(rows: list[dict], reference: tuple[Path, int], threads: int, percentile: int,
                      repeats: int = FINAL_REPEATS) -> dict:
    """Every row's file and the reference in interleaved turns, `repeats` times: the median ms and ratio to the
    reference, and the ratio's range (one pass of a ~4 ms model has read 10 % slow here)."""
    files = {r["key"]: (Path(r["file"]), r["imgsz"]) for r in rows} | {"reference": reference}
    runners = {k: formats.load_runner(p, threads=threads, imgsz=s) for k, (p, s) in files.items()}
    key = f"p{percentile}_ms"
    pick = lambda t: t.get(key, t["p99_ms"])  # noqa: E731
    passes = [measure_interleaved({k: r.run for k, r in runners.items()}, {k: s for k, (_, s) in files.items()},
                                  rounds=12, seed=seed) for seed in range(repeats)]
    ratios = {k: [pick(t[k]) / pick(t["reference"]) for t in passes] for k in files}
    return {k: {"measured_p50_ms": statistics.median(t[k]["p50_ms"] for t in passes),
                "measured_p90_ms": statistics.median(t[k]["p90_ms"] for t in passes),
                "measured_budget_ms": statistics.median(pick(t[k]) for t in passes),
                "ratio_to_reference": round(statistics.median(ratios[k]), 4),
                "ratio_range": [round(min(ratios[k]), 4), round(max(ratios[k]), 4)]} for k in files}


def summarize(budgets: list[dict], rows: list[dict]) -> list[dict]:
    out = []
    for b in budgets:
        if "unreachable" in b:
            out.append({"fraction": b["fraction"], "budget_ms": b["budget_ms"], "unreachable": b["unreachable"]})
            continue
        by = {r["row"]: r for r in rows if r["budget_fraction"] == b["fraction"]}
        a = by["a"]
        entry = {"fraction": b["fraction"], "budget_ms": b["budget_ms"], "a_map": a["map50_95"],
                 "a_imgsz": a["imgsz"], "a_pruned": a.get("flops_reduction", 0) > 0,
                 "a_measured_ms": a["measured_scaled_ms"], "a_within": a["within_budget"],
                 "a_use": round(a["ratio_to_reference"] / b["fraction"], 3)}
        for other in ("b", "c"):
            if other in by:
                entry[f"{other}_map"] = by[other]["map50_95"]
                entry[f"{other}_measured_ms"] = by[other]["measured_scaled_ms"]
                entry[f"a_minus_{other}"] = round(a["map50_95"] - by[other]["map50_95"], 4)
                if paired := paired_differences(a, by[other]):
                    entry[f"a_minus_{other}_seeds"] = paired
        out.append(entry)
    return out


def paired_differences(a: dict, other: dict) -> dict | None:
    """a − other per fine-tuning seed both rows were trained with. Compared per seed, not across seeds: a seed
    fixes the data order and augmentation of every row, and moves all rows alike (one seed was the lowest for
    all three rows of a budget)."""
    seeds = sorted(set(a.get("seed_map50_95", {})) & set(other.get("seed_map50_95", {})), key=int)
    if len(seeds) < 2:
        return None
    diffs = {s: round(a["seed_map50_95"][s] - other["seed_map50_95"][s], 4) for s in seeds}
    return {"per_seed": diffs, "mean": round(statistics.mean(diffs.values()), 4),
            "range": [min(diffs.values()), max(diffs.values())]}


def proxy_quality(rows: list[dict]) -> dict:
    """How well the proxy ranked what fine-tuning then gave: Spearman over distinct rows, and per budget whether the
    proxy's best row was the best artefact."""
    from scipy.stats import spearmanr

    distinct = {r["key"]: r for r in rows if r.get("proxy_map") is not None}.values()
    proxies = [r["proxy_map"] for r in distinct]
    finals = [r["map50_95"] for r in distinct]
    rho = float(spearmanr(proxies, finals).statistic) if len(proxies) > 2 else float("nan")
    hits, total = 0, 0
    for fraction in sorted({r["budget_fraction"] for r in rows}):
        group = [r for r in rows if r["budget_fraction"] == fraction and r.get("proxy_map") is not None]
        plan = [r for r in group if r["row"][0] in "ap"]  # the plan's own candidates, when all were trained
        group = plan if len(plan) > 1 else group
        if len(group) > 1:
            total += 1
            hits += max(group, key=lambda r: r["proxy_map"])["map50_95"] == max(r["map50_95"] for r in group)
    return {"spearman": round(rho, 3), "rows": len(proxies), "best_row_picked": f"{hits}/{total}"}


def markdown(results: list[dict], command: str) -> str:
    lines = ["# Budget benchmark: edgeprune's budget search vs the simple alternatives at equal measured latency", "",
             f"`{command}`", "",
             "mAP50-95: pycocotools on the bundled val split, each artefact run in its runtime. Latency: every file of "
             "a family/runtime timed side by side with the unpruned model at its largest size (the reference) in "
             "interleaved turns on this host, at the budget's percentile, in "
             f"{max((r.get('final_timing_repeats', 1) for r in results), default=1)} passes (the median ratio counts); "
             "ms = ratio to the reference x the "
             "reference's timing the budgets were set from. Budgets are fractions of the reference.", "",
             "| family | runtime | budget | (a) budget search | (b) uniform FLOPs, equal latency | "
             "(c) unpruned, smaller input | a − b | a − c | (a) measured / budget |",
             "|---|---|---|---|---|---|---|---|---|"]
    for res in results:
        for s in res["summary"]:
            if "unreachable" in s:
                lines.append(f"| {res['family']} | {res['runtime']} | {s['budget_ms']:.2f} ms ({s['fraction']:g}) | "
                             f"unreachable: {s['unreachable'].split(': ', 1)[-1]} | | | | | |")
                continue
            a = f"{s['a_map']:.3f} @{s['a_imgsz']}{' pruned' if s['a_pruned'] else ''} ({s['a_measured_ms']:.2f} ms)"
            b = f"{s['b_map']:.3f} ({s['b_measured_ms']:.2f} ms)" if "b_map" in s else "—"
            c = f"{s['c_map']:.3f} ({s['c_measured_ms']:.2f} ms)" if "c_map" in s else "no size fits"
            lines.append(f"| {res['family']} | {res['runtime']} | {s['budget_ms']:.2f} ms ({s['fraction']:g}) | {a} | "
                         f"{b} | {c} | {s.get('a_minus_b', float('nan')):+.3f} | {s.get('a_minus_c', float('nan')):+.3f}"
                         f" | {s['a_use']:.0%}{'' if s['a_within'] else ' **over**'} |")
    lines += ["", "| family | runtime | latency source | proxy vs final (Spearman, rows) | proxy's best row was best |"
              " epochs | wall |", "|---|---|---|---|---|---|---|"]
    for res in results:
        q = res["proxy_quality"]
        lines.append(f"| {res['family']} | {res['runtime']} | {res['latency_source']} | {q['spearman']:+.2f} "
                     f"({q['rows']}) | {q['best_row_picked']} | {res['epochs']} | {res['wall_s'] / 60:.0f} min |")
    lines += seed_lines(results)
    lines += ["", "Rows (d), the next smaller official architecture: not applicable — n is the smallest official scale of "
              "both families.", "", "All rows:", "",
              "| family | runtime | budget | row | input | FLOPs removed | proxy | FP32 mAP | artefact mAP | guard | "
              "p50 ms | p90 ms | ratio to reference |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for res in results:
        for r in res["rows"]:
            lines.append(f"| {res['family']} | {res['runtime']} | {r['budget_ms']:.2f} | ({r['row']}) {r['label']} | "
                         f"{r['imgsz']} | {r.get('flops_reduction', 0):.0%} | {r.get('proxy_map', float('nan')):.3f} | "
                         f"{r['fp32_map50_95']:.3f} | {r['map50_95']:.3f} | {r['guard']} | {r['measured_p50_ms']:.2f} | "
                         f"{r['measured_p90_ms']:.2f} | {r['ratio_to_reference']:.3f} |")
    return "\n".join(lines) + "\n"


def seed_lines(results: list[dict]) -> list[str]:
    """The rows fine-tuned with several seeds (--seeds), and a − b, a − c over them."""
    seeded = [(res, r) for res in results for r in res["rows"] if len(r.get("seed_map50_95", {})) > 1]
    if not seeded:
        return []
    lines = ["", "Fine-tuning seeds: the same starting model fine-tuned again with other seeds (data order, "
             "augmentation), each artefact run; latency is the row's (weights do not change it).", "",
             "| family | runtime | budget | row | input | artefact mAP50-95 per seed | mean | spread (max − min) |",
             "|---|---|---|---|---|---|---|---|"]
    for res, r in seeded:
        maps = r["seed_map50_95"]
        lines.append(f"| {res['family']} | {res['runtime']} | {r['budget_ms']:.2f} ms ({r['budget_fraction']:g}) | "
                     f"({r['row']}) | {r['imgsz']} | {', '.join(f'{k}: {v:.3f}' for k, v in sorted(maps.items()))} | "
                     f"{statistics.mean(maps.values()):.3f} | {max(maps.values()) - min(maps.values()):.3f} |")
    lines += ["", "| family | runtime | budget | a − b per seed: mean (min to max) | a − c, same |",
              "|---|---|---|---|---|"]
    for res in results:
        for s in res["summary"]:
            diffs = [s.get(f"a_minus_{o}_seeds") for o in ("b", "c")]
            if any(diffs):
                cells = [f"{d['mean']:+.3f} ({d['range'][0]:+.3f} to {d['range'][1]:+.3f})" if d else "—" for d in diffs]
                lines.append(f"| {res['family']} | {res['runtime']} | {s['budget_ms']:.2f} ms ({s['fraction']:g}) | "
                             f"{cells[0]} | {cells[1]} |")
    return lines


def plot(results: list[dict], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4.2), squeeze=False)
    style = {"a": ("tab:green", "o"), "b": ("tab:blue", "s"), "c": ("tab:orange", "^"), "p": ("tab:gray", ".")}
    for ax, res in zip(axes[0], results):
        for r in res["rows"]:
            color, marker = style[r["row"][0]]
            ax.scatter(r["measured_scaled_ms"], r["map50_95"], color=color, marker=marker, s=40, zorder=3)
        for b in res["budgets"]:
            ax.axvline(b["budget_ms"], color="tab:red", ls="--", lw=0.8)
        for key, (color, marker) in style.items():
            ax.scatter([], [], color=color, marker=marker, label=f"({key}) {ROWS[key]}")
        ax.set_title(f"{res['family']}, {res['runtime']} ({res['threads']} threads)", fontsize=9)
        ax.set_xlabel(f"measured p{res['percentile']} latency here, ms (dashed: budgets)", fontsize=8)
        ax.set_ylabel("artefact mAP50-95")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="yolo11n-synth,yolo26n-synth", help="shipped baseline names or .pt paths")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES))
    parser.add_argument("--budget-fractions", default="0.5,0.65,0.8")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--probe-variants", type=int, default=6)
    parser.add_argument("--proxy-epochs", type=int, default=None,
                        help="short fine-tune before the proxy ranks a candidate (default: the profile's; 0: adaptive BN)")
    parser.add_argument("--all-candidates", action="store_true",
                        help="also fine-tune and run every other candidate of each plan (how well the proxy ranked)")
    parser.add_argument("--retime", action="store_true",
                        help="only time the finished rows in --out/budget.json side by side again, and rewrite it")
    parser.add_argument("--seeds", default="",
                        help="only fine-tune the finished rows in --out/budget.json again with these seeds (e.g. 1,2), "
                             "at the budgets in --budget-fractions, and rewrite it with each row's mAP per seed")
    parser.add_argument("--rows", default="a,b,c", help="with --seeds: which rows to fine-tune again")
    parser.add_argument("--out", default="bench/budget")
    args = parser.parse_args(argv)
    out = Path(args.out)
    command = "python -m benchmarks.budget " + " ".join(argv if argv is not None else sys.argv[1:])
    fractions = [float(f) for f in args.budget_fractions.split(",")]
    if args.retime:
        return retime(out, command)
    if args.seeds:
        return reseed(out, [int(s) for s in args.seeds.split(",")], fractions, args.rows.split(","), command)
    results = []
    for name in args.models.split(","):
        for runtime in args.runtimes.split(","):
            results.append(run_family(name, runtime, fractions, args.epochs, out, args.threads, args.probe_variants,
                                      args.all_candidates, args.proxy_epochs))
            rewrite(out, results, command)
    return 0


def finished_run(out: Path, verb: str) -> dict:
    finished = out / "budget.json"
    if not finished.exists():
        raise EdgepruneError(f"no {finished} to {verb}", "run the benchmark with this --out first")
    return json.loads(finished.read_text())


def rewrite(out: Path, results: list[dict], command: str) -> int:
    atomic_write_json(out / "budget.json", {"command": command, "results": results})
    atomic_write_text(out / "budget.md", markdown(results, command))
    plot(results, out / "budget.png")
    print((out / "budget.md").read_text())
    return 0


def reseed(out: Path, seeds: list[int], fractions: list[float], which: list[str], command: str) -> int:
    """Fine-tuning noise, measured: each finished row's starting model fine-tuned again with other seeds (data
    order and augmentation), exported through the same guard and its artefact run. The rows keep their timing:
    a file's latency does not depend on its weights."""
    saved = finished_run(out, "re-seed")
    for result in saved["results"]:
        data = load_dataset(result.get("data", DATA))
        target = load_target(RUNTIMES[result["runtime"]], threads=result["threads"])
        path, stem = Path(result["checkpoint"]), Path(result["family"]).stem
        base, source = load_model(path), sha256_file(path)[:16]
        tuned_dir, starts = out / f"{stem}-tuned", {}
        seeded = {seed: Rows(data, target, result["epochs"], out / f"{stem}-{result['runtime']}", tuned_dir, source,
                             result["threads"], seed) for seed in seeds}
        for row in (r for r in result["rows"] if r["budget_fraction"] in fractions and r["row"] in which):
            if row["key"] not in starts:
                tuned = load_model(tuned_dir / row["key"] / "tuned.pt")
                starts[row["key"]] = starting_model(base, tuned, row, target, data, result["epochs"], source)
            maps = {str(row.get("seed", 0)): row["map50_95"], **row.get("seed_map50_95", {})}
            for seed, rows in seeded.items():
                maps[str(seed)] = rows.finish(starts[row["key"]], row["imgsz"])["map50_95"]
                print(f"  ({row['row']}) {row['imgsz']} px at {row['budget_fraction']:g}, seed {seed}: "
                      f"artefact mAP50-95 {maps[str(seed)]:.4f}")
            row["seed_map50_95"] = maps
        result["summary"] = summarize(result["budgets"], result["rows"])
    return rewrite(out, saved["results"], f"{saved['command']}; then {command}")


def retime(out: Path, command: str) -> int:
    """A noisy final timing can be repeated without re-training: the rows' files and the reference are kept."""
    saved = finished_run(out, "re-time")
    for result in saved["results"]:  # files written before these keys were recorded
        work = out / f"{Path(result['family']).stem}-{result['runtime']}" / "timing" / f"reference-{result['precision']}"
        result.setdefault("reference_file", str(next(work.glob("model*"), work / "missing")))
        result.setdefault("reference_ms", result["unpruned_ms"][str(max(result["sizes"]))])
    results = [record_final_timing(result) for result in saved["results"]]
    return rewrite(out, results, f"{saved['command']}; then {command}")


if __name__ == "__main__":
    sys.exit(main())
