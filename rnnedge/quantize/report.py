"""Plain-text summaries of an export's variants, as `rnnedge quantize` (and `--explain`) print them."""

from __future__ import annotations

import numpy as np

from rnnedge.quantize import gate
from rnnedge.tables import label


def _ratio(facts: dict) -> str:
    ratios = facts.get("speedup_rounds")
    return f"{float(np.median(ratios)):.2f}x" if ratios else "-"


def _worst_share(facts: dict) -> str:
    outputs = facts.get("gate", {}).get("golden", {}).get("outputs", {})
    return f"{max(o['share_of_range'] for o in outputs.values()):.2%}" if outputs else "-"


def variant_lines(manifest) -> list[str]:
    """One line per variant (size, error against Keras, metric, latency, gate) and the recommendation."""
    fp32_size = manifest.variants["fp32"]["size"]
    lines = [f"{'variant':<8}{'size':>10}{'':>6} {'max|diff|':>9} {'%range':>7} {'metric':>7} {'p50 ms':>6} "
             f"{'speed':>6}  gate"]
    for name, v in manifest.variants.items():
        err = max(v.get("max_abs_error", {}).values(), default=0.0)
        metric = "-" if v.get("metric") is None else f"{v['metric']:.4f}"
        g = v.get("gate", {})
        verdict = "reference" if name == "fp32" else ("pass" if g.get("passed") else "FAIL")
        if name != "fp32" and g.get("by"):
            verdict += " (task)" if g["by"] == "task metric" else " (golden)"
        p50 = v.get("latency_ms_p50")
        lines.append(f"{name:<8}{v['size']:>9,} ({v['size'] / fp32_size:>4.0%}) {err:>9.2e} "
                     f"{'-' if name == 'fp32' else _worst_share(v):>7} {metric:>7} "
                     f"{'-' if p50 is None else f'{p50:.3f}':>6} "
                     f"{'1.00x' if name == 'fp32' else _ratio(v):>6}  {verdict}")
    for entry in manifest.not_kept.values():
        lines.append(entry["because"])  # "no int8 variant kept: ..."
    lines.append("gate (task): the task metric decides; (golden): Keras' golden outputs")
    lines.append("recommended: " + ", ".join(f"{label(p)}={v}" for p, v in manifest.recommended.items()))
    lines.append(f"  (on CPU: a variant that passes its gate and is >= {gate.SPEEDUP:.2f}x fp32's speed")
    lines.append(f"  in the median of {gate.ROUNDS} interleaved rounds, and faster in each; else fp32)")
    return lines


def explain_lines(manifest) -> list[str]:
    """The int8 settings tried and why one was kept; each variant's gates, output by output."""
    lines = []
    int8 = manifest.variants.get("int8") or manifest.not_kept.get("int8", {})
    if int8.get("candidates"):
        kept = int8["setting"]["name"] if "setting" in int8 else "none"
        lines += ["", f"int8 settings tried (kept: {kept}):",
                  f"  {'setting':<20} {'portable':<8} {'max|diff|':>9} {'of range':>8} {'size':>5} "
                  f"{'p50 ms':>7} {'speed':>6}  gate"]
        for c in int8["candidates"]:
            speed = f"{float(np.median(c['ratios'])):.2f}x" if c["ratios"] else "-"
            bigger = "" if c.get("smaller_than_fp32", c["size_ratio"] < 1) else ", not smaller than fp32"
            lines.append(f"  {c['name']:<20} {'yes' if c['portable'] else 'NO':<8} "
                         f"{max(c['max_abs_error'].values(), default=0.0):>9.2e} {c['error']:>8.2%} "
                         f"{c['size_ratio']:>5.0%} {c['latency_ms_p50']:>7.3f} {speed:>6}  "
                         f"{'pass' if c['passed'] else 'FAIL'}{bigger}")
        lines.append(f"  why: {int8.get('chosen_because') or int8['because']}")
    for name, v in manifest.variants.items():
        g = v.get("gate", {})
        if name == "fp32" or not g.get("golden"):
            continue
        lines += ["", f"{name} gate: decided by the {g['by']}"]
        golden = g["golden"]
        lines.append(f"  golden outputs ({'pass' if golden['passed'] else 'FAIL'}): {golden['rule']}")
        for out, o in golden["outputs"].items():
            extra = f", same decision on {o['decisions']:.1%} of rows" if "decisions" in o else ""
            lines.append(f"    {out}: max|diff| {o['max_abs']:.2e} = {o['share_of_range']:.2%} of range "
                         f"{o['range']:.3g} (limit {o['limit']:.2e}){extra}: {'pass' if o['passed'] else 'FAIL'}")
        task = g.get("task")
        if task:
            lines.append(f"  task metric ({'pass' if task['passed'] else 'FAIL'}): "
                         f"{task['metric']} {task['value']:.4f} "
                         f"against {task['reference']:.4f}; {task['rule']}")
        else:
            lines.append("  task metric: none (pass --data with targets 'y' and --metric to judge on one)")
    return lines

