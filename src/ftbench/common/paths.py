"""Where each stage reads and writes; dvc.yaml names the same paths."""

from pathlib import Path

PREPARED = Path("data/prepared")
MODELS = Path("models")
BASE = MODELS / "base"
METRICS = Path("metrics")
DATA_SUMMARY = METRICS / "data.json"
EVAL = METRICS / "eval"
PREDICTIONS = METRICS / "predictions"
TRAIN = METRICS / "train"
CURVES = METRICS / "curves"
RESOURCES = METRICS / "resources"
REPORT = METRICS / "report.md"
REPORT_HTML = METRICS / "report.html"
REPORT_JSON = METRICS / "report.json"  # a DVC metric: intervals, differences, verdicts, costs
PARETO = METRICS / "pareto.json"  # quality and cost per method, for `dvc plots`


def model_dir(name: str) -> Path:
    """`base`, a method name, or `merged/<method>` -> its folder under models/."""
    return MODELS / name


def run_dir(name: str, run) -> Path:
    """models/<method>/<dataset>/seed<k> (or models/merged/<method>/...) for one run."""
    return MODELS / name / run.key


def predictions_file(name: str, run) -> Path:
    return PREDICTIONS / name / f"{run.key.replace('/', '-')}.jsonl"


def split_file(dataset: str, split: str) -> Path:
    return PREPARED / dataset / f"{split}.jsonl"
