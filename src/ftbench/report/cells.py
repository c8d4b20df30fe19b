"""How the tables write a number: every section writes an estimate, an interval or a missing value
the same way."""

from __future__ import annotations

import numpy as np


def fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def with_interval(q: dict) -> str:
    """A point estimate and its 95% interval (quality.estimate's): `12.34 [11.00, 13.50]`."""
    return f"{q['value']:.2f} [{q['ci_low']:.2f}, {q['ci_high']:.2f}]"


def signed_interval(d: dict) -> str:
    """The 95% interval of a difference or margin, signed so that which side of 0 shows: `[-1.20, +3.40]`."""
    return f"[{d['lo']:+.2f}, {d['hi']:+.2f}]"


def over_seeds(e: dict, dataset: str, metric: str) -> str:
    """`mean ± sd` of a metric over one model's runs on a dataset (sd 0 for a single run), from its
    metrics/eval file; `-` for exact match on a dataset without final answers."""
    runs = [v for k, v in e["runs"].items() if k.split("/")[0] == dataset]
    if metric not in runs[0]:
        return "-"
    values = np.array([v[metric] for v in runs])
    return f"{values.mean():.2f} ± {values.std(ddof=1) if len(values) > 1 else 0:.2f}"
