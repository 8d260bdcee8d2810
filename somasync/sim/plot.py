"""Figures of a simulator result (needs matplotlib: ``pip install 'somasync[plot]'``)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from somasync.sim.metrics import SimResult

__all__ = ["plot", "require_matplotlib"]


def require_matplotlib() -> Any:
    """The ``matplotlib.pyplot`` module, with a non-interactive backend.

    Raises:
        ImportError: with the install command, when matplotlib is missing.
    """
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        raise ImportError("--plot needs matplotlib: pip install 'somasync[plot]'") from None
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def plot(result: SimResult, path: Path) -> None:
    """Reliability vs failed fraction (sweep results) and RMR over time, as one image."""
    pyplot = require_matplotlib()
    sweep = result.extra.get("sweep") or []
    panels = 2 if sweep else 1
    figure, axes = pyplot.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    column = 0
    if sweep:
        ax = axes[0][0]
        fractions = [p["fail_fraction"] for p in sweep]
        for key, label in (("after_mean", "eventual (mean)"), ("after_min", "eventual (min)"),
                           ("on_time_mean", "on time (mean)"),
                           ("immediate_on_time_mean", "right after the crash (mean)")):
            values = [p[key] if p[key] is not None else float("nan") for p in sweep]
            ax.plot(fractions, [100 * v for v in values], marker="o", label=label)
        ax.set_xlabel("failed fraction of nodes")
        ax.set_ylabel("reliability (%)")
        ax.set_title(f"{result.forwarding} / {result.overlay}, {result.nodes} nodes")
        ax.grid(alpha=0.3)
        ax.legend()
        column = 1
    ax = axes[0][column]
    series = result.rmr.get("series") or []
    if series:
        ax.plot([t for t, _ in series], [r for _, r in series], linewidth=0.8)
    ax.set_xlabel("send time (virtual s)")
    ax.set_ylabel("RMR")
    ax.set_title(f"redundancy per broadcast ({result.scenario})")
    ax.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    pyplot.close(figure)
