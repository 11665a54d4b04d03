"""Static checks of a .tflite file: which dtypes its tensors have, so "full INT8" is verified, not assumed."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np


def tensor_dtype_census(path: Path) -> dict[str, int]:
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(path)).get_tensor_details()
    return dict(sorted(Counter(np.dtype(t["dtype"]).name for t in details).items()))


def op_census(path: Path) -> dict[str, int]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    ops = interpreter._get_ops_details()  # noqa: SLF001  (the only op listing LiteRT's Python API offers)
    return dict(sorted(Counter(op["op_name"] for op in ops).items()))
