"""The README tables of the finance-credit example, from a run's result.json.

    python examples/finance_credit/credit_report.py runs/credit-secureboost/result.json

Prints, for the held-out shared customers: ROC-AUC and KS of the bank alone and of the bank with its partners
(and of the same engine on the joined table when the run has that baseline), the lift table of each by score
decile, the importance of each party (share of the total split gain) and the ten most important columns.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def report(doc: dict[str, Any]) -> str:
    label = doc["model"]["label_party"]
    joint, base = doc["metrics"]["test"], doc["baselines"]
    partners = [p for p in doc["parties"] if p != label]
    lines = [(f"Held-out shared customers: {joint['rows']:,} (default rate {joint['event_rate']:.1%}); "
              f"{doc['psi']['shared']:,} customers shared by all three, {doc['psi']['fit_rows']:,} to fit."), "",
             "| model | ROC-AUC | KS |", "|---|---|---|"]
    if "local" in base:
        b = base["local"][label]
        lines.append(f"| {label} alone | {b['roc_auc']:.4f} | {b['ks']:.4f} |")
    lines.append(f"| {label} + {' + '.join(partners)} (SecureBoost, {doc['privacy']['encryption']}) | "
                 f"{joint['roc_auc']:.4f} | {joint['ks']:.4f} |")
    if "centralized" in base:
        c = base["centralized"]
        lines.append(f"| same engine on the joined table | {c['roc_auc']:.4f} | {c['ks']:.4f} |")
    for name, table in (("the bank alone", doc["lift"].get(label)), ("the bank with its partners",
                                                                     doc["lift"]["joint"])):
        if not table:
            continue
        lines += ["", f"Lift table of {name} (deciles of the score, riskiest first):", "",
                  "| decile | customers | defaults | default rate | cumulative share of defaults | lift |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['decile']} | {r['rows']} | {r['events']} | {r['event_rate']:.1%} | "
                  f"{r['cumulative_capture']:.1%} | {r['lift']:.2f} |" for r in table]
    imp = doc["model"]["importance_by_party"]
    splits = doc["model"]["splits_by_party"]
    lines += ["", "| party | share of the gain | share of the splits |", "|---|---|---|"]
    lines += [f"| {p} | {imp[p]:.1%} | {splits[p]:.1%} |" for p in imp]
    top = sorted(doc["model"]["feature_importance"].items(), key=lambda kv: -kv[1])[:10]
    total = sum(doc["model"]["feature_importance"].values()) or 1.0
    lines += ["", "Top columns by gain: " + ", ".join(f"{k} {v / total:.1%}" for k, v in top)]
    m = doc["model"]
    setup = sum(v for k, v in m["bytes"].items() if k in ("sb_describe", "sb_public_key"))
    per_tree = (sum(m["bytes"].values()) - setup) / m["trees"]
    seconds = m["seconds"] if isinstance(m["seconds"], (int, float)) else sum(m["seconds"].values())
    lines += ["", (f"Fit: {m['trees']} trees in {seconds:.0f} s, {per_tree / 1e6:.2f} MB per tree "
                   f"(and {setup / 1e6:.1f} MB once: the bank's public context).")]
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(json.loads(Path(sys.argv[1]).read_text())))
