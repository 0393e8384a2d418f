"""Turn a finished training run and its evaluation records into a model-zoo entry.

    python benchmarks/make_zoo_entry.py --run-dir /work/bench/zoo-teacher --name fashion-mnist-pgd-at \
        --train-command "robustdistill train-teacher ..." --commit 3ec57ce \
        --evaluation full.json "robustdistill evaluate ..." --evaluation aa.json "robustdistill evaluate ..."

Copies `model.safetensors`, `model.json` and `config.yaml` into `src/robustdistill/zoo/<name>/` and
writes `record.json`; every evaluation record must be of the very weights copied (same SHA-256).
Without `--run-dir`, appends the evaluations to the existing entry `<name>` (the same SHA-256 check):

    python benchmarks/make_zoo_entry.py --name fashion-mnist-pgd-at --evaluation aa.json "robustdistill evaluate ..."
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from robustdistill.evaluate import write_record
from robustdistill.models import zoo
from robustdistill.train import read_metrics


def evaluation_records(pairs: list[list[str]], sha256: str, weights_dir: Path) -> list[dict[str, object]]:
    """The evaluation records of `pairs` (record path, command), each checked to be of the weights `sha256`."""
    evaluations = []
    for path, command in pairs:
        record = json.loads(Path(path).read_text())
        if record.get("checkpoint_sha256") != sha256:
            raise SystemExit(f"{path} was not measured on {weights_dir / 'model.safetensors'} (SHA-256 differs)")
        record.pop("per_sample_worst_case", None)
        evaluations.append({**record, "command": command})
    return evaluations


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, help="the finished run (omit to add evaluations to --name)")
    parser.add_argument("--name", required=True)
    parser.add_argument("--description", default="")
    parser.add_argument("--train-command", help="required with --run-dir")
    parser.add_argument("--commit", help="the commit the training ran at (required with --run-dir)")
    parser.add_argument("--note", default="", help="anything a user needs to rerun the command exactly")
    parser.add_argument("--evaluation", nargs=2, action="append", metavar=("RECORD", "COMMAND"), default=[])
    args = parser.parse_args(argv)
    target = zoo.ROOT / args.name
    if args.run_dir is None:
        existing = json.loads((target / zoo.RECORD).read_text())
        existing["evaluations"] += evaluation_records(args.evaluation, existing["sha256"], target)
        write_record(existing, target / zoo.RECORD)
        print(f"{len(args.evaluation)} evaluation(s) added to {target / zoo.RECORD}")
        return
    if not (args.train_command and args.commit):
        parser.error("--run-dir needs --train-command and --commit")

    spec = json.loads((args.run_dir / "model.json").read_text())
    config = (args.run_dir / "config.yaml").read_text()
    evaluations = evaluation_records(args.evaluation, spec["sha256"], args.run_dir)
    epochs = [r for r in read_metrics(args.run_dir) if r.get("kind") == "epoch"]
    target.mkdir(parents=True, exist_ok=True)
    for name in ("model.safetensors", "model.json", "config.yaml"):
        shutil.copyfile(args.run_dir / name, target / name)
    dataset = next(line.split(":", 1)[1].strip() for line in config.splitlines() if line.startswith("data:"))
    eps = float(next(line.split(":", 1)[1] for line in config.splitlines() if line.startswith("eps:")))
    record = {
        "name": args.name,
        "description": args.description,
        "arch": spec["arch"],
        "dataset": dataset,
        "eps": eps,
        "sha256": spec["sha256"],
        "training": {
            "command": args.train_command,
            "commit": args.commit,
            "note": args.note,
            "epochs": len(epochs),
            "seconds": sum(r.get("seconds", 0.0) for r in epochs),
            "final_epoch": epochs[-1] if epochs else None,
        },
        "evaluations": evaluations,
    }
    write_record(record, target / zoo.RECORD)
    print(f"zoo entry written to {target}")


if __name__ == "__main__":
    main()
