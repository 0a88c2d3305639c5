#!/usr/bin/env bash
# The README's first command: install what is needed, build, and run the main job:
# bring up a cluster and show what it serves, through the real kubectl.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "==> kins up --name kins  (the control plane: API server on its embedded store)"
eval "$(kins up --name kins)"
echo "==> kubectl get namespaces,services -A"
kubectl get namespaces,services -A
echo
echo "The cluster stays up. Try:  export KUBECONFIG=$KUBECONFIG; kubectl api-resources"
echo "Tear it down with:          kins down --name kins --purge"
