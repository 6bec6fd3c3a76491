"""What ``clframe tune`` prints and writes: per strategy the chosen configuration, its score on the tuning
stream, its mean ± std on the evaluation stream, the gap, and the ranking next to test-set tuning's."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any


def ranks(means: dict[str, float]) -> dict[str, int]:
    """1 for the best mean, 2 for the next, ..."""
    order = sorted(means, key=lambda s: -means[s])
    return {s: order.index(s) + 1 for s in means}


def fmt_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                     for k, v in params.items())


def table(rows: list[dict[str, Any]], protocol: str, reference: bool) -> str:
    """A markdown table of ``rows`` (one per strategy)."""
    head = ["strategy", "chosen", f"tuning score ({protocol})", "evaluation mean ± std", "gap", "rank"]
    if reference:
        head += ["test-tuned mean ± std", "rank (test-tuned)"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [r["strategy"], fmt_params(r["chosen"]), f"{r['tuning_score']:.3f}",
                 f"{r['eval_mean']:.3f} ± {r['eval_std']:.3f}", f"{r['gap']:+.3f}", str(r["rank"])]
        if reference:
            cells += [f"{r['test_mean']:.3f} ± {r['test_std']:.3f}", str(r["test_rank"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write(out: Path, protocol: str, rows: list[dict[str, Any]], settings: dict[str, Any], reference: bool) -> str:
    """Write ``<out>/<protocol>.json``, ``.csv`` and ``.md``; return the markdown."""
    md = table(rows, protocol, reference)
    same = reference and [r["strategy"] for r in sorted(rows, key=lambda r: r["rank"])] == \
        [r["strategy"] for r in sorted(rows, key=lambda r: r["test_rank"])]
    note = "" if not reference else (
        "\nThe ranking is the same as under test-set tuning." if same
        else "\nThe ranking differs from the one under test-set tuning.")
    text = f"{settings['describe']}\n\n{md}\n{note}\n"
    (out / f"{protocol}.md").write_text(text)
    (out / f"{protocol}.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=2))
    with open(out / f"{protocol}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[k for k in rows[0] if k != "chosen"] + ["chosen"])
        w.writeheader()
        for r in rows:
            w.writerow({**r, "chosen": json.dumps(r["chosen"])})
    return text
