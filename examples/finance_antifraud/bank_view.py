"""A bank's view of fedx: from a DataFrame of its own transactions to a fraud model it scores with.

    python examples/finance_antifraud/bank_view.py [--bank bank_c] [--rounds N] [--out DIR]

1. The bank starts from a pandas DataFrame of its own payments (here from the seeded generator;
   in production, from its warehouse).
2. It joins the federation with the example's config, as shipped (encryption on). Here the other
   four banks are simulated on this machine; in a deployment each is a `fedx node` of its own
   (docs/deploy.md) and this bank's rows never leave its premises either way.
3. It receives the global model as a torch module, scores new payments with it, and flags those
   above the threshold that meets its alert budget (operating_points.yaml).
4. It reads its own audit ledger: every message that left the bank, its size and whether it was
   encrypted. Nothing else left.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

import fedx
from fedx.data.institutions import institution_tables
from fedx.privacy import audit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from alerts import alert_budgets, alerts_at, threshold_for_budget

MEANING = {
    "hello": "row counts, column names and kinds, key fingerprint",
    "levels": "names of the category levels seen (no counts)",
    "moments": "encrypted sums for shared scaling and imputation",
    "setup": "digests, and the untrained model drawn from the run's seed",
    "local_baseline": "metrics of the bank's own model, as score histograms (counts)",
    "train": "encrypted model updates",
    "evaluate": "score histograms on the bank's test rows (counts), for the metrics",
    "final": "score histograms of the final model (counts)",
}
"""What each kind of message a bank sends carries (see docs/security.md)."""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bank", default="bank_c", help="the bank whose view this is")
    ap.add_argument("--rounds", type=int, help="federated rounds (default: as in fedx.yaml)")
    ap.add_argument("--out", type=Path, default=Path("runs/bank-view"))
    args = ap.parse_args(argv)

    # 1. Our own payments, as our risk pipeline holds them. The generator makes all five banks'
    #    books at once (as the example's config names them); each is kept apart below, as it would be.
    overrides = {"report.baselines": []} | ({"federation.rounds": args.rounds} if args.rounds else {})
    cfg = fedx.load_config(HERE / "fedx.yaml", overrides=overrides)
    books = {name: df.reset_index(drop=True) for name, df in institution_tables(cfg).items()}
    if args.bank not in books:
        raise SystemExit(f"--bank: expected one of {', '.join(sorted(books))}")
    ours = books[args.bank]
    # The most recent week is "today's" traffic, to be scored; the federation learns from the rest.
    recent = ours["day"] >= ours["day"].max() - 6
    history, today = ours[~recent], ours[recent]
    print(f"{args.bank}: {len(history):,} past payments ({history['is_fraud'].mean():.2%} fraud) to learn from, "
          f"{len(today):,} payments this week to score")

    # 2. Join the federation: the example's config as shipped, our table among the banks'.
    tables = {name: (history if name == args.bank else df) for name, df in books.items()}
    result = fedx.run(cfg, args.out, tables=tables, force=True)

    # 3. The global model arrives with the shared preprocessing, as a scikit-learn style estimator.
    model = fedx.load_model(result.model["paths"][args.bank])
    assert isinstance(model.module_, torch.nn.Module)
    budget = alert_budgets()[args.bank]
    threshold = threshold_for_budget(model.predict_proba(history)[:, 1], budget)
    scores = model.predict_proba(today)[:, 1]
    week = alerts_at(today["is_fraud"].to_numpy(), scores, threshold)
    print(f"\nThis week: {week.alerts} alerts ({week.alert_rate:.2%} of payments, budget {budget:.2%}); "
          f"{week.frauds_caught} of {int(today['is_fraud'].sum())} frauds caught, precision "
          f"{week.precision if week.precision is None else round(week.precision, 2)}, recall {week.recall:.2f}")
    top = today.assign(score=scores).nlargest(5, "score")[["tx_datetime", "amount", "channel", "mcc_group", "score"]]
    print("Highest-scoring payments this week:\n" + top.to_string(index=False))

    # 4. What left the bank: its own hash-chained ledger of every message it sent.
    ledger = Path(result.out_dir) / "institutions" / args.bank / "ledger.jsonl"
    s = audit.summary(ledger)
    print(f"\nWhat left {args.bank} (ledger {ledger}, chain verified: {s['verified']}):")
    print(f"  {s['entries']} messages, {s['bytes']:,} bytes, rounds {s['rounds'][0]}-{s['rounds'][-1]}")
    for kind, row in s["by_kind"].items():
        print(f"  {kind:>14}: {row['messages']:3d} messages, {row['bytes']:>10,} bytes  {MEANING.get(kind, '')}")
    print("  checks: " + ", ".join(f"{k} ×{n}" for k, n in s["checks"].items()))
    entries = [json.loads(line) for line in ledger.read_text().splitlines() if line.strip()]
    unknown = sorted({e["kind"] for e in entries} - set(MEANING))
    readable = [e["seq"] for e in entries if e["kind"] in ("train", "moments") and not e["checks"].get("encrypted")]
    if not s["verified"] or unknown or readable:
        raise SystemExit(f"the ledger does not show what this script promises: chain verified {s['verified']}, "
                         f"unknown kinds {unknown}, unencrypted updates or moments at entries {readable}")
    print("  Every update and moment sum left encrypted, and no other kind of message left:\n"
          "  no payment, card number or readable model update is among them.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
