"""Validate a TensorRT bundle's latency on a Jetson (or any NVIDIA GPU).

With the tensorrt Python package: builds model.engine from the bundle's QDQ ONNX once (INT8 +
FP16, explicit batch), or reuses it, and times it with CUDA buffers (cuda-python or torch).
Without it: prints the equivalent trtexec command and, unless --no-fallback-onnxruntime, times
the same ONNX with ONNX Runtime so a JSON report still comes out. Example:
    python3 validate_tensorrt.py --runs 500 --cuda-graph --out results.json
"""

import argparse
import importlib.util
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import validation_common as common  # noqa: E402
from edgeprune_detector import ENGINE  # noqa: E402

PRECISION_FLAGS = {"int8": ["--int8", "--fp16"], "fp16": ["--fp16"], "fp32": []}


def build_parser() -> argparse.ArgumentParser:
    p = common.parser(__doc__, __file__)
    p.add_argument("--cuda-graph", action="store_true", help="replay inference as one captured CUDA graph")
    p.add_argument("--fallback-onnxruntime", action=argparse.BooleanOptionalAction, default=True,
                   help="when tensorrt is missing, time the ONNX with ONNX Runtime instead (default on)")
    return p


def trtexec_command(args, meta: dict) -> str:
    """The trtexec equivalent of this script, for devices where only the TensorRT CLI is installed."""
    percentile = args.percentile or meta.get("latency_budget", {}).get("percentile", 90)
    command = ["trtexec", f"--onnx={args.bundle / meta['model']}", *PRECISION_FLAGS.get(meta.get("precision"), []),
               f"--saveEngine={args.bundle / ENGINE}", f"--iterations={args.runs}", f"--avgRuns={args.runs}",
               f"--percentile={percentile:g}"]
    if args.cuda_graph:
        command.append("--useCudaGraph")
    return shlex.join(command)


def enable_cuda_graph(detector) -> None:
    if hasattr(detector.backend, "enable_cuda_graph"):
        detector.backend.enable_cuda_graph()
    else:
        print(f"note: --cuda-graph ignored, {detector.runtime} has no CUDA graphs")


@common.cli
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    meta = common.verify(args)  # a tampered model is refused before any engine is built
    if importlib.util.find_spec("tensorrt") is None:
        print("tensorrt is not installed; on the Jetson build and time the engine with:\n  "
              + trtexec_command(args, meta))
        if not args.fallback_onnxruntime:
            return common.fail("tensorrt is not installed (JetPack ships it; elsewhere: pip install tensorrt)",
                               common.EXIT_ERROR)
    elif not (args.bundle / ENGINE).exists():
        print(f"building {ENGINE} from {meta['model']} with TensorRT (minutes; once per device)", flush=True)
    return common.validate(args, "tensorrt", prepare=enable_cuda_graph if args.cuda_graph else None)


if __name__ == "__main__":
    sys.exit(main())
