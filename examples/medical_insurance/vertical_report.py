"""The vertical pricing report: PSI sizes, the joint pricing table, the coefficients against the truth, the lift.

Reads the runs of ``vertical_pricing.yaml`` (and, when it is there, ``vertical_pricing_two_hospitals.yaml``)
and writes RUNS/vertical_report.md. Every figure comes from a run's result.json, or from the generator's data
that the run's own config names (regenerated here, so that statsmodels can fit the joined table, which no party
of the federation could build). With ``--update-docs`` the README block between
``<!-- BEGIN GENERATED vertical_report -->`` and its end is rewritten too.

    python examples/medical_insurance/vertical_report.py --runs runs/medical_insurance [--update-docs]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import statsmodels.api as sm
from report_common import (
    RUNS,
    ReportError,
    add_output_arguments,
    fmt,
    load_run,
    readme_to_rewrite,
    rewrite_block,
    run_label,
    table,
)

from fedx.config import Config
from fedx.data.synthetic.health_insurance import TRUE_HEALTH_COEFFICIENTS, generate_health_insurance


def truth_name(name: str) -> str:
    """``insurer:age_band[T.35-49]`` -> ``age_band[T.35-49]``, the generator's name; ``Intercept`` -> ``intercept``."""
    return "intercept" if name == "Intercept" else name.split(":", 1)[1]


def joined(cfg: Config) -> pd.DataFrame:
    """The table the parties never build: every party's table joined on the id (simulation only)."""
    data = generate_health_insurance(**dict(cfg.data.params), seed=cfg.seed)
    tables = {"insurer": data.insurer, **data.hospitals}
    label = cfg.data.parties[cfg.data.label_party]
    out = tables[label.table or cfg.data.label_party]
    for name, spec in cfg.data.parties.items():
        if name != cfg.data.label_party:
            out = out.merge(tables[spec.table or name][["person_id", *spec.features]], on="person_id")
    return out


def statsmodels_fit(doc: dict[str, Any], df: pd.DataFrame):
    """statsmodels' GLM on the joined table, with the run's design (its coefficient names say how)."""
    cols = {"Intercept": np.ones(len(df))}
    for c in doc["model"]["coefficients"][1:]:
        col = c["name"].split(":", 1)[1]
        if col.endswith("]") and "[T." in col:
            factor, level = col[:-1].split("[T.", 1)
            cols[c["name"]] = (df[factor].astype(str) == level).to_numpy(float)
        else:
            cols[c["name"]] = df[col].to_numpy(float)
    return sm.GLM(df["claims"].to_numpy(float), pd.DataFrame(cols), family=sm.families.Poisson(),
                  exposure=df["exposure"].to_numpy(float)).fit(tol=1e-12)


def max_rel(a: Any, b: Any) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.abs(b)))


def psi_markdown(doc: dict[str, Any]) -> str:
    psi, label = doc["psi"], doc["model"]["label_party"]
    rows = [[name, f"{n:,}", "label" if name == label else "feature", f"{psi['shared'] / n:.1%}"]
            for name, n in psi["rows"].items()]
    policy = psi["policy"]
    return "\n\n".join([
        table(["party", "rows", "role", "of its rows shared by all"], rows),
        f"Shared by all parties: **{psi['shared']:,}** people, found in {psi['seconds']:.1f} s with "
        f"{psi['bytes'] / 1e6:.1f} MB in {psi['messages']} messages. Policy: `psi_reveal: {policy['reveal']}` "
        f"(which rows are shared is known to {', '.join(psi['membership_known_to'])}), `psi_count_to: "
        f"{policy['count_to']}` (the count is known to {', '.join(psi['count_known_to'])}), `min_intersection: "
        f"{policy['min_intersection']}`."])


def fit_markdown(doc: dict[str, Any], ref: Any) -> str:
    model, hist = doc["model"], [h for h in doc["history"] if h["round"] > 0]
    coefs = model["coefficients"]
    up = max(h["bytes_up"] for h in hist) / 1e6
    down = max(h["bytes_down"] for h in hist) / 1e6
    between = max(h["bytes_between"] for h in hist) / 1e6
    setup = doc["history"][0]
    in_se = float(np.max(np.abs(np.array([c["estimate"] for c in coefs]) - ref.params.to_numpy()) / ref.bse.to_numpy()))
    return (f"Poisson GLM on {model['nobs']:,} shared rows, {doc['privacy']['encryption']}, "
            f"`label_block: {doc['privacy']['label_block']}`: {model['iterations']} iterations, converged: "
            f"{model['converged']}; deviance {model['deviance']:.2f}, AIC {model['aic']:.2f}. The fit took "
            f"{model['seconds']:.1f} s in one process (the compute of every party; setup {setup['seconds']:.1f} s, "
            f"then {np.mean([h['seconds'] for h in hist]):.1f} s per Newton round), with at most {up:.1f} MB up and "
            f"{down:.1f} MB down per round" + (f" and {between:.1f} MB between the feature parties" if between else "")
            + f" (setup: {setup['bytes_up'] / 1e6:.1f} MB up, {setup['bytes_down'] / 1e6:.1f} MB down). Against "
            f"statsmodels' GLM on the joined table: coefficients within "
            f"{max_rel([c['estimate'] for c in coefs], ref.params):.1e}, standard errors within "
            f"{max_rel([c['std_error'] for c in coefs], ref.bse):.1e}, deviance within "
            f"{abs(model['deviance'] / ref.deviance - 1):.1e} (relative; the largest difference of a coefficient is "
            f"{in_se:.1e} of its standard error).")


def pricing_markdown(doc: dict[str, Any]) -> str:
    rows = []
    for r in doc["model"]["relativities"]:
        party, _, feature = r["feature"].rpartition(":")
        if r["reference"]:
            rows.append([party, feature, f"{r['level']} (reference)", "1", "", "1"])
            continue
        key = feature if r["level"] is None else f"{feature}[T.{r['level']}]"
        rows.append([party, feature, "per unit" if r["level"] is None else r["level"], fmt(r["relativity"], 4),
                     f"{fmt(r['ci_low'], 4)} – {fmt(r['ci_high'], 4)}",
                     fmt(float(np.exp(TRUE_HEALTH_COEFFICIENTS[key])), 4)])
    return table(["party", "factor", "level", "relativity", "95% interval", "true relativity"], rows)


def truth_markdown(doc: dict[str, Any]) -> str:
    rows, zs = [], []
    for c in doc["model"]["coefficients"]:
        t = TRUE_HEALTH_COEFFICIENTS[truth_name(c["name"])]
        z = (c["estimate"] - t) / c["std_error"]
        zs.append(z)
        rows.append([f"`{c['name']}`", fmt(t, 4), fmt(c["estimate"], 4), fmt(c["std_error"], 4), fmt(z, 2)])
    note = (f"All {len(zs)} estimates lie within {np.max(np.abs(zs)):.2f} standard errors of the truth "
            f"(|z| above 2 in {int(np.sum(np.abs(zs) > 2))} of them).")
    headers = ["coefficient", "truth", "estimate", "std. error", "z = (estimate - truth) / SE"]
    return table(headers, rows) + "\n\n" + note


def lift_markdown(doc: dict[str, Any]) -> str:
    lift, label = doc["lift"], doc["model"]["label_party"]
    rows = [[f"{label} alone (its own columns, the same rows)", fmt(lift["label_only_deviance"], 1),
             fmt(lift["label_only_aic"], 1), len(lift["label_only_coefficients"])],
            ["joint (with the hospital's columns)", fmt(lift["joint_deviance"], 1), fmt(lift["joint_aic"], 1),
             len(doc["model"]["coefficients"])]]
    return table(["model", "deviance", "AIC", "coefficients"], rows) + (
        f"\n\nLift: the hospital's columns explain **{lift['lift']:.1%}** of the deviance that the insurer's own "
        f"model leaves (1 - {fmt(lift['joint_deviance'], 1)} / {fmt(lift['label_only_deviance'], 1)}), and lower "
        f"the AIC by {lift['label_only_aic'] - lift['joint_aic']:.1f}.")


def build_markdown(one: tuple[Path, dict[str, Any], Config], two: tuple[Path, dict[str, Any], Config] | None) -> str:
    folder, doc, cfg = one
    ref = statsmodels_fit(doc, joined(cfg))
    parts = [f"Run: `{run_label(folder)}` (fedx {doc['fedx_version']}), `vertical_pricing.yaml`.",
             "#### Subject identification (PSI)", psi_markdown(doc),
             "#### The joint fit", fit_markdown(doc, ref),
             "#### The joint pricing table (claims per policy-year; relativities with 95% intervals)",
             pricing_markdown(doc),
             "#### Coefficients recovered against the generator's truth", truth_markdown(doc),
             "#### The lift over the insurer alone", lift_markdown(doc)]
    if two is not None:
        folder2, doc2, cfg2 = two
        ref2 = statsmodels_fit(doc2, joined(cfg2))
        lift2 = doc2["lift"]
        parts += [f"#### Two hospitals (`vertical_pricing_two_hospitals.yaml`, run `{run_label(folder2)}`)",
                  psi_markdown(doc2), fit_markdown(doc2, ref2),
                  f"Lift over the insurer alone: {lift2['lift']:.1%} (deviance {fmt(lift2['joint_deviance'], 1)} "
                  f"joint, {fmt(lift2['label_only_deviance'], 1)} alone)."]
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, default=RUNS, help="folder with the runs (default: %(default)s)")
    parser.add_argument("--run", type=Path, help="the one-hospital run (default: RUNS/vertical_pricing)")
    parser.add_argument("--two", type=Path, help="the two-hospital run (default: RUNS/vertical_pricing_two_hospitals; "
                                                 "left out when it is not there)")
    add_output_arguments(parser, figures=False)
    args = parser.parse_args(argv)
    readme = readme_to_rewrite(args)
    try:
        folder = args.run or args.runs / "vertical_pricing"
        doc, cfg = load_run(folder, "claim_frequency")
        if doc.get("partition") != "vertical":
            raise ReportError(f"{folder}: not a vertical run")
        two_folder = args.two or args.runs / "vertical_pricing_two_hospitals"
        two = (two_folder, *load_run(two_folder, "claim_frequency")) if (two_folder / "result.json").exists() else None
        markdown = build_markdown((folder, doc, cfg), two)
        args.runs.mkdir(parents=True, exist_ok=True)
        (args.runs / "vertical_report.md").write_text(markdown + "\n")
        if readme is not None:
            rewrite_block(readme, "vertical_report", markdown)
    except ReportError as exc:
        print(f"vertical_report: {exc}", file=sys.stderr)
        return 2
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
