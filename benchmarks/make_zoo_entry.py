"""Turn a finished training run and its evaluation records into a model-zoo entry.

    python benchmarks/make_zoo_entry.py --run-dir /work/bench/zoo-teacher --name fashion-mnist-pgd-at \
        --train-command "robustdistill train-teacher ..." --commit 3ec57ce \
        --evaluation full.json "robustdistill evaluate ..." --evaluation aa.json "robustdistill evaluate ..."

Copies `model.safetensors`, `model.json` and `config.yaml` into `src/robustdistill/zoo/<name>/` and
writes `record.json`; every evaluation record must be of the very weights copied (same SHA-256).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from robustdistill.evaluate import write_record
from robustdistill.models import zoo
from robustdistill.train import read_metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--description", default="")
    parser.add_argument("--train-command", required=True)
    parser.add_argument("--commit", required=True, help="the commit the training ran at")
    parser.add_argument("--note", default="", help="anything a user needs to rerun the command exactly")
    parser.add_argument("--evaluation", nargs=2, action="append", metavar=("RECORD", "COMMAND"), default=[])
    args = parser.parse_args(argv)

    spec = json.loads((args.run_dir / "model.json").read_text())
    config = (args.run_dir / "config.yaml").read_text()
    evaluations = []
    for path, command in args.evaluation:
        record = json.loads(Path(path).read_text())
        if record.get("checkpoint_sha256") != spec["sha256"]:
            raise SystemExit(f"{path} was not measured on {args.run_dir / 'model.safetensors'} (SHA-256 differs)")
        record.pop("per_sample_worst_case", None)
        evaluations.append({**record, "command": command})
    epochs = [r for r in read_metrics(args.run_dir) if r.get("kind") == "epoch"]
    target = zoo.ROOT / args.name
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
