"""`edgeprune deploy`: baseline -> prune -> fine-tune -> INT8 export -> reference -> bundle.

The stages are units (edgeprune.stages); this module checks the inputs, runs each stage against the
run's manifest and writes the bundle. Each stage reads files and writes files under
runs/<target>/<stage>/ and records itself in runs/<target>/manifest.json. A stage whose config and
input hashes are unchanged, and whose outputs are intact, is skipped, so a re-run after a crash or
Ctrl-C redoes only unfinished work.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgeprune.data.build import BUNDLED_YAML
from edgeprune.paths import WORK_ROOT
from edgeprune.manifest import Manifest, atomic_write_json, jsonable, sweep_leftovers
from edgeprune.preflight import check_deploy
from edgeprune.stages import STAGES, Run, Stage, export_files
from edgeprune.targets import Target


@dataclass
class DeployRequest:
    target: "str | Target"  # a profile name, a yaml path or a Target
    model: str | None = None
    data: str = str(BUNDLED_YAML)
    out: Path = WORK_ROOT / "dist"
    run_dir: Path | None = None
    epochs: int | None = None
    imgsz: int | None = None
    flops_reduction: float | None = None
    calibration_images: int | None = None
    eval_limit: int | None = None  # evaluate on the first N val images (tests)
    baseline_epochs: int = 60  # when MODEL is a yaml: epochs to train it first
    threads: int = 2  # host latency threads
    trust_checkpoint: bool = False  # load MODEL (and the run's own checkpoints) as full pickles: runs their code
    latency_table: str | None = None  # a probe table of the device (probe_latency.py): predictions are measured
    latency_budget_ms: float | None = None  # replaces the profile's budget.latency_ms


@dataclass
class DeployResult:
    target: Target
    bundle: Path
    rows: list[dict] = field(default_factory=list)
    comparison: list[dict] = field(default_factory=list)  # unpruned baseline vs compressed, in the target runtime

    def summary(self) -> str:
        first, last = self.rows[0], self.rows[-1]
        lines = [f"bundle -> {self.bundle} (report.md, report.html)",
                 f"{first['stage']} -> {last['stage']}: mAP50-95 {first['map50_95']:.3f} -> {last['map50_95']:.3f}, "
                 f"GFLOPs {first['gflops']:.2f} -> {last['gflops']:.2f}, params {first['params'] / 1e6:.2f}M -> "
                 f"{last['params'] / 1e6:.2f}M"]
        if self.comparison:
            from edgeprune.report import speedup

            base, deployed = self.comparison
            ratio = speedup(self.comparison)
            lines.append(f"in {deployed['runtime']} ({self.target.recipe.precision}, this host): unpruned baseline "
                         f"{base['latency_p50_ms']:.2f} ms / mAP50-95 {base['map50_95']:.3f} -> deployed "
                         f"{deployed['latency_p50_ms']:.2f} ms / {deployed['map50_95']:.3f}"
                         + (f" ({ratio:.2f}x as fast, timed side by side)" if ratio and base["side_by_side"] else ""))
        return "\n".join(lines)


class StageRunner:
    """Runs stages against one manifest, skipping those already done with the same config and inputs."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.manifest = Manifest(run_dir / "manifest.json")

    def run(self, stage: Stage) -> dict:
        if self.manifest.is_current(stage.name, stage.config, stage.inputs):
            print(f"[{stage.name}] up to date, skipped")
            return self.manifest.stage(stage.name)["metrics"]
        stage_dir = self.run_dir / stage.name
        marker = stage_dir / ".started.json"
        started = {"config": stage.config, "inputs": stage.inputs}
        if marker.exists() and json.loads(marker.read_text()) != jsonable(started):
            shutil.rmtree(stage_dir)  # leftovers of a different configuration must not be resumed
        stage_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(marker, started)
        print(f"[{stage.name}] running ...")
        start = time.time()
        metrics = stage.run()
        entry = self.manifest.record(stage.name, stage.config, stage.inputs, stage.outputs(), metrics,
                                     time.time() - start)
        print(f"[{stage.name}] done in {entry['wall_s']:.0f} s")
        return metrics


def deploy(req: DeployRequest) -> DeployResult:
    checked = check_deploy(req)  # every input is checked before the run folder is touched
    target = checked.target
    run_dir = Path(req.run_dir or WORK_ROOT / "runs" / target.name).resolve()
    sweep_leftovers(run_dir, Path(req.out))
    runner = StageRunner(run_dir)
    runner.manifest.set("request", {k: str(v) for k, v in asdict(req).items()})
    runner.manifest.set("target", asdict(target))
    run = Run(req, target, checked.dataset, checked.model_spec, run_dir, sizes=checked.sizes)
    for make in STAGES:
        stage = make(run)
        if stage is not None:
            run.metrics[stage.key] = runner.run(stage)
            if stage.key == "plan":
                run.use_plan(run.metrics["plan"])
                runner.manifest.set("target", asdict(run.target))
    return write_bundle_of(run, runner.manifest)


def write_bundle_of(run: Run, manifest: Manifest) -> DeployResult:
    """The bundle of a finished run: artefact, device scripts, metadata, report."""
    from edgeprune.bundle import write_bundle
    from edgeprune.report import comparison_rows, report_rows

    stage_metrics = {k: v for k, v in run.metrics.items() if k not in ("reference", "plan")}
    rows = report_rows(stage_metrics, run.target, run.artefact)
    comparison = comparison_rows(run.metrics["reference"], run.metrics["export"], rows, run.target)
    widths = json.loads(run.record.read_text())["summary"]["layers"]
    end2end = bool(getattr(run.load(run.tuned_pt).model[-1], "end2end", False))
    bundle = write_bundle(run.target, run.dataset, export_files(run.artefact.parent), run.artefact, rows, manifest,
                          run.metrics["export"], Path(run.request.out) / run.target.name, end2end,
                          comparison=comparison, widths=widths, budget_plan=run.metrics.get("plan"))
    return DeployResult(run.target, bundle, rows, comparison)
