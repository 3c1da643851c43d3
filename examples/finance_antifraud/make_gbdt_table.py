"""The anti-fraud example's trees-against-MLP table, generated from the result.json of two runs.

    python examples/finance_antifraud/make_gbdt_table.py MLP_RUN_DIR GBDT_RUN_DIR [--readme README.md]

MLP_RUN_DIR is a run of fedx.yaml, GBDT_RUN_DIR a run of gbdt.yaml, both with ``report.baselines: [local,
centralized]``. For each bank the table gives AUPRC and ROC-AUC on the bank's own test split of the model
trained by the bank alone (*alone*), by the federation (*federated*) and on the pooled training rows of all
banks (*pooled*, which only a simulation can train), for both model kinds. With ``--readme`` it rewrites the
generated block ``gbdt`` of that README. Nothing in the table is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

BEGIN, END = "<!-- BEGIN GENERATED: gbdt -->", "<!-- END GENERATED: gbdt -->"
ARMS = (("local", "alone"), ("federated", "federated"), ("centralized", "pooled"))


def load(run_dir: Path, kind: str) -> dict[str, Any]:
    path = run_dir / "result.json"
    if not path.exists():
        raise SystemExit(f"{path}: not found; run the example's {'gbdt.yaml' if kind == 'gbdt' else 'fedx.yaml'} "
                         f"with --out {run_dir} first")
    r = json.loads(path.read_text())
    if r["config"]["model"]["kind"] != kind:
        raise SystemExit(f"{path}: a run of model.kind {r['config']['model']['kind']}, expected {kind}")
    if "local" not in r["baselines"] or "centralized" not in r["baselines"]:
        raise SystemExit(f"{path}: the run has no local and centralized baselines (report.baselines)")
    return r


def _f(x: Any) -> str:
    return "–" if x is None else f"{x:.3f}"


def _cell(r: dict[str, Any], bank: str | None, arm: str, metric: str) -> Any:
    if bank is None:
        source = {"local": r["baselines"].get("local_combined", {}), "federated": r["metrics"],
                  "centralized": r["baselines"]["centralized"]}[arm]
        return source.get(metric)
    return r["comparison"][bank].get(arm, {}).get(metric)


def table(mlp: dict[str, Any], gbdt: dict[str, Any], metric: str) -> str:
    banks = sorted(gbdt["comparison"])
    head = "| bank | " + " | ".join(f"MLP {a}" for _, a in ARMS) + " | " + " | ".join(
        f"GBDT {a}" for _, a in ARMS) + " | GBDT federated beats GBDT alone |"
    rows = [head, "|---|" + "---|" * (2 * len(ARMS) + 1)]
    for bank in [*banks, None]:
        cells = [_f(_cell(r, bank, arm, metric)) for r in (mlp, gbdt) for arm, _ in ARMS]
        fed, alone = _cell(gbdt, bank, "federated", metric), _cell(gbdt, bank, "local", metric)
        wins = "" if bank is None else ("yes" if fed is not None and alone is not None and fed > alone else "**no**")
        rows.append(f"| {bank or '**all banks**'} | " + " | ".join(cells) + f" | {wins} |")
    return "\n".join(rows)


def _describe(r: dict[str, Any]) -> str:
    m, sec = r["config"]["model"], r["config"]["security"]["encryption"]
    if m["kind"] == "gbdt":
        return (f"GBDT: {r['model']['trees']} trees of depth {m['depth']}, learning rate {m['learning_rate']}, "
                f"{m['bins']} bins, encryption `{sec}`, {r['model']['message_rounds']} message rounds")
    fed = r["config"]["federation"]
    return f"MLP {m['hidden']}: {fed['rounds']} rounds of {fed['aggregator']}, encryption `{sec}`"


def markdown(mlp: dict[str, Any], gbdt: dict[str, Any]) -> str:
    losers = [b for b in sorted(gbdt["comparison"])
              if not _cell(gbdt, b, "federated", "auprc") > _cell(gbdt, b, "local", "auprc")]
    best = sum(_cell(gbdt, b, "federated", "auprc") > _cell(mlp, b, "federated", "auprc")
               for b in gbdt["comparison"])
    fed, pooled = gbdt["metrics"]["auprc"], gbdt["baselines"]["centralized"]["auprc"]
    return "\n".join([
        f"Runs: {_describe(mlp)} (written {mlp['written']}); {_describe(gbdt)} (written {gbdt['written']}).", "",
        "**AUPRC** on each bank's own test split:", "", table(mlp, gbdt, "auprc"), "",
        "**ROC-AUC**:", "", table(mlp, gbdt, "roc_auc"), "",
        f"- federated GBDT AUPRC {fed:.4f}, the same engine on the pooled rows {pooled:.4f} (difference "
        f"{fed - pooled:+.4f})",
        f"- the federated GBDT beats each bank's own GBDT in AUPRC at "
        f"{len(gbdt['comparison']) - len(losers)} of {len(gbdt['comparison'])} banks"
        + (f" (not: {', '.join(losers)})" if losers else ""),
        f"- the federated GBDT beats the federated MLP in AUPRC at {best} of {len(gbdt['comparison'])} banks", ""])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mlp_run", type=Path)
    ap.add_argument("gbdt_run", type=Path)
    ap.add_argument("--readme", type=Path, default=None, help="rewrite the generated gbdt block of this README")
    args = ap.parse_args(argv)
    text = markdown(load(args.mlp_run, "mlp"), load(args.gbdt_run, "gbdt"))
    print(text)
    if args.readme is not None:
        readme = args.readme.read_text()
        if BEGIN not in readme or END not in readme:
            raise SystemExit(f"{args.readme}: lacks the generated block markers {BEGIN} ... {END}")
        new = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: f"{BEGIN}\n{text}{END}", readme, flags=re.S)
        args.readme.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
