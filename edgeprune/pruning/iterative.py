"""Iterative pruning: reach the FLOPs goal in several smaller cuts with fine-tuning in between.

One big cut removes channels whose importance was measured on the unpruned network; cutting in
steps lets the network redistribute what it knows before the next channels are ranked. Each step
keeps (1 - goal) ** (k / steps) of the original FLOPs, so the steps are equal in ratio. The
kept-channel record of the steps is composed into one record against the original model, so
`replay` rebuilds the final architecture from the original weights as for a one-shot pruning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace

from torch import nn

from edgeprune.errors import EdgepruneError
from edgeprune.pruning import heads as attention_heads
from edgeprune.pruning.structured import PruneConfig, PruneResult, count_macs, prune


def compose_kept(first: dict[str, list[int]], then: dict[str, list[int]]) -> dict[str, list[int]]:
    """Kept indices into the original conv after two prunings (`then` indexes the once-pruned conv)."""
    out = dict(first)
    for name, second in then.items():
        earlier = first.get(name)
        out[name] = list(second) if earlier is None else [earlier[i] for i in second]
    return out


def iterative_prune(model: nn.Module, cfg: PruneConfig, steps: int,
                    fine_tune: Callable[[nn.Module, int], nn.Module],
                    batches: Callable[[], Iterable[dict] | None] = lambda: None,
                    cut: Callable = prune) -> tuple[nn.Module, PruneResult, list]:
    """Prune `model` to cfg.flops_reduction in `steps` cuts, calling fine_tune(model, step) between cuts
    (not after the last: the caller's fine-tuning stage does that). Returns (model, result, per-step log).
    `cut(model, cfg, batches)` makes each cut (budget.flops.prune_to_flops for a knapsack allocation)."""
    if steps < 1:
        raise EdgepruneError(f"prune steps must be >= 1, got {steps}", "use 1 for one-shot pruning")
    macs0, params0 = count_macs(model, cfg.imgsz)
    widths0 = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    current, kept, heads, log, result = model, {}, {}, [], None
    for step in range(1, steps + 1):
        keep_of_original = (1 - cfg.flops_reduction) ** (step / steps)
        macs_now = count_macs(current, cfg.imgsz)[0]
        step_goal = max(0.0, 1 - keep_of_original * macs0 / macs_now)
        current, result = cut(current, replace(cfg, flops_reduction=step_goal), batches())
        kept = compose_kept(kept, result.kept)
        heads = attention_heads.compose(heads, result.heads)
        log.append({"step": step, "step_flops_reduction": round(result.flops_reduction, 4),
                    "flops_reduction": round(1 - result.macs_after / macs0, 4), "params": result.params_after})
        print(f"  prune step {step}/{steps}: {log[-1]['flops_reduction']:.1%} of the original FLOPs removed")
        if step < steps:
            current = fine_tune(current, step)
    macs, params = count_macs(current, cfg.imgsz)
    widths1 = {n: m.out_channels for n, m in current.named_modules() if isinstance(m, nn.Conv2d)}
    layers = {n: [w, widths1[n]] for n, w in widths0.items() if widths1.get(n, w) != w}
    final = PruneResult(result.ratio, macs0, macs, params0, params, layers, result.locked, cfg.imgsz,
                        {n: k for n, k in kept.items() if n in layers}, [], heads)
    return current, final, log
