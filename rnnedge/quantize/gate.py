"""Is a variant close enough to Keras, and is it worth it? The accuracy gates and the choices.

Two gates, both written so a user can check them by hand:
- on Keras' golden outputs (always available, no TensorFlow needed): every output's max |diff|
  within `RANGE_SHARE` of that output's range in the golden data; softmax and sigmoid outputs
  also give the same decision (argmax, or > 0.5) on at least `DECISION_SHARE` of rows;
- on a task metric, where one exists (the zoo's test split, or `--data` with targets): the
  metric within `TASK_GATE` of the fp32 reference. Where it exists it decides; both are recorded.

Timings are noisy, so a variant counts as faster only when it is faster by `SPEEDUP` in the
median of `ROUNDS` interleaved rounds and faster in every round (`faster_than`).
"""

from __future__ import annotations

import numpy as np
import onnx

from rnnedge.tables import METRICS, RANGE_SHARE

DECISION_SHARE = 0.99
SPEEDUP = 1.10
ROUNDS = 5
# How far a variant's task metric may fall behind the fp32 reference: (better direction, amount).
TASK_GATE = {name: ("higher" if m.higher_is_better else "lower", m.gate) for name, m in METRICS.items()}
GOLDEN_RULE = (f"max |diff| <= {RANGE_SHARE:.0%} of each output's range in Keras' golden outputs; softmax/sigmoid "
               f"outputs: the same argmax/threshold decision on >= {DECISION_SHARE:.0%} of rows")
_PASS_THROUGH = ("Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Transpose", "Cast")


def output_kinds(model: onnx.ModelProto) -> dict[str, str]:
    """Graph outputs that are probabilities: name -> "softmax" or "sigmoid" (through reshapes)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    kinds = {}
    for out in model.graph.output:
        node = producer.get(out.name)
        while node is not None and node.op_type in _PASS_THROUGH:
            node = producer.get(node.input[0])
        if node is not None and node.op_type in ("Softmax", "Sigmoid"):
            kinds[out.name] = node.op_type.lower()
    return kinds


def golden_gate(pairs: list[tuple[dict, dict]], kinds: dict[str, str]) -> dict:
    """Judge a variant on [(Keras' outputs, the variant's outputs)] of the golden cases."""
    want: dict[str, list] = {}
    got: dict[str, list] = {}
    for expected, actual in pairs:
        for name, e in expected.items():
            want.setdefault(name, []).append(np.asarray(e, np.float64).ravel())
            got.setdefault(name, []).append(np.asarray(actual[name], np.float64).ravel())
    outputs, passed = {}, True
    for name in want:
        e, a = np.concatenate(want[name]), np.concatenate(got[name])
        finite = np.isfinite(e)
        span = float(e[finite].max() - e[finite].min()) if finite.any() else 0.0
        limit = max(RANGE_SHARE * span, 1e-6)
        diff = float(np.abs(a - e)[finite].max()) if finite.any() else 0.0
        ok = diff <= limit and bool(np.all(np.isfinite(a) == finite))
        entry = {"max_abs": diff, "range": span, "limit": limit, "share_of_range": diff / span if span else 0.0}
        if name in kinds:
            entry["decisions"] = _decisions(kinds[name], [p[0][name] for p in pairs], [p[1][name] for p in pairs])
            ok = ok and entry["decisions"] >= DECISION_SHARE
        entry["passed"] = ok
        outputs[name] = entry
        passed = passed and ok
    return {"rule": GOLDEN_RULE, "passed": passed, "outputs": outputs}


def _decisions(kind: str, expected: list, actual: list) -> float:
    """Share of rows (softmax: argmax over the last axis; sigmoid: each value > 0.5) that agree."""
    same = total = 0
    for e, a in zip(expected, actual):
        e, a = np.asarray(e), np.asarray(a)
        if kind == "softmax":
            agree = e.reshape(-1, e.shape[-1]).argmax(-1) == a.reshape(-1, a.shape[-1]).argmax(-1)
        else:
            agree = (e > 0.5) == (a > 0.5)
        same += int(agree.sum())
        total += agree.size
    return same / total if total else 1.0


def task_gate(metric: str, reference: float, value: float) -> dict:
    direction, amount = TASK_GATE[metric]
    passed = value >= reference - amount if direction == "higher" else value <= reference * (1 + amount)
    rule = (f"{direction} is better; at most {amount:g} "
            + ("points lower" if direction == "higher" else "relatively higher"))
    return {"metric": metric, "reference": reference, "value": value, "passed": bool(passed), "rule": rule}


def within_gate(metric: str, reference: float, value: float) -> bool:
    return task_gate(metric, reference, value)["passed"]


def round_ratios(reference_ms: np.ndarray, candidate_ms: np.ndarray, rounds: int = ROUNDS) -> list[float]:
    """reference p50 / candidate p50 in each of `rounds` consecutive blocks of interleaved runs."""
    pairs = zip(np.array_split(reference_ms, rounds), np.array_split(candidate_ms, rounds))
    return [round(float(np.median(r) / np.median(c)), 3) for r, c in pairs if len(r) and len(c)]


def faster_than(ratios: list[float]) -> bool:
    """Faster by SPEEDUP in the median round, and faster in every round."""
    return bool(ratios) and float(np.median(ratios)) >= SPEEDUP and min(ratios) > 1.0


def choose_int8(candidates: list[dict], fp32_size: int) -> tuple[str | None, str]:
    """(name, why) of the int8 setting to keep, from measured candidates; name None when none is kept.

    Each candidate: name, portable, size, passed (its gate), error (worst share of range),
    ratios (fp32 p50 / its p50 per round). Only a portable setting smaller than fp32 can be kept:
    an int8 variant is smaller, or there is none (in a model of a few units the nodes and scales
    int8 adds outweigh the bytes it saves). Kept: within the gate, not slower than fp32; among
    those, the fastest, and among the ones within SPEEDUP of it, the most accurate. With none of
    those, the most accurate smaller one (its gate says FAIL).
    """
    def median(c):
        return float(np.median(c["ratios"])) if c["ratios"] else 1.0

    portable = [c for c in candidates if c["portable"]]
    smaller = [c for c in portable if c["size"] < fp32_size]
    skipped = [c["name"] for c in candidates if not c["portable"]]
    saturating = f"{', '.join(skipped)} not considered: 8-bit integer weights saturate on x86 CPUs without VNNI"
    if not portable:
        return None, f"no int8 variant kept: {saturating}"
    if not smaller:
        sizes = ", ".join(f"{c['name']} {c['size']:,}" for c in sorted(portable, key=lambda c: c["size"]))
        return None, (f"no int8 variant kept: no portable setting is smaller than fp32's {fp32_size:,} bytes "
                      f"({sizes}): at this size the nodes and scales int8 adds outweigh the bytes it saves")
    eligible = [c for c in smaller if c["passed"] and median(c) * SPEEDUP >= 1.0]
    if not eligible:
        best = min(smaller, key=lambda c: c["error"])
        return best["name"], ("no portable setting smaller than fp32 is within the gate and not slower than fp32: "
                              f"kept the most accurate of them ({best['name']})")
    fastest = max(median(c) for c in eligible)
    close = [c for c in eligible if median(c) * SPEEDUP >= fastest]
    best = min(close, key=lambda c: c["error"])
    others = ", ".join(c["name"] for c in close if c is not best)
    why = (f"portable, within the gate, smaller than fp32 ({best['size']:,} of {fp32_size:,} bytes); "
           f"{median(best):.2f}x fp32's speed"
           + (f", the most accurate of those within {SPEEDUP - 1:.0%} of the fastest ({others} too)" if others else
              ", the fastest"))
    if skipped:
        why += f"; {saturating}"
    return best["name"], why
