"""The record's machine description and its markdown table (`speed_*.md`)."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
from typing import Any

import torch

from speedbench.bench import TARGET_REFERENCE, TARGET_UNAVOIDABLE


def variants_markdown(section: dict[str, Any], number: int) -> list[str]:
    """One run of configurations against a baseline (`variant_runs` of a record) as markdown lines."""
    settings, v = section["settings"], section
    cpu = "baseline_cpu_s" in v  # runs before `time_both` have wall-clock times only
    lines = [
        "",
        f"## Configurations against `{v['baseline']}`, run {number} (measured in one run)",
        "",
        f"Command: `{section['command']}`",
        "",
        f"Machine: {section['machine'].get('gpu') or section['machine']['cpu']}, {section['machine']['torch_threads']} "
        f"torch threads, load average at start {section['machine'].get('load_average_at_start')}. Student "
        f"`{settings['student']}` {settings['student_opts'] or ''}, teacher `{settings['teacher']}` (width "
        f"{settings['teacher_width']}), batch {settings['batch']}, PGD K = {settings['steps']}, "
        f"best of {settings['repeats']} interleaved repeats; `{v['baseline']}` took {v['baseline_s']:.3f} s/step "
        + (f"({v['baseline_cpu_s']:.3f} CPU s) " if cpu else "")
        + "in this run.",
        "",
    ]
    if cpu:
        lines += [
            f"| configuration | method | options | ours (s/step) | ours (CPU s/step) | over {v['baseline']}, wall | "
            f"over {v['baseline']}, CPU (target <= {v['target']}) | ours peak MiB |",
            "|---|---|---|---:|---:|---:|---:|---:|",
        ]
    else:
        lines += [
            f"| configuration | method | options | ours (s/step) | over {v['baseline']} (target <= {v['target']}) | "
            "ours img/s | ours peak MiB |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
    for label, r in v["rows"].items():
        options = "; ".join(f"{k}={val}" for k, val in r["options"].items()) or "(defaults)"
        ok = "yes" if r["meets_target"] else "**no**"
        if cpu:
            lines.append(
                f"| {label} | {r['method']} | `{options}` | {r['ours_s']:.3f} | {r['ours_cpu_s']:.3f} | "
                f"{r['over_baseline']:.2f} | {r['over_baseline_cpu']:.2f} ({ok}) | {r['ours_peak_mib']:.0f} |"
            )
        else:
            lines.append(
                f"| {label} | {r['method']} | `{options}` | {r['ours_s']:.3f} | {r['over_baseline']:.2f} ({ok}) | "
                f"{r['ours_images_per_s']:.0f} | {r['ours_peak_mib']:.0f} |"
            )
    return lines + ([""] + section["notes"] if section.get("notes") else [])


def machine_info(device: torch.device) -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        info["load_average_at_start"] = os.getloadavg()
    return info


def markdown(result: dict[str, Any]) -> str:
    settings, rows = result["settings"], result["methods"]
    lines = [
        f"# Training-step speed: {settings['device']}",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Machine: {result['machine'].get('gpu') or result['machine']['cpu']}, "
        f"{result['machine']['cpu_count']} CPU cores, {result['machine']['torch_threads']} torch threads, "
        f"torch {result['machine']['torch']}; load average at start {result['machine'].get('load_average_at_start')}.",
        "",
        f"Student `{settings['student']}`, teacher `{settings['teacher']}` (width {settings['teacher_width']}), "
        f"batch {settings['batch']} of synthetic {settings['image_shape']} tensors, PGD K = {settings['steps']}, "
        f"best of {settings['repeats']} interleaved repeats. Ours: "
        f"{'bf16 autocast' if settings['bf16'] else 'fp32'}, "
        f"{'channels_last' if settings['channels_last'] else 'NCHW'}; reference: fp32, NCHW, eager.",
        "",
        f"| method | ours (s/step) | reference (s/step) | unavoidable (s/step) | ours / reference "
        f"(target <= {TARGET_REFERENCE}) | ours / unavoidable (target <= {TARGET_UNAVOIDABLE}) | ours img/s | "
        "reference img/s | ours peak MiB | reference peak MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    variant = any("variant_s" in r for r in rows.values())
    if variant:
        layout = "channels_last" if not settings["channels_last"] else "NCHW"
        lines[-2] += f" ours with {layout} (s/step) | that / reference |"
        lines[-1] = lines[-1] + "---:|---:|"
    for name, r in rows.items():
        ok_ref = "yes" if r["meets_reference_target"] else "**no**"
        ok_un = "yes" if r["meets_unavoidable_target"] else "**no**"
        lines.append(
            f"| {name} | {r['ours_s']:.3f} | {r['reference_s']:.3f} | {r['unavoidable_s']:.3f} | "
            f"{r['ours_over_reference']:.2f} ({ok_ref}) | {r['ours_over_unavoidable']:.2f} ({ok_un}) | "
            f"{r['ours_images_per_s']:.0f} | {r['reference_images_per_s']:.0f} | "
            f"{r['ours_peak_mib']:.0f} | {r['reference_peak_mib']:.0f} |"
            + (f" {r['variant_s']:.3f} | {r['variant_over_reference']:.2f} |" if "variant_s" in r else "")
        )
    if result.get("projections"):
        lines += ["", "Projected wall-clock time of a full CIFAR-10 run (50,000 images, drop_last):", ""]
        for name, p in result["projections"].items():
            lines.append(f"- `{name}`: {p['epochs']} epochs x {p['steps_per_epoch']} steps -> {p['hours']:.1f} h")
    lines += ["", "Reference loops (see `benchmarks/speedbench/reference.py`):", ""]
    lines += [f"- `{name}`: {r['reference_style']}" for name, r in rows.items()]
    lines += ["", "Unavoidable passes per step (rows x count):", ""]
    for name, r in rows.items():
        parts = ", ".join(f"{p['pass']}({p['rows']}) x {p['count']}" for p in r["unavoidable_passes"])
        lines.append(f"- `{name}`: {parts}")
    if result.get("notes"):
        lines += ["", *result["notes"]]
    for number, section in enumerate(result.get("variant_runs", []), start=1):
        lines += variants_markdown(section, number)
    return "\n".join(lines) + "\n"


def cpu_notes(args: argparse.Namespace) -> list[str]:
    notes = [
        "CPU run: ours runs as `fit` does by default on a CPU (fp32, `amp: auto` and `channels_last: auto` "
        "switch bf16 and channels_last on for GPUs only), so in the main columns ours can beat the reference "
        "only by doing fewer network passes. No GPU was available: no GPU figures are recorded here.",
        "Peak memory on the CPU is the highest running sum of tensor allocations minus frees during one "
        "extra, untimed step, from `torch.profiler`'s memory events: the tensor memory the step needs above "
        "what was held before it (the CPU counterpart of `max_memory_allocated`; the process's resident size "
        "also holds the allocator's cached pages and the libraries). The profiler does not see the freeing of "
        "blocks allocated before the step (the previous step's gradients), so the figure can exceed the true "
        "peak by at most their size (the parameters' size, under 2 MiB for these models).",
    ]
    if args.also_other_layout:
        notes.append(
            "The last two columns time ours with `channels_last: on` (student, teachers and inputs in NHWC, "
            "oneDNN kernels), interleaved with the other columns."
        )
    return notes
