"""The one matplotlib set-up of the library: figures are files, never windows.

    plt = pyplot()                       # matplotlib.pyplot on the non-interactive Agg backend
    fig, ax = plt.subplots()
    save_figure(fig, out / "curve.png")  # curve.png and curve.pdf (a vector copy for papers), then closed
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

FIGURE_FORMATS = ("png", "pdf")


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed; imported on first use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, *, dpi: int = 120) -> None:
    """Write ``fig`` as ``path`` in every format of :data:`FIGURE_FORMATS` and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in FIGURE_FORMATS:
        fig.savefig(path.with_suffix(f".{suffix}"), dpi=dpi)
    pyplot().close(fig)
