"""The proxy-correction check on finished bench-budget runs: a recovery linear in FLOPs reduction, left one run out."""

import json

import pytest

from benchmarks import proxy_correction

INTERCEPT, SLOPE = 0.02, 0.10  # the recovery every synthetic run below misses in its proxy


def _write_run(folder, name, rows, plans):
    """A bench-budget result with `rows` (letter, fraction, reduction, proxy) whose final mAP misses the recovery."""
    folder.mkdir()
    result = {"family": name, "runtime": "onnxruntime-fp32",
              "rows": [{"key": f"{letter}{fraction}{reduction}", "budget_fraction": fraction, "row": letter,
                        "flops_reduction": reduction, "proxy_map": proxy,
                        "map50_95": round(proxy + INTERCEPT + SLOPE * reduction, 4)}
                       for letter, fraction, reduction, proxy in rows],
              "budgets": [{"fraction": fraction, "plan": {"candidates": [
                  {"imgsz": size, "pruned": reduction > 0, "predicted_ms": 5.0, "flops_reduction": reduction,
                   "score": score} for size, reduction, score in candidates]}}
                  for fraction, candidates in plans.items()]}
    (folder / "budget.json").write_text(json.dumps({"command": "test", "results": [result]}))
    return folder


def test_a_recovery_linear_in_the_reduction_is_recovered_and_flips_the_underrated_choice(tmp_path):
    rows = [("a", 0.5, 0.6, 0.40), ("b", 0.5, 0.8, 0.30), ("c", 0.5, 0.0, 0.43),
            ("a", 0.8, 0.3, 0.44), ("b", 0.8, 0.4, 0.41), ("c", 0.8, 0.0, 0.45)]
    # at 0.8 the plan chose 224 px -10 % (score 0.46) over 256 px -40 % (0.43), which the recovery lifts to 0.49
    plans = {0.8: [(256, 0.4, 0.43), (224, 0.1, 0.46)]}
    runs = [_write_run(tmp_path / f"run{i}", f"family{i}", rows, plans) for i in range(3)]
    assert proxy_correction.main(["--runs", *map(str, runs), "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "proxy-correction.json").read_text())
    checks = result["fits"]["a, b, c"]
    assert [c["slope"] for c in checks] == pytest.approx([SLOPE] * 3, abs=1e-3)
    for check in checks:
        assert check["raw"]["best_picked"] == 0 and check["corrected"]["best_picked"] == 2  # c over a, then right
        assert check["corrected"]["spearman"] == pytest.approx(1.0)
        assert check["plan_choice_changed"] == ["0.8: 224 px -10% -> 256 px -40%"]
    assert "| a, c | family0 onnxruntime-fp32 | +10.0 |" in (tmp_path / "out" / "proxy-correction.md").read_text()


def test_a_fit_needs_two_reductions():
    with pytest.raises(ValueError, match="two FLOPs reductions"):
        proxy_correction.fit_recovery([{"row": "c", "reduction": 0.0, "proxy": 0.3, "final": 0.4}], "ac")
