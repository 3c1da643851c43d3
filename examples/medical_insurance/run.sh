#!/usr/bin/env bash
# Run every config of the medical-insurance example, then the two reports.
#   examples/medical_insurance/run.sh                 (from any folder; several minutes on two cores)
#   examples/medical_insurance/run.sh --update-docs   (also rewrite the committed README tables and figures/)
# Runs and reports go to runs/medical_insurance/ at the top of the repository (RUNS=... to change it); without
# --update-docs no file that git tracks changes (runs/ is ignored).
set -euo pipefail
update_docs=()
for arg in "$@"; do
    case "$arg" in
        --update-docs) update_docs=(--update-docs) ;;
        -h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown option $arg (expected --update-docs)" >&2; exit 2 ;;
    esac
done
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
fedx="$repo/.venv/bin/fedx"
python="$repo/.venv/bin/python"
runs="${RUNS:-$repo/runs/medical_insurance}"
export FLWR_TELEMETRY_ENABLED=0 RAY_USAGE_STATS_ENABLED=0
mkdir -p "$runs"
for config in pricing_frequency pricing_severity disease_warning disease_warning_mlp vertical_pricing \
    vertical_pricing_two_hospitals; do
    echo "== fedx run $config.yaml"
    start=$SECONDS
    "$fedx" run "$here/$config.yaml" --out "$runs/$config" --force --quiet
    echo "   $config: $((SECONDS - start)) s"
done
echo "== fedx stats heart_stats.yaml"
"$fedx" stats "$here/heart_stats.yaml" --out "$runs/heart_stats" --force --quiet
echo "== reports"
"$python" "$here/pricing_report.py" --runs "$runs" "${update_docs[@]}" > "$runs/pricing_report.log"
"$python" "$here/disease_report.py" --runs "$runs" "${update_docs[@]}" > "$runs/disease_report.log"
"$python" "$here/vertical_report.py" --runs "$runs" "${update_docs[@]}" > "$runs/vertical_report.log"
if ((${#update_docs[@]})); then
    echo "tables: $runs/pricing_report.md, $runs/disease_report.md, $runs/vertical_report.md; rewritten: $here/README.md, $here/figures/"
else
    echo "tables: $runs/pricing_report.md, $runs/disease_report.md, $runs/vertical_report.md; figure: $runs/figures/pricing_lorenz.png"
    echo "(run.sh --update-docs rewrites the committed README tables and figures/)"
fi
