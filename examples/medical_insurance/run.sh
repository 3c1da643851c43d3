#!/usr/bin/env bash
# Run every config of the medical-insurance example, then the two reports, which rewrite the tables
# of README.md and figures/pricing_lorenz.png.
#   examples/medical_insurance/run.sh       (from any folder; several minutes on two cores)
# Runs go to runs/medical_insurance/ at the top of the repository (RUNS=... to change it).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
fedx="$repo/.venv/bin/fedx"
python="$repo/.venv/bin/python"
runs="${RUNS:-$repo/runs/medical_insurance}"
export FLWR_TELEMETRY_ENABLED=0 RAY_USAGE_STATS_ENABLED=0
mkdir -p "$runs"
for config in pricing_frequency pricing_severity disease_warning disease_warning_mlp; do
    echo "== fedx run $config.yaml"
    start=$SECONDS
    "$fedx" run "$here/$config.yaml" --out "$runs/$config" --force --quiet
    echo "   $config: $((SECONDS - start)) s"
done
echo "== fedx stats heart_stats.yaml"
"$fedx" stats "$here/heart_stats.yaml" --out "$runs/heart_stats" --force --quiet
echo "== reports"
"$python" "$here/pricing_report.py" --runs "$runs" > "$runs/pricing_report.log"
"$python" "$here/disease_report.py" --runs "$runs" > "$runs/disease_report.log"
echo "tables: $runs/pricing_report.md, $runs/disease_report.md (and README.md)"
