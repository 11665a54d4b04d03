"""edgeprune: structured pruning, fine-tuning, INT8 quantization and export of YOLO detectors for edge devices."""

from edgeprune import env as _env  # noqa: F401  (offline Ultralytics settings before anything imports it)

__version__ = "0.1.0"
