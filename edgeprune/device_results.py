"""The JSON a bundle's validate_*.py writes, checked key by key before `edgeprune validate` stores any of it.

Results travel from a device through USB sticks, chat and CI artefacts; a file that is not what the
script wrote (truncated, edited, another tool's) is refused with the first wrong key, as profiles are.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgeprune.errors import EdgepruneError

NUMBER = (int, float)
STAGES = ("preprocess", "infer", "postprocess", "end_to_end")  # = validation_common.STAGES on the device
LATENCY = {"p50": NUMBER, "p90": NUMBER, "p99": NUMBER, "mean": NUMBER, "min": NUMBER, "max": NUMBER,
           "fps": NUMBER + (type(None),), "runs": int}
BUDGET = {"ms": NUMBER + (type(None),), "percentile": NUMBER, "on": str, "measured_ms": NUMBER, "pass": bool}
RESULTS = {"target": str, "runtime": str, "runtime_version": (str, type(None)), "model": str, "model_sha256": str,
           "precision": str, "imgsz": int, "device": dict, "threads": int, "warmup": int, "runs": int, "image": str,
           "detections": int, "latency_ms": {stage: LATENCY for stage in STAGES}, "budget": BUDGET,
           "dry_run": bool, "timestamp": str}
OPTIONAL = {"compute_units": dict}  # validate_coreml.py: which compute units were measured


def _check(value, spec, where: str, optional: dict | None = None) -> None:
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            raise _bad(where, f"is {type(value).__name__}, expected an object")
        missing = sorted(set(spec) - set(value))
        unknown = sorted(set(value) - set(spec) - set(optional or {}))
        if missing or unknown:
            raise _bad(where, ", ".join(filter(None, [missing and f"misses {', '.join(missing)}",
                                                      unknown and f"has unknown key(s) {', '.join(unknown)}"])))
        for key, value_spec in {**(optional or {}), **spec}.items():
            if key in value:
                _check(value[key], value_spec, f"{where}.{key}")
        return
    if isinstance(value, bool) and bool not in (spec if isinstance(spec, tuple) else (spec,)):
        raise _bad(where, f"is {value!r}, expected {_name(spec)}")
    if not isinstance(value, spec):
        raise _bad(where, f"is {type(value).__name__} {str(value)[:40]!r}, expected {_name(spec)}")
    if isinstance(value, NUMBER) and not isinstance(value, bool) and value < 0:
        raise _bad(where, f"is {value}, expected >= 0")


def _name(spec) -> str:
    return " or ".join(t.__name__ for t in (spec if isinstance(spec, tuple) else (spec,)))


def _bad(where: str, problem: str) -> EdgepruneError:
    return EdgepruneError(f"device results: {where} {problem}",
                          "pass the unedited JSON written by the bundle's validate_*.py --out")


def read_results(path: Path) -> dict:
    """Parse and check a results file; nothing is written anywhere."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EdgepruneError(f"device results {path} cannot be read ({error.__class__.__name__})",
                             "pass the JSON written by the bundle's validate_*.py --out") from None
    _check(data, RESULTS, "results", OPTIONAL)
    if data["budget"]["on"] not in STAGES:
        raise _bad("results.budget.on", f"is {data['budget']['on']!r}, expected one of {', '.join(STAGES)}")
    if len(data["model_sha256"]) != 64:
        raise _bad("results.model_sha256", "is not a sha256 hex digest")
    return data
