"""Validate a TFLite/LiteRT bundle's latency on this device (Raspberry Pi, Android, any ARM/x86 CPU).

Needs numpy and ai-edge-litert (or tflite-runtime). Example:
    python3 validate_tflite.py --runs 200 --threads 4 --out results.json
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import validation_common as common  # noqa: E402


@common.cli
def main(argv=None) -> int:
    args = common.parser(__doc__, __file__).parse_args(argv)
    return common.validate(args, "tflite")


if __name__ == "__main__":
    sys.exit(main())
