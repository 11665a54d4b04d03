"""Validate a Core ML bundle's latency on a Mac (Apple silicon: CPU, GPU and Neural Engine).

Times coremltools MLModel predictions for each --compute-units setting (default ALL, then
CPU_AND_NE); the first one is compared with the budget. Core ML executes only on macOS:
elsewhere --dry-run checks the arguments and the model's sha256 and prints how to get the same
numbers from Xcode's performance report. Example:
    python3 validate_coreml.py --runs 200 --out results.json
"""

import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import validation_common as common  # noqa: E402
from edgeprune_detector import COREML_UNITS, check_model_kind, model_path  # noqa: E402

XCODE_STEPS = """Core ML runs only on macOS; to measure {model_name} on an Apple device:
  1. Copy the bundle to a Mac with Xcode 15 or newer and open {model_name} in Xcode.
  2. Open the Performance tab, click "+", pick the device (this Mac or a connected iPhone/iPad)
     and compute units "All", then add a second report with "CPU and Neural Engine".
  3. Run the test; compare the median prediction time with the budget (p{percentile:g} <= {budget} ms)
     and check in the layer view that the model runs on the Neural Engine.
  4. On the Mac this script measures the same end to end: python3 validate_coreml.py --bundle {bundle}"""


def build_parser():
    p = common.parser(__doc__, __file__)
    p.add_argument("--compute-units", nargs="+", choices=COREML_UNITS, default=["ALL", "CPU_AND_NE"],
                   help="Core ML compute units to time, first one judged against the budget (default ALL CPU_AND_NE)")
    return p


def xcode_steps(args, meta: dict) -> str:
    declared = meta.get("latency_budget", {})
    return XCODE_STEPS.format(model_name=meta["model"], bundle=args.bundle,
                              percentile=args.percentile or declared.get("percentile", 90),
                              budget=args.budget_ms or declared.get("ms"))


def time_compute_units(args) -> int:
    """Time every requested compute-unit setting on the same image; report the first against the budget."""
    image, label = common.input_image(args)
    results = {}
    for unit in args.compute_units:
        detector = common.open_detector(args, "coreml", compute_units=unit)
        results[unit] = (detector, *common.measure(detector, image, *common.run_counts(args)))
    detector, times, detections = results[args.compute_units[0]]
    by_unit = {unit: {stage: common.summarize(t[stage]) for stage in common.STAGES}
               for unit, (_, t, _) in results.items()}
    return common.report(args, detector, times, detections, label, extra={"compute_units": by_unit})


@common.cli
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    meta = common.verify(args)
    check_model_kind("coreml", model_path(args.bundle, meta))
    if platform.system() == "Darwin":
        return time_compute_units(args)
    if not args.dry_run:
        return common.fail(f"Core ML runs only on macOS, this is {platform.system()}: run this script on a Mac "
                           f"(or use --dry-run for the Xcode steps)", common.EXIT_ERROR)
    print(xcode_steps(args, meta))
    return common.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
