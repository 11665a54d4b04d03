"""edgeprune: structured pruning, fine-tuning, INT8 quantization and export of YOLO detectors for edge devices.

The public API is a verb per stage over objects (see edgeprune.api):

    import edgeprune as ep
    pruned, record = ep.prune(ep.load("model.pt"), ep.PruneConfig(flops_reduction=0.5))

Names resolve on first use, so `import edgeprune` stays light and changes nothing: no torch or Ultralytics
import, no environment variables (edgeprune.env configures Ultralytics when a module that needs it loads).
"""

__version__ = "0.1.0"

_EXPORTS = {
    "load": "edgeprune.api", "load_dataset": "edgeprune.api", "load_target": "edgeprune.api",
    "prune": "edgeprune.api", "finetune": "edgeprune.api", "calibrate": "edgeprune.api", "export": "edgeprune.api",
    "evaluate": "edgeprune.api", "deploy": "edgeprune.api", "probe_latency": "edgeprune.api",
    "fit_latency": "edgeprune.api", "predict_latency": "edgeprune.api", "plan_budget": "edgeprune.api", "LatencyModel": "edgeprune.latency.model", "Guard": "edgeprune.api", "Exported": "edgeprune.api",
    "PruneConfig": "edgeprune.pruning.structured", "PruneResult": "edgeprune.pruning.structured",
    "TrainConfig": "edgeprune.training.trainer", "finetune_recipe": "edgeprune.training.trainer",
    "Target": "edgeprune.targets", "Dataset": "edgeprune.data.dataset", "DeployRequest": "edgeprune.pipeline",
    "DeployResult": "edgeprune.pipeline", "EdgepruneError": "edgeprune.errors", "Detector": "edgeprune.detector",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'edgeprune' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
