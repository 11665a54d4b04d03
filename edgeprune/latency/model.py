"""A measured latency model of one device runtime: fitted on a probe table, predicts any pruned variant.

Latency is modelled as a non-negative sum of costs (edgeprune.latency.features): per-stride compute and
memory traffic, the head's output size (decoding, layout) and a constant (dispatch, I/O). Non-negative
least squares keeps every cost physical, so the model cannot buy accuracy on the probe with negative
terms that explode on a variant it has not seen. One fit per percentile (p50, p90, p99).

The model is keyed by what changes the numbers (target, runtime and its version, threads, precision);
`check_matches` refuses one that was measured under a different key. Without a table, `predict`
falls back to the profile's roofline and says so.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgeprune.device.edgeprune_detector import canonical_sha256
from edgeprune.errors import EdgepruneError
from edgeprune.manifest import atomic_write_json

MODEL_VERSION = 1
TABLE_KIND, MODEL_KIND = "edgeprune-latency-table", "edgeprune-latency-model"
PERCENTILES = ("p50", "p90", "p99")
WITHIN = 0.10  # the held-out goal: prediction within ±10 % of the measured p50


def load_table(path: Path) -> dict:
    """A probe table that is whole, untampered and sensible, or one clear error naming what is wrong."""
    path = Path(path)
    fix = "time the probe again with probe_latency.py and pass its output unchanged"
    try:
        table = json.loads(path.read_text())
    except FileNotFoundError:
        raise EdgepruneError(f"latency table {path} does not exist", "pass the file probe_latency.py wrote") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise EdgepruneError(f"latency table {path} is not valid JSON (truncated? {error})", fix) from None
    if not isinstance(table, dict) or table.get("kind") != TABLE_KIND or table.get("format_version") != 1:
        raise EdgepruneError(f"{path} is not an edgeprune latency table (version 1)", fix)
    for key in ("probe", "probe_sha256", "runtime", "runtime_version", "threads", "precision", "results"):
        if key not in table:
            raise EdgepruneError(f"latency table {path} lacks {key!r}", fix)
    if canonical_sha256(table["probe"]) != table["probe_sha256"]:
        raise EdgepruneError(f"latency table {path}: its probe section does not match its recorded sha256 "
                             "(edited by hand?)", fix)
    models = {m["name"]: m for m in table["probe"]["models"]}
    seen = set()
    for row in table["results"]:
        name = row.get("name")
        if name not in models or row.get("sha256") != models[name]["sha256"]:
            raise EdgepruneError(f"latency table {path}: result {name!r} is not a model of its probe", fix)
        values = [row.get(p) for p in PERCENTILES]
        if not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values) \
                or not values[0] <= values[1] <= values[2] or not isinstance(row.get("runs"), int) or row["runs"] < 1:
            raise EdgepruneError(f"latency table {path}: result {name!r} has impossible timings {values} "
                                 f"(runs {row.get('runs')})", fix)
        seen.add(name)
    if seen != set(models):
        raise EdgepruneError(f"latency table {path}: {len(set(models) - seen)} probe models have no timing", fix)
    return table


def design(rows: list[dict], names: list[str]) -> np.ndarray:
    return np.array([[row[n] for n in names] for row in rows], dtype=np.float64)


def _nnls(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least squares on relative error (each row weighted by 1/y: small models count as much)."""
    from scipy.optimize import nnls

    scale = x.max(axis=0)
    scale[scale == 0] = 1
    coef, _ = nnls((x / scale) / y[:, None], np.ones_like(y))
    return coef / scale


@dataclass
class LatencyModel:
    key: dict  # target, runtime, runtime_version, threads, precision, format
    feature_names: list[str]
    coefficients: dict[str, list[float]]  # percentile -> one cost per feature (ms per unit)
    sizes: list[int]
    heldout: dict = field(default_factory=dict)
    device: dict = field(default_factory=dict)
    source: str = ""
    structure: str = "per-stride"  # which costs were tied (STRUCTURES), chosen by cross-validation
    cross_validation: dict = field(default_factory=dict)  # structure -> median |error| over k folds of the fit
    format_version: int = MODEL_VERSION
    kind: str = MODEL_KIND

    def predict_features(self, features: dict) -> dict:
        x = np.array([features[n] for n in self.feature_names], dtype=np.float64)
        out = {f"{p}_ms": round(float(x @ np.asarray(c)), 3) for p, c in self.coefficients.items()}
        imgsz = features.get("imgsz")
        out["extrapolated"] = bool(imgsz and not min(self.sizes) <= imgsz <= max(self.sizes))
        out["source"] = self.source
        return out

    def save(self, path: Path) -> Path:
        atomic_write_json(Path(path), asdict(self))
        return Path(path)


def load_model(path: Path) -> LatencyModel:
    try:
        data = json.loads(Path(path).read_text())
        if data.get("kind") != MODEL_KIND or data.get("format_version") != MODEL_VERSION:
            raise ValueError("not an edgeprune latency model (version 1)")
        return LatencyModel(**data)
    except (OSError, ValueError, TypeError) as error:
        raise EdgepruneError(f"latency model {path} cannot be read ({error})",
                             "fit it again: edgeprune latency fit <table.json>") from None


def _split(rows: list[dict], holdout: float, seed: int) -> tuple[list[int], list[int]]:
    """Held-out rows are pruned variants only (the unpruned model at each size is always fitted)."""
    rng = np.random.default_rng(seed)
    pruned = [i for i, r in enumerate(rows) if r["pruned"]]
    count = int(round(len(pruned) * holdout))
    held = set(rng.choice(pruned, size=count, replace=False).tolist()) if count else set()
    return [i for i in range(len(rows)) if i not in held], sorted(held)


STRUCTURES = ("pooled", "per-stride")  # simplest first; pooled: one cost per GMAC and per element written
FOLDS = 5
PARSIMONY = 1.10  # a richer structure must beat the simplest's cross-validated error by more than 10 %


def _ties(names: list[str], structure: str) -> np.ndarray:
    """(features, free costs): which features share one cost. Per-stride costs let layout and cache effects differ
    by resolution; pooled ones have a third of the unknowns, so timing noise moves them less."""
    if structure == "per-stride":
        return np.eye(len(names))
    kinds = [n.split("_s")[0] if n.startswith(("gmacs_s", "mact_s")) else n for n in names]
    free = list(dict.fromkeys(kinds))
    return np.array([[1.0 if kind == f else 0.0 for f in free] for kind in kinds])


def _fit_tied(x: np.ndarray, y: np.ndarray, ties: np.ndarray) -> np.ndarray:
    return ties @ _nnls(x @ ties, y)


def choose_structure(x: np.ndarray, y: np.ndarray, names: list[str], seed: int = 0) -> tuple[str, dict]:
    """The simplest cost structure whose cross-validated median error (k-fold, on the fitted rows) is within
    PARSIMONY of the best one: with tens of noisy timings, fewer unknowns generalise better unless the data
    clearly asks for more."""
    order = np.random.default_rng(seed).permutation(len(y))
    folds = np.array_split(order, min(FOLDS, len(y)))
    errors = {}
    for structure in STRUCTURES:
        ties = _ties(names, structure)
        if ties.shape[1] >= len(y) - max(len(f) for f in folds):
            continue  # too few rows to fit this many costs on k-1 folds
        error = np.concatenate([np.abs(x[f] @ _fit_tied(np.delete(x, f, 0), np.delete(y, f), ties) / y[f] - 1)
                                for f in folds])
        errors[structure] = round(float(np.median(error)), 4)
    best = min(errors.values(), default=0.0)
    chosen = next((st for st in STRUCTURES if st in errors and errors[st] <= best * PARSIMONY), "pooled")
    return chosen, errors


def heldout_report(predicted: np.ndarray, measured: np.ndarray, names: list[str]) -> dict:
    error = predicted / measured - 1
    worst = np.argsort(-np.abs(error))[:5]
    return {"count": int(len(measured)), "within_10pct": round(float(np.mean(np.abs(error) <= WITHIN)), 4),
            "median_abs_error": round(float(np.median(np.abs(error))), 4),
            "max_abs_error": round(float(np.abs(error).max()), 4),
            "worst": [{"name": names[i], "measured_ms": round(float(measured[i]), 3),
                       "predicted_ms": round(float(predicted[i]), 3), "error": round(float(error[i]), 4)}
                      for i in worst]}


def fit(table: dict, holdout: float = 0.25, seed: int = 0, source: str = "") -> LatencyModel:
    """Fit on the table; the held-out error is of a fit that never saw those variants, the stored
    coefficients then use every row."""
    probe = table["probe"]
    names = probe["feature_names"]
    timings = {r["name"]: r for r in table["results"]}
    rows = [{**m["features"], "name": m["name"], "pruned": m["pruned"], "imgsz": m["imgsz"],
             **{p: timings[m["name"]][p] for p in PERCENTILES}} for m in probe["models"]]
    if len(rows) < len(names):
        raise EdgepruneError(f"the probe has {len(rows)} models, fewer than the {len(names)} costs to fit",
                             "build the probe with more --variants")
    x = design(rows, names)
    fitted, held = _split(rows, holdout, seed)
    report = {}
    if held:
        y = np.array([rows[i]["p50"] for i in fitted])
        structure, _ = choose_structure(x[fitted], y, names, seed)
        coef = _fit_tied(x[fitted], y, _ties(names, structure))
        report = heldout_report(x[held] @ coef, np.array([rows[i]["p50"] for i in held]),
                                [rows[i]["name"] for i in held])
    structure, cv = choose_structure(x, np.array([r["p50"] for r in rows]), names, seed)
    ties = _ties(names, structure)
    coefficients = {p: [float(c) for c in _fit_tied(x, np.array([r[p] for r in rows]), ties)] for p in PERCENTILES}
    key = {"target": probe["target"], "runtime": table["runtime"], "runtime_version": table["runtime_version"],
           "threads": table["threads"], "precision": table["precision"], "format": probe["format"]}
    device = table.get("device", {})
    label = source or (f"measured: {device.get('board') or device.get('processor') or device.get('machine')}, "
                       f"{table.get('runtime_label', table['runtime'])} {table['runtime_version']}, "
                       f"{table['threads']} threads")
    return LatencyModel(key, names, coefficients, sorted({r["imgsz"] for r in rows}), report, device, label,
                        structure=structure, cross_validation=cv)


def check_matches(model: LatencyModel, target, runtime_version: str | None = None) -> None:
    """Refuse a model measured under another runtime, precision, thread count or runtime version than asked."""
    expected = {"runtime": target.device.runtime, "precision": target.recipe.precision,
                "threads": target.validation.threads}
    if runtime_version:
        expected["runtime_version"] = runtime_version
    wrong = [f"{k} {model.key.get(k)!r} (target wants {v!r})" for k, v in expected.items() if model.key.get(k) != v]
    if wrong:
        raise EdgepruneError(f"latency model for {model.key.get('target')} does not match target {target.name}: "
                             + ", ".join(wrong),
                             "time a probe built for this target with its thread count (edgeprune latency probe "
                             f"--target {target.name}), or pass --threads to match")


def model_for(table: Path, target) -> LatencyModel:
    """The latency model of a device table, refused unless it was measured for this target's key."""
    model = fit(load_table(Path(table)))
    check_matches(model, target)
    return model


def predict(module, imgsz: int, target, model: LatencyModel | None = None) -> dict:
    """Predicted latency of a PyTorch module at `imgsz` on the target: from the measured model when given,
    else the roofline estimate (labelled)."""
    from edgeprune.latency.features import latency_features

    if model is not None:
        check_matches(model, target)
        return {**model.predict_features({**latency_features(module, imgsz), "imgsz": imgsz}), "imgsz": imgsz}
    from edgeprune.evaluation.model_stats import model_stats
    from edgeprune.latency.roofline import activation_elements, estimate_latency_ms

    stats = model_stats(module, imgsz)
    estimate = estimate_latency_ms(stats["gflops"], stats["params"], activation_elements(module, imgsz), target)
    return {"p50_ms": estimate["estimate_ms"], f"p{target.budget.percentile}_ms": estimate["estimate_ms"],
            "imgsz": imgsz, "extrapolated": False, "source": estimate["label"]}
