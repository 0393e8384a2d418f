"""Record a command's terminal output with the time of every line, and the longest silence.

    python benchmarks/record_session.py --out benchmarks/results/demo_session.txt -- robustdistill demo --size tiny

The command runs with its output on a pipe (as in a log file or CI, where the progress bars print a
plain line every few seconds instead of redrawing), stdout and stderr merged. Every line is written
as `[+SECONDS] line`; the file starts with the load average and ends with the total time and the
longest gap between two lines (or between the last line and the exit), and the script exits
non-zero when that gap exceeds `--max-gap` seconds.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path


def record(command: list[str], out: Path, max_gap: float) -> int:
    env = {**os.environ, "COLUMNS": "110", "PYTHONUNBUFFERED": "1"}
    start = last = time.monotonic()
    worst, worst_at = 0.0, 0.0
    lines = [f"# load average at the start (1, 5, 15 min): {', '.join(f'{v:.1f}' for v in os.getloadavg())}"]
    lines.append(f"$ {shlex.join(command)}")
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            now = time.monotonic()
            if now - last > worst:
                worst, worst_at = now - last, last - start
            last = now
            lines.append(f"[+{now - start:7.1f}s] {line.rstrip()}")
            print(lines[-1], flush=True)
        code = process.wait()
    end = time.monotonic()
    if end - last > worst:  # the silence between the last line and the exit counts too
        worst, worst_at = end - last, last - start
    total = end - start
    lines.append(
        f"# exit {code}, {total:.1f} s in all, {len(lines) - 2} lines; longest gap without output "
        f"{worst:.1f} s (after +{worst_at:.1f} s); load average at the end "
        + ", ".join(f"{v:.1f}" for v in os.getloadavg())
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(lines[-1])
    if code != 0:
        return code
    return 0 if worst <= max_gap else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="where to write the timestamped session")
    parser.add_argument("--max-gap", type=float, default=10.0, help="fail when a silence is longer (seconds)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to record after --")
    return record(command, args.out, args.max_gap)


if __name__ == "__main__":
    sys.exit(main())
