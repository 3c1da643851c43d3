"""The anti-fraud example's results table and per-bank plot, generated from a run's result.json.

    python examples/finance_antifraud/make_table.py RUN_DIR [--plain PLAIN_RUN_DIR] [--readme README.md]

Writes RUN_DIR/table.md and RUN_DIR/per_bank.png and prints the table. With ``--plain`` (the same
config run with ``security.encryption=none``) it adds the cost of encryption: bytes and seconds
per round against plaintext, and the difference in AUPRC. With ``--readme`` it also rewrites the
generated block of that README and puts the plot beside it. Nothing in the table is typed by hand.

The operating points (precision and recall at each bank's alert budget) are computed at each bank
from its own copy of the federated model and its own rows, as the bank would.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from alerts import alert_budgets, alerts_at, threshold_for_budget

ARMS = (("local", "local only"), ("federated", "federated"), ("centralized", "pooled"))
METRICS = (("auprc", "AUPRC"), ("roc_auc", "ROC-AUC"), ("recall_at_1pct_fpr", "recall @1% FPR"))
BEGIN, END = "<!-- BEGIN GENERATED: results -->", "<!-- END GENERATED: results -->"


def load(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "result.json"
    if not path.exists():
        raise SystemExit(f"{path}: not found; run `fedx run examples/finance_antifraud/fedx.yaml --out {run_dir}` first")
    return json.loads(path.read_text())


def _f(x: Any, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}f}"


def per_bank_table(r: dict[str, Any]) -> str:
    comp = r["comparison"]
    banks = sorted(comp)
    head = "| bank | test rows | fraud rate | " + " | ".join(
        f"{m} {a}" for _, m in METRICS for _, a in ARMS) + " | federated beats local |"
    rows = [head, "|" + "---|" * (4 + len(METRICS) * len(ARMS))]
    for b in banks:
        c = comp[b]
        cells = [_f(c.get(arm, {}).get(key)) for key, _ in METRICS for arm, _ in ARMS]
        wins = c["federated"]["auprc"] > c["local"]["auprc"]
        rows.append(f"| {b} | {int(c['federated']['n']):,} | {c['federated']['base_rate']:.2%} | "
                    + " | ".join(cells) + f" | {'yes' if wins else '**no**'} |")
    allm = {"federated": r["metrics"], "centralized": r["baselines"].get("centralized", {}),
            "local": r["baselines"].get("local_combined", {})}
    cells = [_f(allm[arm].get(key)) for key, _ in METRICS for arm, _ in ARMS]
    rows.append(f"| **all banks** | {int(r['metrics']['n']):,} | {r['metrics']['base_rate']:.2%} | "
                + " | ".join(cells) + " | |")
    return "\n".join(rows)


def criteria(r: dict[str, Any], plain: dict[str, Any] | None) -> list[tuple[str, bool]]:
    fed, cen = r["metrics"]["auprc"], r["baselines"]["centralized"]["auprc"]
    comp = r["comparison"]
    losers = [b for b in sorted(comp) if not comp[b]["federated"]["auprc"] > comp[b]["local"]["auprc"]]
    out = [(f"federated AUPRC {fed:.4f} ≥ 0.97 × pooled AUPRC {cen:.4f} (= {0.97 * cen:.4f})", fed >= 0.97 * cen),
           ("every bank's federated model beats its local-only model in AUPRC"
            + (f" (not: {', '.join(losers)})" if losers else ""), not losers)]
    if plain is not None:
        d = abs(fed - plain["metrics"]["auprc"])
        out.append(((f"encrypted AUPRC {fed:.4f} within 0.005 of plaintext {plain['metrics']['auprc']:.4f} "
                    f"(difference {d:.4f})"), d <= 0.005))
    return out


def he_cost(r: dict[str, Any], plain: dict[str, Any] | None) -> str:
    def med(res: dict[str, Any], key: str) -> float:
        return statistics.median(h[key] for h in res["history"])

    enc = r["config"]["security"]["encryption"]
    rows = ["| | " + enc + (" | plaintext | ratio |" if plain else " |"),
            "|---|---|" + ("---|---|" if plain else "")]
    for key, label, fmt in (("bytes_up", "bytes up per round (all banks)", "{:,.0f}"),
                            ("bytes_down", "bytes down per round (all banks)", "{:,.0f}"),
                            ("update_bytes_per_param", "update bytes per parameter", "{:.2f}"),
                            ("seconds", "seconds per round (median)", "{:.2f}")):
        if key not in r["history"][0]:
            continue
        e = med(r, key)
        line = f"| {label} | {fmt.format(e)} |"
        if plain:
            p = med(plain, key)
            line += f" {fmt.format(p)} | {e / p:.2f}× |" if p else " – | – |"
        rows.append(line)
    return "\n".join(rows)


def scenario_table(tables: dict[str, Any]) -> str:
    """Each bank's data: size, fraud rate, and which fraud scenarios make its fraud."""
    from fedx.data.synthetic.transactions import SCENARIOS

    names = SCENARIOS[1:]
    rows = ["| bank | payments | cards | fraud rate | " + " | ".join(n.replace("_", " ") for n in names) + " |",
            "|---|---|---|---|" + "---|" * len(names)]
    for bank in sorted(tables):
        df = tables[bank]
        frauds = df[df["scenario"] > 0]
        shares = [(frauds["scenario"] == i + 1).mean() if len(frauds) else 0.0 for i in range(len(names))]
        rows.append(f"| {bank} | {len(df):,} | {df['customer_id'].nunique():,} | {df['is_fraud'].mean():.2%} | "
                    + " | ".join(f"{s:.0%} ({round(s * len(frauds))})" for s in shares) + " |")
    return "\n".join(rows)


def operating_points(r: dict[str, Any], run_dir: Path, tables: dict[str, Any]) -> str:
    """Precision and recall at each bank's alert budget, computed at the bank from its own rows."""
    import fedx
    from fedx.data.local import local_split
    from fedx.tasks import get_task

    cfg = _config(r)
    task = get_task(cfg.task)
    budgets = alert_budgets()
    rows = ["| bank | alert budget | threshold | alerts (test) | precision | recall | frauds caught / all |",
            "|---|---|---|---|---|---|---|"]
    for bank in sorted(r["comparison"]):
        if bank not in budgets:
            raise SystemExit(f"operating_points.yaml: no alert budget for {bank}")
        train, test = local_split(tables[bank], cfg, bank, task)
        model = fedx.load_model(_model_path(r, run_dir, bank))
        thr = threshold_for_budget(model.predict_proba(train)[:, 1], budgets[bank])
        a = alerts_at(test[cfg.data.target].to_numpy(), model.predict_proba(test)[:, 1], thr)
        rows.append(f"| {bank} | {budgets[bank]:.2%} | {a.threshold:.3f} | {a.alerts:,} ({a.alert_rate:.2%}) | "
                    f"{_f(a.precision, 2)} | {_f(a.recall, 2)} | {a.frauds_caught} / "
                    f"{int(test[cfg.data.target].sum())} |")
    return "\n".join(rows)


def _config(r: dict[str, Any]) -> Any:
    from fedx.config import config_from_dict

    return config_from_dict(r["config"], base_dir=HERE)


def _model_path(r: dict[str, Any], run_dir: Path, bank: str) -> Path:
    p = Path(r["model"]["paths"][bank])
    return p if p.exists() else run_dir / "institutions" / bank / "model.pt"


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    comp = r["comparison"]
    banks = sorted(comp)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (key, label) in zip(axes, (METRICS[0], METRICS[2])):
        x = np.arange(len(banks))
        for i, (arm, name) in enumerate(ARMS):
            vals = [comp[b].get(arm, {}).get(key) or 0.0 for b in banks]
            ax.bar(x + (i - 1) * 0.27, vals, 0.27, label=name)
        ax.set_xticks(x, [f"{b}\n{comp[b]['federated']['base_rate']:.1%} fraud" for b in banks])
        ax.set_ylabel(label)
        ax.set_ylim(0, 1)
        ax.set_title(f"{label} on each bank's own test split")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(r: dict[str, Any], plain: dict[str, Any] | None, run_dir: Path) -> str:
    from fedx.data.institutions import institution_tables

    tables = institution_tables(_config(r))
    fed = r["config"]["federation"]
    parts = [(f"Run: `{r['config']['name']}`, {fed['aggregator']}, {fed['rounds']} rounds, encryption "
             f"`{r['config']['security']['encryption']}`, written {r['written']} by fedx {r['fedx_version']}."),
             "", "**The banks' data** (share of each bank's frauds from each scenario, and their number):", "",
             scenario_table(tables), "", ("**Per bank** (each bank's own test split; *pooled* is a model trained on all banks' "
             "training rows together, which only a simulation can do):"), "", per_bank_table(r), "",
             "**Targets**", ""]
    parts += [f"- {'✅' if ok else '❌'} {text}" for text, ok in criteria(r, plain)]
    parts += ["", "**Cost of encryption** (from the runs' history)" + ("" if plain else
              " — run with `--plain` for the plaintext comparison") + ":", "", he_cost(r, plain), "",
              ("**Operating points**: each bank flags the share of payments its investigators can review "
              "(`operating_points.yaml`), with the threshold set on its own training rows:"), "",
              operating_points(r, run_dir, tables), ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--plain", type=Path, help="the same config run in plaintext, for the cost of encryption")
    ap.add_argument("--readme", type=Path, help="rewrite this README's generated results block")
    args = ap.parse_args(argv)
    r = load(args.run_dir)
    plain = load(args.plain) if args.plain else None
    text = markdown(r, plain, args.run_dir)
    (args.run_dir / "table.md").write_text(text)
    png = args.run_dir / "per_bank.png"
    plot(r, png)
    print(text)
    print(f"wrote {args.run_dir / 'table.md'} and {png}")
    if args.readme:
        readme = args.readme.read_text()
        if BEGIN not in readme or END not in readme:
            raise SystemExit(f"{args.readme}: lacks the markers {BEGIN} ... {END}")
        block = f"{BEGIN}\n{text}\n![per-bank AUPRC and recall](per_bank.png)\n\n{END}"
        args.readme.write_text(re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, readme,
                                      flags=re.DOTALL))
        shutil.copyfile(png, args.readme.parent / "per_bank.png")
        print(f"updated {args.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
