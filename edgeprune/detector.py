"""`from edgeprune.detector import Detector`: the numpy-only detector that every bundle carries.

It lives in the device package (edgeprune/device/edgeprune_detector.py), which bundles copy next to the
model so a device needs neither torch nor edgeprune; host code imports the same module, so host and
device run one implementation of letterboxing, decoding and NMS.
"""

from edgeprune.device.edgeprune_detector import BundleError, Detection, Detector

__all__ = ["BundleError", "Detection", "Detector"]
