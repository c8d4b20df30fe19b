"""The report's plots, as PNG for report.html: quality against memory and against wall time, one point
per evaluated model, and each training stage's loss curve."""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping

import numpy as np

from ftbench.common import paths
from ftbench.report.render import Figure
from ftbench.report.study import HEADLINE, LABELS


def _pyplot():
    """matplotlib's pyplot on the Agg backend: files only, no display (imported here: only the report
    draws)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def pareto_figures(base: Mapping, points: list[dict]) -> list[Figure]:
    """Quality against memory, then against wall time (ranking.pareto_points), with the `base` model's
    metrics/eval numbers as a line."""
    plt = _pyplot()
    axes_x = {f"{points[0]['memory']} GiB": "peak_memory_gib", "wall s per run": "wall_s"}
    figures = []
    for xlabel, key in axes_x.items():
        fig, axs = plt.subplots(1, 2, figsize=(9, 3.4))
        for ax, metric in zip(axs, HEADLINE, strict=True):
            for point in points:
                ax.scatter(point[key], point[metric])
                ax.annotate(
                    point["model"], (point[key], point[metric]), textcoords="offset points", xytext=(4, 4)
                )
            ax.axhline(base[metric], color="grey", linestyle="--", linewidth=1, label="base")
            ax.set(xlabel=xlabel, ylabel=LABELS[metric])
            ax.legend(loc="best")
        figures.append(Figure(f"Quality vs {xlabel} (up and left is better)", _png(fig)))
        plt.close(fig)
    return figures


def loss_figure(methods: Iterable[str]) -> Figure:
    """The training loss of each of the `methods`' runs, from metrics/curves."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.6))
    for name in methods:
        for path in sorted((paths.CURVES / name).glob("*.csv")):
            data = np.genfromtxt(path, delimiter=",", names=True, ndmin=1)
            ax.plot(data["step"], data["loss"], marker=".", label=f"train-{name} {path.stem}")
    ax.set(xlabel="optimizer step", ylabel="training loss (answer tokens)")
    ax.legend(fontsize=8)
    png = _png(fig)
    plt.close(fig)
    return Figure("Training loss per stage", png)
