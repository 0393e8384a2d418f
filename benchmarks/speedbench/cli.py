"""The command line of `benchmarks/speed.py`: parse the flags, measure, write the JSON record and its table."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

import speedbench
from robustdistill.config import parse_value
from robustdistill.evaluate import write_record
from robustdistill.utils import atomic_write_bytes
from speedbench.bench import CIFAR10_TRAIN, build_setup
from speedbench.measure import measure, measure_variants, parse_variant
from speedbench.passes import Passes
from speedbench.reference import METHODS
from speedbench.report import cpu_notes, machine_info, markdown


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(speedbench.__doc__ or "").split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--student", default=None, help="default: smallcnn on CPU, resnet-18 on GPU")
    parser.add_argument("--teacher", default=None, help="default: preact-resnet-18 on CPU, wrn-34-10 on GPU")
    parser.add_argument("--student-width", type=float, default=None)
    parser.add_argument("--teacher-width", type=float, default=None, help="channel multiplier of the teacher")
    parser.add_argument(
        "--student-opt", action="append", default=[], help="student model option key=value (repeatable)"
    )
    parser.add_argument("--steps", type=int, default=10, help="PGD steps K")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset")
    parser.add_argument("--image-shape", default=None, help="CxHxW (default 1x28x28 on CPU, 3x32x32 on GPU)")
    parser.add_argument("--num-samples", type=int, default=None, help="training-set size for gacd's memory bank")
    parser.add_argument("--epochs", type=int, default=200, help="epochs of the projected CIFAR-10 run (GPU)")
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast for ours on GPU")
    parser.add_argument(
        "--channels-last",
        choices=("auto", "on", "off"),
        default="auto",
        help="ours in channels_last (the run config's key; auto = on a GPU only)",
    )
    parser.add_argument(
        "--also-other-layout",
        action="store_true",
        help="also time ours with channels_last switched (on CPU: channels_last=on), interleaved",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON path; a .md table is written beside it")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="LABEL=METHOD:key=value;key=value, timed against --baseline (repeatable)",
    )
    parser.add_argument("--baseline", default="ard", help="the method the variants are timed against")
    parser.add_argument(
        "--add-to", type=Path, default=None, help="store the variants into this recorded JSON (and its .md)"
    )
    parser.add_argument("--note", action="append", default=[], help="a sentence for the variants' record")
    args = parser.parse_args(argv)
    gpu = args.device.startswith("cuda")
    args.student_opts = {k.strip(): parse_value(v) for k, _, v in (o.partition("=") for o in args.student_opt)}
    args.student = args.student or ("resnet-18" if gpu else "smallcnn")
    args.teacher = args.teacher or ("wrn-34-10" if gpu else "preact-resnet-18")
    args.num_samples = args.num_samples or (CIFAR10_TRAIN if gpu else 60_000)
    if gpu and not torch.cuda.is_available():
        parser.error("--device cuda but no GPU is available")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    s = build_setup(args)
    names = [n.strip() for n in args.methods.split(",") if n.strip()]
    variants = [parse_variant(text) for text in args.variant]
    unknown = sorted(set(names) - set(METHODS))
    if unknown:
        raise SystemExit(
            f"no reference loop for {', '.join(unknown)} (these have one: {', '.join(METHODS)}); "
            "time any registered method against --baseline with --variant LABEL=METHOD"
        )
    passes = Passes(s)
    command = "python benchmarks/speed.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    results: dict[str, Any] = {}
    started = time.perf_counter()
    for name in names:
        results[name] = measure(name, s, passes, args.repeats, variant=args.also_other_layout)
        r = results[name]
        print(
            f"{name:7s} ours {r['ours_s']:.3f}s  reference {r['reference_s']:.3f}s  "
            f"unavoidable {r['unavoidable_s']:.3f}s  ours/ref {r['ours_over_reference']:.2f}  "
            f"ours/unavoidable {r['ours_over_unavoidable']:.2f}",
            flush=True,
        )
    projections = {}
    if s.device.type == "cuda":
        steps_per_epoch = CIFAR10_TRAIN // s.batch
        for name in ("rslad", "paths"):
            if name in results:
                seconds = results[name]["ours_s"] * steps_per_epoch * args.epochs
                projections[name] = {"epochs": args.epochs, "steps_per_epoch": steps_per_epoch, "hours": seconds / 3600}
    if variants:
        section = {
            "command": command,
            "machine": machine_info(s.device),
            "settings": {
                "device": str(s.device),
                "batch": s.batch,
                "steps": s.steps,
                "repeats": args.repeats,
                "student": args.student,
                "student_opts": args.student_opts,
                "teacher": args.teacher,
                "teacher_width": args.teacher_width if args.teacher_width is not None else 1.0,
            },
            **measure_variants(variants, s, args.repeats, args.baseline),
            "notes": args.note,
        }
        if args.add_to is not None:
            recorded = json.loads(args.add_to.read_text())
            recorded.setdefault("variant_runs", []).append(section)
            write_record(recorded, args.add_to)
            atomic_write_bytes(args.add_to.with_suffix(".md"), markdown(recorded).encode())
            print(f"added the variants to {args.add_to} and {args.add_to.with_suffix('.md')}")
    notes = cpu_notes(args) if s.device.type == "cpu" else []
    result = {
        "command": command,
        "machine": machine_info(s.device),
        "settings": {
            "device": str(s.device),
            "batch": s.batch,
            "steps": s.steps,
            "student": args.student,
            "teacher": args.teacher,
            "teacher_width": args.teacher_width if args.teacher_width is not None else 1.0,
            "image_shape": "x".join(str(v) for v in s.x.shape[1:]),
            "repeats": args.repeats,
            "bf16": s.low_precision,
            "channels_last": s.channels_last,
            "eps": s.eps,
            "num_samples": s.num_samples,
        },
        "methods": results,
        "projections": projections,
        "seconds_total": time.perf_counter() - started,
        "notes": notes,
        **({"variant_runs": [section]} if variants else {}),
    }
    if args.out is not None:
        write_record(result, args.out)
        atomic_write_bytes(args.out.with_suffix(".md"), markdown(result).encode())
        print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return result
