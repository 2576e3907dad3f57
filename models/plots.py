"""Plots the families' trainings hand to the training job (logged under the run's plots/)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def feature_importance(booster, title: str, path: Path, top: int = 25, height: float = 7) -> Path:
    """The `top` features of a LightGBM booster by their share of the total gain, as a bar chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gain = pd.Series(booster.feature_importance("gain"), index=booster.feature_name()).sort_values().tail(top)
    fig, ax = plt.subplots(figsize=(7, height))
    ax.barh(gain.index, gain.to_numpy() / max(gain.sum(), 1e-12))
    ax.set_xlabel("share of total gain")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
