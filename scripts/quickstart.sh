#!/usr/bin/env bash
# The README's first command: install what is needed, build, and run the main job: a
# three-node cluster on this host, shown through the real kubectl.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
name="${KINS_NAME:-kins}"
echo "==> kins up --name $name --nodes 3   (control plane, then three nodes as network namespaces)"
eval "$(kins up --name "$name" --nodes 3)"
echo "==> kubectl get nodes -o wide"
kubectl get nodes -o wide
echo "==> kubectl get namespaces,services -A"
kubectl get namespaces,services -A
echo "==> kins node ls --name $name"
kins node ls --name "$name"
echo
echo "The cluster stays up. Try:"
echo "  export KUBECONFIG=$KUBECONFIG"
echo "  kubectl run web --image=busybox --command -- busybox httpd -f -p 8080; kubectl get pods -o wide"
echo "  kins node exec $name-worker -- ip route        # the routes to the other nodes' pod CIDRs"
echo "Tear it down with:  kins down --name $name --purge"
