"""Generic plots of training runs (matplotlib, Agg backend).

Every function takes ``runs``: a mapping ``label -> list of histories``, one history per seed, where a history is a
list of per-step metric dicts (``{"step": 3, "reward": 0.4, "dipo/frac_easy": 0.1, ...}``), e.g. TRL's
``trainer.state.log_history``. Curves show the mean over seeds with a band of ±1 standard deviation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Imported inside functions: matplotlib (after choosing the Agg backend), only when plotting.

History = Sequence[Mapping[str, float]]


def pyplot() -> Any:
    """matplotlib.pyplot on the non-interactive Agg backend (imported lazily: plotting is optional)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path | str, dpi: int | None = None) -> Path:
    """Lay out, write (creating the folder) and close a matplotlib figure; returns the path."""
    plt = pyplot()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _finite(value: object) -> float:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


def series(histories: Sequence[History], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps and mean/std over histories of metric ``key`` (NaN-aware; steps where no seed has it are dropped)."""
    by_step: dict[float, list[float]] = {}
    for hist in histories:
        for row in hist:
            if key in row and "step" in row:
                by_step.setdefault(float(row["step"]), []).append(_finite(row[key]))
    steps, means, stds = [], [], []
    for step in sorted(by_step):
        vals = np.array(by_step[step], dtype=float)
        vals = vals[np.isfinite(vals)]
        if vals.size:
            steps.append(step)
            means.append(vals.mean())
            stds.append(vals.std(ddof=1) if vals.size > 1 else 0.0)
    return np.array(steps), np.array(means), np.array(stds)


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (window 1 = unchanged)."""
    if window <= 1 or values.size == 0:
        return values
    out = np.empty_like(values)
    for i in range(values.size):
        out[i] = values[max(0, i - window + 1) : i + 1].mean()
    return out


def plot_metric(
    runs: Mapping[str, Sequence[History]],
    key: str,
    path: Path | str,
    title: str | None = None,
    ylabel: str | None = None,
    smoothing: int = 1,
    logy: bool = False,
) -> Path | None:
    """One line per label of metric ``key`` over steps; returns the file, or ``None`` if no run has the metric."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.4), dpi=90)
    drawn = False
    for label, histories in runs.items():
        steps, mean, std = series(histories, key)
        if steps.size == 0:
            continue
        mean, std = smooth(mean, smoothing), smooth(std, smoothing)
        (line,) = ax.plot(steps, mean, label=label, lw=1.5)
        if len(histories) > 1:
            ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.15, lw=0)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel or key)
    ax.set_title(title or key, fontsize=10)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_panels(
    runs: Mapping[str, Sequence[History]],
    keys: Sequence[str],
    path: Path | str,
    title: str,
    names: Sequence[str] | None = None,
    smoothing: int = 1,
) -> Path | None:
    """One panel per metric in ``keys`` (e.g. the group fractions or quadrant fractions), one line per label."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(3.3 * len(keys), 3.1), dpi=90, sharey=True, squeeze=False)
    drawn = False
    for ax, key, name in zip(axes[0], keys, names or keys, strict=True):
        for label, histories in runs.items():
            steps, mean, _ = series(histories, key)
            if steps.size:
                ax.plot(steps, smooth(mean, smoothing), label=label, lw=1.4)
                drawn = True
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if not drawn:
        plt.close(fig)
        return None
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    return save_figure(fig, path)


def plot_ppl_distributions(
    samples: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]],
    path: Path | str,
    title: str = "PPL of correct vs wrong responses",
    bins: int = 30,
    ncols: int = 2,
) -> Path | None:
    """Histograms of log-PPL for correct and wrong responses (the paper's Figure 1/7 in miniature).

    ``samples[panel][label]`` is a list of ``(log_ppl, reward)`` pairs; one panel per key (e.g. "dipo early",
    "dipo late"), laid out ``ncols`` per row; reward >= 0.5 counts as correct.
    """
    panels = [(name, by_label) for name, by_label in samples.items() if any(by_label.values())]
    if not panels:
        return None
    plt = pyplot()
    ncols = max(1, min(ncols, len(panels)))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.5 * nrows), dpi=80, squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (name, by_label) in zip(axes.flat, panels, strict=False):
        pairs = [p for lst in by_label.values() for p in lst]
        arr = np.array([p for p in pairs if math.isfinite(p[0])], dtype=float).reshape(-1, 2)
        if arr.size == 0:
            continue
        ppl = np.exp(arr[:, 0])
        ok = arr[:, 1] >= 0.5
        edges = np.linspace(1.0, max(1.01, float(np.quantile(ppl, 0.995))), bins)
        ax.hist(ppl[ok], bins=edges, alpha=0.6, label=f"correct ({ok.sum()})", density=True)
        ax.hist(ppl[~ok], bins=edges, alpha=0.6, label=f"wrong ({(~ok).sum()})", density=True)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("response PPL")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    return save_figure(fig, path)
