"""The report over a grid's seeds: DVC experiments that ran the same params but their `seeds` (queued with
`dvc exp run --queue -S seeds=[N]`, run by `dvc queue start`), reported as one study of all their seeds.

Each experiment's params.yaml and metrics/ (git-tracked and DVC-cached files alike, read from the
repository at the experiment's commit through DVC's own file system) are merged by tools/merge_studies.py,
then `python -m ftbench report` runs on the merged study with the base model's tokenizer. OUT holds
params.yaml and metrics/, the report's files among them; it appears whole or not at all.

usage: python tools/grid_report.py OUT EXPERIMENT [EXPERIMENT ...]   (run in the project's repository)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from dvc.api import DVCFileSystem
from dvc.scm import RevError

from ftbench.common.atomic import atomic_path

MERGE = Path(__file__).with_name("merge_studies.py")
TOKENIZER = "models/base/tokenizer.json"  # all the report reads of the base model


def fail(message: str) -> None:
    print(f"grid_report: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def export(experiment: str, folder: Path) -> None:
    """The experiment's params.yaml and metrics/ into `folder`."""
    fs = DVCFileSystem(".", rev=experiment)  # opens the revision lazily, at the first read
    try:
        fs.get_file("params.yaml", str(folder / "params.yaml"))
    except RevError:
        fail(f"no experiment or revision '{experiment}' here; `dvc exp list` names them")
    fs.get("metrics", str(folder / "metrics"), recursive=True)


def run(command: list, cwd: Path | None = None) -> None:
    """A step of the merge: its own error lines are the user's, and its exit status this one's."""
    done = subprocess.run(command, cwd=cwd)
    if done.returncode:
        raise SystemExit(done.returncode)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path, help="the grid's study, written here (must not exist)")
    ap.add_argument("experiments", nargs="+", help="DVC experiments (names or revisions) of disjoint seeds")
    args = ap.parse_args()
    if args.out.exists():
        fail(f"{args.out} exists; name a new folder")
    with tempfile.TemporaryDirectory() as tmp:
        studies = [Path(tmp) / f"study{i}" for i in range(len(args.experiments))]
        for experiment, folder in zip(args.experiments, studies, strict=True):
            export(experiment, folder)
        merged = Path(tmp) / "merged"
        run([sys.executable, MERGE, str(merged), *map(str, studies)])  # merge_studies says what differs
        with atomic_path(args.out, is_dir=True) as out:
            shutil.copytree(merged, out, dirs_exist_ok=True)
            (out / TOKENIZER).parent.mkdir(parents=True)
            DVCFileSystem(".", rev=args.experiments[0]).get_file(TOKENIZER, str(out / TOKENIZER))
            run([sys.executable, "-m", "ftbench", "report"], cwd=out)
            shutil.rmtree(out / "models")
    print(f"grid_report: {args.out}/metrics/report.md over {len(args.experiments)} experiments")


if __name__ == "__main__":
    main()
