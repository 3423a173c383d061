"""PV by book and currency as a PNG bar chart (needs matplotlib, an example-only dependency).

Kept apart from everything else: only ``python -m examples.mastr run --chart``
imports it, and a missing matplotlib is reported, not fatal.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from examples.mastr.aggregate import Aggregate, Key

__all__ = ["write_chart"]


def write_chart(
    aggregates: Mapping[Key, Aggregate], path: str | Path, reporting_currency: str
) -> Path:
    """Grouped bars: one group per book, one bar per currency, PV in the reporting currency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    books = sorted({book for book, _ in aggregates})
    currencies = sorted({ccy for _, ccy in aggregates})
    width = 0.8 / max(len(currencies), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(books)), 4.5))
    for j, ccy in enumerate(currencies):
        values = [
            aggregates[(b, ccy)].sums["pv_reporting"] / 1e6 if (b, ccy) in aggregates else 0.0
            for b in books
        ]
        ax.bar([i + j * width for i in range(len(books))], values, width, label=ccy)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(books))], books, rotation=20)
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_ylabel(f"PV (million {reporting_currency})")
    ax.set_title("PV by book and currency")
    ax.legend(title="currency")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
