"""The measurements: ours, the reference and the unavoidable passes interleaved; configurations against a baseline."""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any

from robustdistill.config import parse_value
from speedbench.bench import (
    TARGET_REFERENCE,
    TARGET_UNAVOIDABLE,
    TARGET_VARIANT,
    Setup,
    make_ours,
    peak_memory,
    time_both,
    time_once,
)
from speedbench.passes import Passes, unavoidable
from speedbench.reference import make_reference, reference_doc


def measure(name: str, s: Setup, passes: Passes, repeats: int, *, variant: bool = False) -> dict[str, Any]:
    """Ours, the reference and the unavoidable passes, interleaved; with `variant`, also ours with
    channels_last switched the other way (student, teachers and input), as the run config would."""
    ours = make_ours(name, s)
    reference = make_reference(name, s)
    other = make_ours(name, dataclasses.replace(s, channels_last=not s.channels_last)) if variant else None
    ours()  # warm-up (first-call allocations, autotuning)
    reference()
    if other is not None:
        other()
    other_times: list[float] = []
    plan = unavoidable(name, s)
    ours_times: list[float] = []
    reference_times: list[float] = []
    pass_times: dict[tuple[str, int], list[float]] = {(kind, rows): [] for kind, rows, _ in plan}
    for _ in range(repeats):  # interleaved: slow drifts of a shared machine hit all three alike
        ours_times.append(time_once(ours, s.device))
        reference_times.append(time_once(reference, s.device))
        if other is not None:
            other_times.append(time_once(other, s.device))
        for key, times in pass_times.items():
            times.append(passes.time(*key))
    with peak_memory(s.device) as ours_memory:
        ours()
    with peak_memory(s.device) as reference_memory:
        reference()
    parts = [
        {"pass": kind, "rows": rows, "count": count, "seconds": count * min(pass_times[(kind, rows)])}
        for kind, rows, count in plan
    ]
    ours_s, reference_s = min(ours_times), min(reference_times)  # best of N, as timeit: noise only adds time
    unavoidable_s = sum(p["seconds"] for p in parts)
    extra: dict[str, Any] = {}
    if other_times:
        extra = {
            "variant_channels_last": not s.channels_last,
            "variant_s": min(other_times),
            "variant_over_reference": min(other_times) / reference_s,
            "variant_times_s": other_times,
        }
    return {
        "ours_s": ours_s,
        "reference_s": reference_s,
        "unavoidable_s": unavoidable_s,
        "ours_over_reference": ours_s / reference_s,
        "ours_over_unavoidable": ours_s / unavoidable_s,
        "meets_reference_target": ours_s / reference_s <= TARGET_REFERENCE,
        "meets_unavoidable_target": ours_s / unavoidable_s <= TARGET_UNAVOIDABLE,
        "ours_images_per_s": s.batch / ours_s,
        "reference_images_per_s": s.batch / reference_s,
        "ours_peak_mib": ours_memory.get("peak_mib"),
        "reference_peak_mib": reference_memory.get("peak_mib"),
        "ours_median_s": statistics.median(ours_times),
        "reference_median_s": statistics.median(reference_times),
        "ours_times_s": ours_times,
        "reference_times_s": reference_times,
        "unavoidable_passes": parts,
        "reference_style": reference_doc(name),
        **extra,
    }


def parse_variant(text: str) -> tuple[str, str, dict[str, Any]]:
    """`LABEL=METHOD` or `LABEL=METHOD:key=value;key=value` -> (label, method, options)."""
    label, sep, spec = text.partition("=")
    if not sep or not label.strip():
        raise SystemExit(f"--variant '{text}' is not of the form LABEL=METHOD:key=value;key=value")
    name, _, rest = spec.partition(":")
    options: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(";"))):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--variant '{text}': option '{item}' is not of the form key=value")
        options[key.strip()] = parse_value(value)
    return label.strip(), name.strip(), options


def measure_variants(
    variants: list[tuple[str, str, dict[str, Any]]], s: Setup, repeats: int, baseline: str
) -> dict[str, Any]:
    """Ours of the baseline and of every variant, interleaved repeat by repeat; best of the repeats,
    in wall-clock and in process CPU seconds (`time_both`)."""
    steps = {"baseline": make_ours(baseline, s), **{label: make_ours(name, s, opts) for label, name, opts in variants}}
    for fn in steps.values():
        fn()  # warm-up
    wall: dict[str, list[float]] = {label: [] for label in steps}
    cpu: dict[str, list[float]] = {label: [] for label in steps}
    for _ in range(repeats):
        for label, fn in steps.items():
            w, c = time_both(fn, s.device)
            wall[label].append(w)
            cpu[label].append(c)
    baseline_s, baseline_cpu_s = min(wall["baseline"]), min(cpu["baseline"])
    rows: dict[str, Any] = {}
    for label, name, opts in variants:
        with peak_memory(s.device) as memory:
            steps[label]()
        best, best_cpu = min(wall[label]), min(cpu[label])
        rows[label] = {
            "method": name,
            "options": opts,
            "ours_s": best,
            "ours_median_s": statistics.median(wall[label]),
            "ours_times_s": wall[label],
            "ours_cpu_s": best_cpu,
            "ours_cpu_times_s": cpu[label],
            "over_baseline": best / baseline_s,
            "over_baseline_cpu": best_cpu / baseline_cpu_s,
            "meets_target": best_cpu / baseline_cpu_s <= TARGET_VARIANT,
            "ours_images_per_s": s.batch / best,
            "ours_peak_mib": memory.get("peak_mib"),
        }
        print(
            f"{label:24s} ours {best:.3f}s wall {best_cpu:.3f}s cpu  {baseline} {baseline_s:.3f}s wall "
            f"{baseline_cpu_s:.3f}s cpu  ratio {best / baseline_s:.2f} wall {best_cpu / baseline_cpu_s:.2f} cpu",
            flush=True,
        )
    return {
        "baseline": baseline,
        "baseline_s": baseline_s,
        "baseline_cpu_s": baseline_cpu_s,
        "baseline_times_s": wall["baseline"],
        "baseline_cpu_times_s": cpu["baseline"],
        "target": TARGET_VARIANT,
        "rows": rows,
    }
