"""How well the measured latency model predicts pruned variants it never saw, on this machine's runtimes.

For each (model family, runtime) one probe is built with random pruned variants at several input
sizes; probe_latency.py times every file in one run (interleaved rounds), the model is fitted on the
first variants of each size (and the unpruned model) only, and each remaining, held-out variant's
prediction is set beside its measured p50. Weights do not change latency, so families without a
shipped checkpoint are built from their Ultralytics yaml.

    python -m benchmarks.latency --out bench            # make bench-latency
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import edgeprune.env  # noqa: F401  (offline Ultralytics before models are built)
from edgeprune import api
from edgeprune.latency import model as latency
from edgeprune.latency.probe import ProbePlan, build_probe, probe_size
from edgeprune.manifest import atomic_write_json, atomic_write_text
from edgeprune.preflight import DEFAULT_BASELINE

RUNTIMES = {  # label -> (profile, overrides): what a target of that runtime deploys
    "onnxruntime-fp32": ("host", {}),
    "onnxruntime-qdq-int8": ("host", {"precision": "int8"}),
    "litert-int8": ("rpi", {}),
}


def _model(name: str, nc: int):
    shipped = DEFAULT_BASELINE.parent / f"{name}.pt"
    return api.load(shipped) if shipped.exists() else api.load(name, nc=nc)


def _subtable(table: dict, names: set[str]) -> dict:
    probe = {**table["probe"], "models": [m for m in table["probe"]["models"] if m["name"] in names]}
    return {**table, "probe": probe, "results": [r for r in table["results"] if r["name"] in names]}


def run_one(family: str, runtime: str, sizes: tuple[int, ...], fit_per_size: int, held_per_size: int,
            threads: int, data, out: Path) -> dict:
    profile, overrides = RUNTIMES[runtime]
    target = api.load_target(profile, threads=threads, **overrides)
    model = _model(family, len(data.names))
    calibration = ({s: api.calibrate(data, s, images=16) for s in sizes} if target.recipe.precision == "int8"
                   else None)
    start = time.time()
    folder = out / f"latency-probe-{family}-{runtime}"
    probe = build_probe(model, target, folder, ProbePlan(sizes, fit_per_size + held_per_size, seed=0), calibration)
    build_s = time.time() - start
    table_path = folder.with_name(folder.name + "-latency.json")
    subprocess.run([sys.executable, str(probe / "probe_latency.py"), "--probe", str(probe), "--out", str(table_path),
                    "--threads", str(threads), "--runs", "10", "--rounds", "6"], check=True)
    time_s = time.time() - start - build_s
    table = latency.load_table(table_path)
    models = table["probe"]["models"]  # per size: the unpruned model, then the pruned variants in build order
    per_size = fit_per_size + held_per_size + 1
    fit_names = {m["name"] for i, m in enumerate(models) if i % per_size <= fit_per_size}
    fitted = latency.fit(_subtable(table, fit_names), holdout=0)
    timings = {r["name"]: r for r in table["results"]}
    rows = [m for m in models if m["name"] not in fit_names]
    predicted = np.array([fitted.predict_features({**m["features"], "imgsz": m["imgsz"]})["p50_ms"] for m in rows])
    measured = np.array([timings[m["name"]]["p50"] for m in rows])
    report = latency.heldout_report(predicted, measured, [f"{m['name']} ({m['imgsz']} px)" for m in rows])
    largest = max(sizes)
    at_largest = [m for m in models if m["imgsz"] == largest]
    smallest = min(at_largest, key=lambda m: sum(v for k, v in m["features"].items() if k.startswith("gmacs")))
    op_profiles = {label: timings[m["name"]]["ops_ms"] for label, m in
                   (("unpruned", at_largest[0]), ("most pruned", smallest)) if "ops_ms" in timings[m["name"]]}
    return {"family": family, "runtime": runtime, "target": target.name, "precision": target.recipe.precision,
            "structure": fitted.structure, "cross_validation": fitted.cross_validation, "op_profiles": op_profiles,
            "threads": threads, "sizes": list(sizes), "fit_models": len(fit_names),
            "heldout": report, "probe_build_s": round(build_s, 1), "probe_time_s": round(time_s, 1),
            "probe_mb": round(probe_size(probe) / 1e6, 1), "runtime_version": fitted.key["runtime_version"],
            "rows": [{"name": m["name"], "imgsz": m["imgsz"], "measured_ms": round(float(b), 3),
                      "predicted_ms": round(float(a), 3)} for m, a, b in zip(rows, predicted, measured)]}


def markdown(results: list[dict], command: str) -> str:
    lines = ["# Latency model: held-out pruned variants, predicted vs measured p50", "", f"`{command}`", "",
             "| family | runtime | sizes | fit models | held-out | within ±10 % | median abs error | worst |"
             " probe build / time | probe size |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        h = r["heldout"]
        lines.append(f"| {r['family']} | {r['runtime']} {r['runtime_version']} ({r['threads']} threads) | "
                     f"{','.join(map(str, r['sizes']))} | {r['fit_models']} | {h['count']} | {h['within_10pct']:.0%} | "
                     f"{h['median_abs_error']:.1%} | {h['max_abs_error']:.1%} | {r['probe_build_s']} s / "
                     f"{r['probe_time_s']} s | {r['probe_mb']} MB |")
    lines += ["", "Cost structure chosen by cross-validation (median |error| over 5 folds of the fitted models):", ""]
    for r in results:
        lines.append(f"- {r['family']} {r['runtime']}: {r['structure']} "
                     f"({', '.join(f'{k} {v:.1%}' for k, v in r['cross_validation'].items())})")
    profiled = [r for r in results if r.get("op_profiles")]
    if profiled:
        lines += ["", "Where the time goes (ONNX Runtime's own per-operator profile, ms per inference at the largest "
                  "size: the unpruned model and the probe's most pruned variant):", ""]
        for r in profiled:
            for label, ops in r["op_profiles"].items():
                top = sorted(ops.items(), key=lambda kv: -kv[1])[:6]
                lines.append(f"- {r['family']} {r['runtime']}, {label}: " + ", ".join(f"{op} {ms:.2f}" for op, ms in top)
                             + f" (total {sum(ops.values()):.2f})")
    lines += ["", "Worst held-out cases:", ""]
    for r in results:
        for w in r["heldout"]["worst"][:3]:
            lines.append(f"- {r['family']} {r['runtime']}: {w['name']} measured {w['measured_ms']} ms, predicted "
                         f"{w['predicted_ms']} ms ({w['error']:+.1%})")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default="yolo11n-synth,yolo26n.yaml")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES))
    parser.add_argument("--sizes", default="192,256,320")
    parser.add_argument("--fit-per-size", type=int, default=8)
    parser.add_argument("--held-per-size", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", default="datasets/synth.yaml")
    parser.add_argument("--out", default="bench")
    args = parser.parse_args(argv)
    out = Path(args.out)
    data = api.load_dataset(args.data, check_images=False)
    sizes = tuple(int(s) for s in args.sizes.split(","))
    results = []
    for family in args.families.split(","):
        for runtime in args.runtimes.split(","):
            results.append(run_one(family, runtime, sizes, args.fit_per_size, args.held_per_size, args.threads,
                                   data, out))
            h = results[-1]["heldout"]
            print(f"{family} {runtime}: {h['within_10pct']:.0%} of {h['count']} held-out variants within ±10 %, "
                  f"median |error| {h['median_abs_error']:.1%}, worst {h['max_abs_error']:.1%}")
            command = "python -m benchmarks.latency " + " ".join(argv if argv is not None else sys.argv[1:])
            atomic_write_json(out / "latency.json", {"command": command, "results": results})
            atomic_write_text(out / "latency.md", markdown(results, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
