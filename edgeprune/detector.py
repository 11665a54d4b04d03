"""`from edgeprune.detector import Detector`: the numpy-only detector that every bundle carries.

One implementation serves both sides: bundles ship deploy/device/edgeprune_detector.py so a
device needs neither torch nor edgeprune, and host code imports that same file from here, so
host and device can never disagree on letterboxing, decoding or NMS.
"""

from __future__ import annotations

import importlib.util
import sys

from edgeprune.env import PROJECT_ROOT

_PATH = PROJECT_ROOT / "deploy" / "device" / "edgeprune_detector.py"


def _load():
    if "edgeprune_detector" in sys.modules:
        return sys.modules["edgeprune_detector"]
    spec = importlib.util.spec_from_file_location("edgeprune_detector", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["edgeprune_detector"] = module
    spec.loader.exec_module(module)
    return module


_module = _load()
Detector = _module.Detector
Detection = _module.Detection
BundleError = _module.BundleError

__all__ = ["BundleError", "Detection", "Detector"]
