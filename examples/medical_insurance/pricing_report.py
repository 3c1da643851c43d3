"""The actuary's report of the two pricing runs: relativities, pure premiums, Lorenz curves, own vs federated.

    .venv/bin/python examples/medical_insurance/pricing_report.py [--runs runs/medical_insurance]

It reads the result.json of the frequency and severity runs, regenerates the policies their configs
name (the generator is deterministic for the config's seed), and writes:

- the relativities exp(coefficient) with 95% intervals from the reported standard errors, beside
  the generator's true relativities;
- the pure premium (frequency x severity) of a few example policies: truth, federated GLM, and each
  insurer's own GLM (the run's ``local`` baseline, refitted here on that insurer's training split);
- a Lorenz curve and Gini coefficient of the pure premium on each insurer's test split (PNG);
- each insurer's own GLM against the federated one: coefficient error against the truth, test
  deviance, Gini.

The markdown goes to ``<runs>/pricing_report.md`` and the PNG to ``<runs>/figures/``. With
``--update-docs`` they also go into the committed copies: the README block between
``<!-- BEGIN GENERATED pricing_report -->`` and ``<!-- END GENERATED pricing_report -->``, and figures/.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report_common import (
    RUNS,
    ReportError,
    add_output_arguments,
    figures_dir,
    fmt,
    load_run,
    readme_to_rewrite,
    relative_link,
    rewrite_block,
    run_label,
    table,
)

from fedx.aggregators import make_rule
from fedx.aggregators.glm_results import GLMResults
from fedx.aggregators.newton import GLMData, newton_fit
from fedx.baselines import fit_preprocessor
from fedx.config import Config
from fedx.data.institutions import institution_tables
from fedx.data.local import local_split
from fedx.data.spec import schema_for
from fedx.data.synthetic.policies import (
    TRUE_FREQUENCY_COEFFICIENTS,
    TRUE_SEVERITY_COEFFICIENTS,
)
from fedx.tasks import TabularData, get_task
from fedx.tasks.metrics import glm_metrics

Z95 = 1.959963984540054
"""The 97.5% quantile of the standard normal."""

EXAMPLE_POLICIES = pd.DataFrame([
    {"policy": "young driver, capital, new group-D car, petrol", "driver_age": 22, "vehicle_age": 1,
     "bonus_malus": 95, "region": "capital", "vehicle_group": "D", "fuel": "petrol"},
    {"policy": "family driver, coast, group-C car, electric", "driver_age": 42, "vehicle_age": 3,
     "bonus_malus": 60, "region": "coast", "vehicle_group": "C", "fuel": "electric"},
    {"policy": "experienced driver, north, old group-A car, diesel", "driver_age": 60, "vehicle_age": 12,
     "bonus_malus": 50, "region": "north", "vehicle_group": "A", "fuel": "diesel"},
    {"policy": "senior driver, south, group-B car, petrol", "driver_age": 75, "vehicle_age": 9,
     "bonus_malus": 50, "region": "south", "vehicle_group": "B", "fuel": "petrol"},
])
"""Rating profiles to price, one policy-year each (inputs of the report, not results)."""


@dataclass(frozen=True)
class Coefficients:
    """A log-link GLM's coefficients in statsmodels' names (``Intercept``, ``region[T.coast]``, ...)."""

    names: tuple[str, ...]
    estimate: np.ndarray
    std_error: np.ndarray | None = None

    @classmethod
    def from_report(cls, report: Mapping[str, Any]) -> Coefficients:
        coefs = report["coefficients"]
        return cls(tuple(c["name"] for c in coefs), np.array([c["estimate"] for c in coefs], dtype=np.float64),
                   np.array([c["std_error"] for c in coefs], dtype=np.float64))

    @classmethod
    def truth(cls, coefficients: Mapping[str, float], names: tuple[str, ...]) -> Coefficients:
        """The generator's coefficients, in the order of ``names``."""
        lookup = {("Intercept" if k == "intercept" else k): v for k, v in coefficients.items()}
        if set(lookup) != set(names):
            raise ReportError(f"the fit's coefficients {sorted(names)} are not the generator's {sorted(lookup)}")
        return cls(names, np.array([lookup[n] for n in names], dtype=np.float64))

    def log_mean(self, df: pd.DataFrame) -> np.ndarray:
        """The linear predictor of each row of a raw table (no offset)."""
        return design(df, self.names) @ self.estimate

    def factors(self) -> np.ndarray:
        """The rating-factor coefficients (all but the intercept)."""
        return self.estimate[[i for i, n in enumerate(self.names) if n != "Intercept"]]


def design(df: pd.DataFrame, names: tuple[str, ...]) -> np.ndarray:
    """Treatment-coded design matrix of a raw table, with one column per coefficient name."""
    cols = []
    for name in names:
        if name == "Intercept":
            cols.append(np.ones(len(df)))
        elif "[T." in name:
            factor, level = name[:-1].split("[T.", 1)
            cols.append((df[factor].astype(str).to_numpy() == level).astype(np.float64))
        else:
            cols.append(df[name].to_numpy(dtype=np.float64))
    return np.column_stack(cols)


@dataclass
class PricingRun:
    """One run (frequency or severity): its result, config, data splits, and every insurer's own fit."""

    folder: Path
    doc: dict[str, Any]
    cfg: Config
    splits: dict[str, tuple[pd.DataFrame, pd.DataFrame]]
    federated: Coefficients
    own: dict[str, Coefficients]
    truth: Coefficients

    @property
    def family(self) -> str:
        return str(self.doc["model"]["family"])

    def test_metrics(self, coefs: Coefficients, test: pd.DataFrame) -> dict[str, Any]:
        """Deviance, Gini, ... of ``coefs`` on one test split, as fedx scores a GLM."""
        d = self.cfg.data
        offset = np.log(test[d.exposure].to_numpy(dtype=np.float64)) if d.exposure else None
        mu = np.exp(coefs.log_mean(test) + (0.0 if offset is None else offset))
        weight = test[d.weight].to_numpy(dtype=np.float64) if d.weight else None
        return glm_metrics(self.family, test[d.target].to_numpy(dtype=np.float64), mu, offset, weight)


def load_pricing_run(folder: Path, task: str, true_coefficients: Mapping[str, float]) -> PricingRun:
    """Read a pricing run, rebuild its insurers' splits from the data, and refit each insurer's own GLM."""
    doc, cfg = load_run(folder, task)
    if doc["model"].get("coefficients") is None:
        raise ReportError(f"{folder}: result.json has no GLM coefficients (run it with aggregator: newton)")
    task_obj = get_task(task)
    tables = institution_tables(cfg)
    splits = {name: local_split(df, cfg, name, task_obj) for name, df in tables.items()}
    for name, info in doc["institutions"].items():
        train, test = splits[name]
        if (len(train), len(test)) != (info["n_train"], info["n_test"]):
            raise ReportError(f"{folder}: {name} has {len(train)}/{len(test)} train/test rows in the regenerated "
                              f"data, and {info['n_train']}/{info['n_test']} in the run")
    federated = Coefficients.from_report(doc["model"])
    rule = make_rule(cfg)
    own = {}
    for name, (train, _) in splits.items():
        # The run's `local` baseline: preprocessing and exact GLM on this insurer's training rows alone.
        prep = fit_preprocessor(cfg, schema_for(cfg), train)
        data = TabularData.from_frame(cfg, prep, train)
        fit = newton_fit([GLMData(data.X, data.y, data.offset, data.weight)], rule,
                         max_rounds=max(cfg.federation.rounds, 50))
        own[name] = Coefficients.from_report(GLMResults.from_newton(fit.total, fit.state, rule, list(prep.feature_names)).to_dict())
        if own[name].names != federated.names:
            raise ReportError(f"{name}: its own GLM has coefficients {own[name].names}, the federated one "
                              f"{federated.names}")
    run = PricingRun(Path(folder), doc, cfg, splits, federated, own,
                     Coefficients.truth(true_coefficients, federated.names))
    _check_reproduces(run)
    return run


def _check_reproduces(run: PricingRun) -> None:
    """The regenerated data and refitted GLMs give the run's own test deviances, or the report stops."""
    for name, (_, test) in run.splits.items():
        for label, coefs, reported in (("federated", run.federated, run.doc["per_institution"][name]),
                                       ("local", run.own[name], run.doc["baselines"]["local"][name])):
            mine = run.test_metrics(coefs, test)["deviance"]
            if not np.isclose(mine, reported["deviance"], rtol=1e-4):
                raise ReportError(f"{run.folder}: {name} {label} test deviance is {mine:.6g} here and "
                                  f"{reported['deviance']:.6g} in result.json: the data or fit differ from the run")


# --------------------------------------------------------------------------- pure premium


def pure_premium(freq: Coefficients, sev: Coefficients, df: pd.DataFrame) -> np.ndarray:
    """Expected claim cost per policy-year: claims per year x cost per claim."""
    return np.exp(freq.log_mean(df) + sev.log_mean(df))


def lorenz(rate: np.ndarray, exposure: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Ordered Lorenz curve (policies by ascending predicted rate) and its Gini, ``1 - 2 * area``.

    Policies with the same predicted rate form one step, so that ties do not depend on row order.
    """
    rate = np.round(np.log(rate), 9)
    levels, group = np.unique(rate, return_inverse=True)
    e = np.bincount(group, weights=exposure, minlength=len(levels))
    w = np.bincount(group, weights=loss, minlength=len(levels))
    x = np.r_[0.0, np.cumsum(e) / e.sum()]
    y = np.r_[0.0, np.cumsum(w) / w.sum()]
    return x, y, float(1.0 - np.sum(np.diff(x) * (y[1:] + y[:-1])))


@dataclass
class PremiumScore:
    """The pure premium of one insurer's test policies under one model."""

    x: np.ndarray
    y: np.ndarray
    gini: float
    error: float | None   # mean |premium / true premium - 1|


def premium_scores(freq: PricingRun, sev: PricingRun) -> dict[str, dict[str, PremiumScore]]:
    """For each insurer's test split (of the frequency run): Lorenz curve, Gini, error vs the truth."""
    out: dict[str, dict[str, PremiumScore]] = {}
    for name, (_, test) in freq.splits.items():
        exposure = test[freq.cfg.data.exposure].to_numpy(dtype=np.float64)
        loss = test["claim_amount"].to_numpy(dtype=np.float64)
        true = pure_premium(freq.truth, sev.truth, test)
        out[name] = {}
        for label, (f, s) in {"truth": (freq.truth, sev.truth), "federated": (freq.federated, sev.federated),
                              "own": (freq.own[name], sev.own[name])}.items():
            p = pure_premium(f, s, test)
            x, y, gini = lorenz(p, exposure, loss)
            out[name][label] = PremiumScore(x, y, gini, None if label == "truth" else
                                            float(np.mean(np.abs(p / true - 1.0))))
    return out


def lorenz_png(scores: Mapping[str, Mapping[str, PremiumScore]], path: Path) -> None:
    """One panel per insurer: the Lorenz curves of the federated, own and true pure premium."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(scores)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.6), sharey=True)
    style = {"federated": ("tab:blue", "-"), "own": ("tab:orange", "--"), "truth": ("0.4", ":")}
    label = {"federated": "federated GLM", "own": "own GLM", "truth": "true premium"}
    for ax, name in zip(np.atleast_1d(axes), names):
        ax.plot([0, 1], [0, 1], color="0.8", lw=0.8)
        for key in ("federated", "own", "truth"):
            s = scores[name][key]
            color, ls = style[key]
            ax.plot(s.x, s.y, color=color, ls=ls, lw=1.4, label=f"{label[key]} (Gini {s.gini:.3f})")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("share of exposure (cheapest first)", fontsize=8)
        ax.legend(fontsize=7, loc="upper left")
        ax.set_aspect("equal")
    np.atleast_1d(axes)[0].set_ylabel("share of claim cost", fontsize=8)
    fig.suptitle("Pure premium on each insurer's test policies: ordered Lorenz curves", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- markdown


def relativities_markdown(run: PricingRun) -> str:
    """Relativities with 95% intervals, beside the true ones; reference levels at 1."""
    cfg = run.cfg
    rows = []
    inside = 0
    for i, name in enumerate(run.federated.names):
        if name == "Intercept":
            continue
        est, se, true = run.federated.estimate[i], run.federated.std_error[i], run.truth.estimate[i]
        lo, hi = np.exp(est - Z95 * se), np.exp(est + Z95 * se)
        covered = lo <= np.exp(true) <= hi
        inside += int(covered)
        if "[T." in name:
            factor, level = name[:-1].split("[T.", 1)
            if level == cfg.data.levels[factor][1]:
                rows.append([factor, f"{cfg.data.levels[factor][0]} (reference)", "1", "1", "", ""])
            shown = ["", level]
        else:
            shown = [name, "per unit"]
        rows.append([*shown, fmt(np.exp(true), 4), fmt(np.exp(est), 4), f"{lo:.4f} – {hi:.4f}",
                     "yes" if covered else "**no**"])
    body = table(["factor", "level", "true", "federated", "95% interval", "truth inside"], rows, "llrrrl")
    n = len(run.federated.names) - 1
    return f"{body}\n\nThe true relativity lies inside the 95% interval for {inside} of {n} rating factors."


def fit_summary(run: PricingRun) -> str:
    m, doc = run.doc["model"], run.doc
    central = doc["baselines"].get("centralized", {})
    up = sum(h["bytes_up"] for h in doc["history"])
    return (f"{m['family'].capitalize()} GLM on {m['nobs']:,} training rows of {len(run.splits)} insurers: "
            f"{m['iterations']} iterations, {len(doc['history'])} rounds, converged: {m['converged']}; deviance "
            f"{m['deviance']:.2f}, null deviance {m['null_deviance']:.2f}, D² {m['d2']:.4f}, AIC "
            f"{fmt(m['aic'], 2)}, dispersion {m['dispersion']:.4f}. Test deviance per row: federated "
            f"{doc['metrics']['deviance']:.5f}, pooled-data GLM {fmt(central.get('deviance'), 5)}. "
            f"{up / 1e6:.1f} MB of ciphertext uploaded in all ({doc['privacy']['encryption']}).")


def premium_markdown(freq: PricingRun, sev: PricingRun) -> str:
    names = list(freq.own)
    rows = []
    for _, pol in EXAMPLE_POLICIES.iterrows():
        one = pd.DataFrame([pol])
        true = pure_premium(freq.truth, sev.truth, one)[0]
        fed = pure_premium(freq.federated, sev.federated, one)[0]
        own = [pure_premium(freq.own[n], sev.own[n], one)[0] for n in names]
        rows.append([pol["policy"], f"{true:.0f}", f"{fed:.0f} ({fed / true - 1:+.0%})",
                     *[f"{p:.0f} ({p / true - 1:+.0%})" for p in own]])
    return table(["policy (one year)", "true", "federated", *[f"{n} own" for n in names]], rows,
                 "l" + "r" * (2 + len(names)))


def insurer_markdown(freq: PricingRun, sev: PricingRun, scores: Mapping[str, Mapping[str, PremiumScore]]) -> str:
    def rmse(c: Coefficients, truth: Coefficients) -> float:
        return float(np.sqrt(np.mean((c.factors() - truth.factors()) ** 2)))

    rows1, rows2 = [], []
    names = list(freq.own)
    for name in names:
        rows1.append([name, f"{len(freq.splits[name][0]):,}", f"{len(sev.splits[name][0]):,}",
                      fmt(rmse(freq.own[name], freq.truth), 4), fmt(rmse(freq.federated, freq.truth), 4),
                      fmt(rmse(sev.own[name], sev.truth), 4), fmt(rmse(sev.federated, sev.truth), 4),
                      f"{scores[name]['own'].error:.1%}", f"{scores[name]['federated'].error:.1%}"])
        fl, ff = freq.doc["baselines"]["local"][name], freq.doc["per_institution"][name]
        sl, sf = sev.doc["baselines"]["local"][name], sev.doc["per_institution"][name]
        rows2.append([name, fmt(fl["deviance"], 4), fmt(ff["deviance"], 4), fmt(sl["deviance"], 4),
                      fmt(sf["deviance"], 4), fmt(scores[name]["own"].gini), fmt(scores[name]["federated"].gini),
                      fmt(scores[name]["truth"].gini)])
    t1 = table(["insurer", "policies", "claims rows", "freq. own", "freq. fed.", "sev. own", "sev. fed.",
                "premium own", "premium fed."], rows1)
    t2 = table(["insurer", "freq. deviance own", "fed.", "sev. deviance own", "fed.", "premium Gini own", "fed.",
                "true premium"], rows2)
    return (
        "Against the truth (training rows; RMS error of the 11 rating-factor coefficients on the log scale, and "
        "the mean absolute error of the pure premium of the insurer's test policies against their true "
        "premium):\n\n" + t1 +
        "\n\nOn each insurer's own test split (mean deviance per row from result.json, lower is better; Gini "
        "of the pure premium, higher ranks risks better):\n\n" + t2)


def build_markdown(freq: PricingRun, sev: PricingRun, scores: Mapping[str, Mapping[str, PremiumScore]],
                   figure: Path, readme: Path) -> str:
    return "\n\n".join([
        f"Runs: `{run_label(freq.folder)}` and `{run_label(sev.folder)}` (fedx {freq.doc['fedx_version']}).",
        "#### The federated fits",
        "- **Frequency.** " + fit_summary(freq),
        "- **Severity.** " + fit_summary(sev),
        "#### Relativities: claim frequency (claims per policy-year)",
        relativities_markdown(freq),
        "#### Relativities: claim severity (cost per claim)",
        relativities_markdown(sev),
        "#### Pure premium of example policies (expected claim cost per policy-year; error against the truth)",
        premium_markdown(freq, sev),
        "#### Each insurer's own GLM against the federated one",
        insurer_markdown(freq, sev, scores),
        f"![Lorenz curves of the pure premium]({relative_link(figure, readme)})",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, default=RUNS, help="folder with the runs (default: %(default)s)")
    parser.add_argument("--frequency", type=Path, help="the frequency run (default: RUNS/pricing_frequency)")
    parser.add_argument("--severity", type=Path, help="the severity run (default: RUNS/pricing_severity)")
    add_output_arguments(parser, figures=True)
    args = parser.parse_args(argv)
    readme = readme_to_rewrite(args)
    try:
        freq = load_pricing_run(args.frequency or args.runs / "pricing_frequency", "claim_frequency",
                                TRUE_FREQUENCY_COEFFICIENTS)
        sev = load_pricing_run(args.severity or args.runs / "pricing_severity", "claim_severity",
                               TRUE_SEVERITY_COEFFICIENTS)
        if set(freq.splits) != set(sev.splits):
            raise ReportError(f"the runs have different insurers: {sorted(freq.splits)} and {sorted(sev.splits)}")
        scores = premium_scores(freq, sev)
        figure = figures_dir(args) / "pricing_lorenz.png"
        lorenz_png(scores, figure)
        args.runs.mkdir(parents=True, exist_ok=True)
        report = args.runs / "pricing_report.md"
        markdown = build_markdown(freq, sev, scores, figure, readme or report)   # the figure's link from there
        report.write_text(markdown + "\n")
        if readme is not None:
            rewrite_block(readme, "pricing_report", markdown)
    except ReportError as exc:
        print(f"pricing_report: {exc}", file=sys.stderr)
        return 2
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
