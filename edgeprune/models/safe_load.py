"""Read a `.pt` without letting it run code: PyTorch's weights-only unpickler plus an allowlist of module classes.

A checkpoint is a pickle, and a pickle can call any function while it loads. The weights-only
unpickler only rebuilds tensors, containers and the globals it was told are safe; here those are
the `nn.Module` classes of torch, Ultralytics and edgeprune (what a detection checkpoint is made of),
numpy's scalar/array rebuilders (Ultralytics' metrics) and Ultralytics' argument namespace (an unfinished
run's last.pt keeps the training arguments on the model as one; without it no interrupted run resumes).
Anything else is refused by name, and `trust=True` (the CLI's `--trust-checkpoint`) is the explicit opt-in
to a full pickle load.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import torch

from edgeprune.errors import EdgepruneError

MODULE_PACKAGES = ("torch.nn.modules", "ultralytics.nn", "edgeprune.models")
NUMPY_GLOBALS = ("multiarray.scalar", "multiarray._reconstruct", "numpy.ndarray", "numpy.dtype")
TRUST_HINT = ("if you trust where this file came from, re-run with --trust-checkpoint (make: TRUST_CHECKPOINT=1); "
              "otherwise re-save its weights with a plain Ultralytics install")


def _in_packages(name: str) -> bool:
    return any(name == pkg or name.startswith(pkg + ".") for pkg in MODULE_PACKAGES)


def allowed_module_classes() -> list[type]:
    """Every nn.Module class defined in the allowed packages (those packages are imported first)."""
    import ultralytics.nn.tasks  # noqa: F401  (imports every Ultralytics block)

    import edgeprune.models.attention  # noqa: F401
    import edgeprune.models.blocks  # noqa: F401

    classes = []
    for name, module in list(sys.modules.items()):
        if module is None or not _in_packages(name):
            continue
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, torch.nn.Module) and _in_packages(value.__module__):
                classes.append(value)
    return classes


def _numpy_globals() -> list:
    import numpy as np

    found = [np.ndarray, np.dtype, *(getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType"))]
    for module_name in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        found += [module.scalar, module._reconstruct]
    return found


def _data_globals() -> list[type]:
    """Attribute containers: loading one only sets its fields (an unfinished feature-distillation run's last.pt
    keeps Ultralytics' feature hooks on the student's layers)."""
    from ultralytics.nn.distill_model import FeatureHook
    from ultralytics.utils import IterableSimpleNamespace

    return [IterableSimpleNamespace, FeatureHook]


def _is_allowed(name: str) -> bool:
    return (_in_packages(name.rsplit(".", 1)[0]) or name.endswith(NUMPY_GLOBALS) or name.startswith("numpy.dtypes.")
            or name in {f"{c.__module__}.{c.__qualname__}" for c in _data_globals()})


def refused_globals(path: Path) -> list[str]:
    """The globals in the file's pickle that are not on the allowlist, read statically (nothing executes)."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # not a zip checkpoint: the weights-only load below reports it
        return []
    return sorted(n for n in names if not _is_allowed(n))


def load_checkpoint(path: str | Path, trust: bool = False):
    """What torch.save wrote to `path`; untrusted files may hold only allowlisted classes (EdgepruneError if not)."""
    path = Path(path)
    if not path.is_file():
        raise EdgepruneError(f"model checkpoint {path} does not exist",
                             "pass MODEL=<path to .pt> or a model yaml such as MODEL=yolo11n.yaml")
    if trust:
        print(f"edgeprune: warning: loading {path} as a full pickle (--trust-checkpoint): "
              "it can run any code it contains", file=sys.stderr)
        return _load(path, weights_only=False)
    refused = refused_globals(path)
    if refused:
        raise _refusal(path, refused)
    with torch.serialization.safe_globals(allowed_module_classes() + _numpy_globals() + _data_globals()):
        return _load(path, weights_only=True)


def _refusal(path: Path, names: list[str]) -> EdgepruneError:
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return EdgepruneError(f"model checkpoint {path} refers to {shown}, which is not on edgeprune's allowlist of "
                          "model classes (loading it could run code)", TRUST_HINT)


def _load(path: Path, weights_only: bool):
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except ModuleNotFoundError as error:
        raise EdgepruneError(f"model checkpoint {path} needs module {error.name!r} to load",
                             "install the package that defined the model") from None
    except Exception as error:  # torch raises many types for truncated, foreign or refused files
        message = str(error)
        if weights_only and "GLOBAL" in message:  # a legacy (non-zip) pickle naming a refused global
            name = message.split("GLOBAL", 1)[1].split()[0]
            raise _refusal(path, [name]) from None
        raise EdgepruneError(f"model checkpoint {path} is corrupt or not a PyTorch file ({error.__class__.__name__})",
                             "re-download or re-export the checkpoint; check it was copied completely") from None
