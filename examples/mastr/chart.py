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
    fig, ax = plt.subplots(figsize=(max(8.0, 1.5 * len(books) + 2.0), 5.0))
    ax.set_axisbelow(True)
    ax.grid(axis="y", color="0.88", linewidth=0.8)
    for j, ccy in enumerate(currencies):
        values = [
            aggregates[(b, ccy)].sums["pv_reporting"] / 1e6 if (b, ccy) in aggregates else 0.0
            for b in books
        ]
        offsets = [i - 0.4 + (j + 0.5) * width for i in range(len(books))]
        ax.bar(offsets, values, width * 0.92, label=ccy)
    ax.set_xticks(range(len(books)), books)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_ylabel(f"PV (million {reporting_currency})")
    count = sum(a.count for a in aggregates.values())
    total = sum(a.sums["pv_reporting"] for a in aggregates.values()) / 1e6
    ax.set_title(
        f"PV by book and currency: {count:,} positions, "
        f"total {total:,.1f} million {reporting_currency}"
    )
    ax.legend(title="currency", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
