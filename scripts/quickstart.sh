#!/usr/bin/env bash
# The README's first command: install what is needed, build, and run the main job,
# `kins demo`: a two-node cluster on this host, the chapter's multi-container pod (nginx +
# a curl sidecar), and the sidecar's log showing nginx's welcome page, through the real
# kubectl. The cluster stays up for exploring.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
name="${KINS_NAME:-kins}"
export PATH="/opt/kins-tools/bin:$PATH"
kins demo --name "$name"
