#!/usr/bin/env bash
# Chart checks: helm lint (helm-sdkpy), helm install against a fake API server with every object
# sent validated, the CRD and the sample resources validated against the
# Kubernetes schemas (kubernetes-validate), and the chart's CRD in sync with crds/.
# Installs its own Python deps in a venv (.venv-chart, ignored by git).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-chart
if [ ! -x "$venv/bin/python" ]; then
  python3.11 -m venv "$venv" 2>/dev/null || python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check --ignore-requires-python \
  -r tests/chart/requirements.txt
exec "$venv/bin/python" -m pytest -q tests/chart "$@"
