"""Validate an ONNX bundle's latency with ONNX Runtime on this device's CPU.

Also the first check on a Jetson before TensorRT: it runs the same .onnx a TensorRT bundle holds.
Needs numpy and onnxruntime. Example:
    python3 validate_onnx.py --runs 200 --threads 4 --out results.json
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import validation_common as common  # noqa: E402


@common.cli
def main(argv=None) -> int:
    args = common.parser(__doc__, __file__).parse_args(argv)
    return common.validate(args, "onnxruntime")


if __name__ == "__main__":
    sys.exit(main())
