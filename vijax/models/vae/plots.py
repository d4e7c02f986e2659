"""Pictures of a VAE run: image grids (reconstructions, samples) and ELBO curves, as PNG files.

Drawn with matplotlib's Agg canvas (no pyplot, no display needed).
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["plot_curves", "plot_image_grid", "plot_reconstructions"]


def _figure(size):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _tile(images: np.ndarray, rows: int, cols: int, pad: int = 1) -> np.ndarray:
    """``rows × cols`` images ``(n, h, w)`` tiled into one array (gaps light grey)."""
    images = np.asarray(images, np.float64)
    n, h, w = images.shape
    canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad), 0.2)
    for index in range(min(n, rows * cols)):
        r, c = divmod(index, cols)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        canvas[top : top + h, left : left + w] = images[index]
    return canvas


def plot_image_grid(images, path: str | os.PathLike, *, cols: int = 10, title: str = "") -> None:
    """Grey images ``(n, h, w)`` in ``[0, 1]`` as a grid of ``cols`` columns (ink dark)."""
    images = np.asarray(images)
    rows = max(1, -(-images.shape[0] // cols))
    h, w = images.shape[1:3]
    figure = _figure((max(3.0, cols * w / 12), max(2.0, rows * h / 12 + 0.4)))
    axes = figure.add_subplot()
    axes.imshow(1.0 - _tile(images, rows, cols), cmap="gray", vmin=0.0, vmax=1.0)
    axes.set_axis_off()
    if title:
        axes.set_title(title)
    figure.savefig(path, dpi=100)


def plot_reconstructions(
    originals, reconstructions, path: str | os.PathLike, *, cols: int = 10, title: str = ""
) -> None:
    """Pairs of rows: inputs above, their reconstructions below."""
    originals, reconstructions = np.asarray(originals), np.asarray(reconstructions)
    n = min(originals.shape[0], reconstructions.shape[0])
    rows = []
    for start in range(0, n, cols):
        block = slice(start, min(start + cols, n))
        pad = cols - (block.stop - block.start)
        for part in (originals[block], reconstructions[block]):
            blank = np.zeros((pad, *part.shape[1:]))
            rows.append(np.concatenate([part, blank]) if pad else part)
    plot_image_grid(np.concatenate(rows), path, cols=cols, title=title)


def plot_curves(
    history,
    path: str | os.PathLike,
    *,
    validation: dict | None = None,
    title: str = "",
    window: int = 100,
) -> None:
    """The training objective per step (per datum), its running mean, and validation points.

    Args:
      history: per-step objective values (already per datum).
      path: the PNG to write.
      validation: ``{"step": steps, label: values, ...}``: curves drawn against ``steps``.
      title: the figure's title.
      window: the running mean's window.
    """
    history = np.asarray(history, np.float64)
    figure = _figure((7, 4))
    axes = figure.add_subplot()
    steps = np.arange(1, len(history) + 1)
    axes.plot(steps, history, color="tab:blue", alpha=0.3, linewidth=0.7, label="training (step)")
    if len(history):
        width = min(window, len(history))
        smooth = np.convolve(history, np.ones(width) / width, mode="valid")
        axes.plot(
            steps[width - 1 :], smooth, color="tab:blue", label=f"training ({width}-step mean)"
        )
    for index, (label, values) in enumerate((validation or {}).items()):
        if label == "step":
            continue
        axes.plot(
            validation["step"], values, "o-", color=f"C{index + 1}", markersize=3, label=label
        )
    if len(history) > 10:
        low, high = np.percentile(history, [5, 100])
        extra = [np.min(v) for k, v in (validation or {}).items() if k != "step" and len(v)]
        low = min([low, *extra])
        axes.set_ylim(low - 0.05 * (high - low), high + 0.05 * (high - low))
    axes.set(xlabel="step", ylabel="nats per image", title=title)
    axes.legend(loc="lower right")
    figure.savefig(path, dpi=110)
