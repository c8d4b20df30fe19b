"""Where each stage reads and writes; dvc.yaml names the same paths."""

from pathlib import Path

from ftbench.common.atomic import read_jsonl
from ftbench.common.errors import UserError

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


def split_rows(dataset: str, split: str) -> list[dict]:
    """The data stage's rows of one split (missing: one line saying to run the data stage)."""
    return read_jsonl(require(split_file(dataset, split)))


def writer(path: Path) -> str | None:
    """The dvc.yaml stage that writes `path` (data, model, train@<m>, merge@<m>), or None for a path no
    stage writes."""
    parts = Path(path).parts
    if parts[: len(PREPARED.parts)] == PREPARED.parts:
        return "data"
    if parts[: len(BASE.parts)] == BASE.parts:
        return "model"
    if parts[:2] == (MODELS.name, "merged") and len(parts) > 2:
        return f"merge@{parts[2]}"
    if parts[:1] == (MODELS.name,) and len(parts) > 1:
        return f"train@{parts[1]}"
    return None


def require(path: Path) -> Path:
    """`path`, which a stage reads; missing, one error line naming the stage that writes it. A stage run
    alone before its inputs exist would otherwise end in a traceback (transformers even takes a missing
    models/base for a model id on the hub)."""
    if Path(path).exists():
        return path
    stage = writer(path)
    if stage is None:
        raise UserError(f"{path} does not exist")
    raise UserError(f"{path} is missing; run the stage that writes it first: `dvc repro {stage}`")
