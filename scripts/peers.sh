#!/usr/bin/env bash
# Installs the third-party servers the tests talk to, idempotently, and prints
# nothing but progress. Everything lands under $DRAY_PEERS_DIR (default
# ~/.cache/dray-peers) except Debian packages. Tests find the Python peers
# through the same directory (see tests/src/peers.rs).
#   sshd          Debian openssh-server (private instances started by the tests)
#   tinyproxy     Debian tinyproxy (an HTTP/CONNECT proxy)
#   venv          Python: kmock (Kubernetes API emulator), ansible-core (benchmarks)
#   moto          Python: moto[server] (AWS ECS/ELBv2/Lambda emulator) in the same venv
set -euo pipefail
PEERS_DIR=${DRAY_PEERS_DIR:-$HOME/.cache/dray-peers}
mkdir -p "$PEERS_DIR"

apt_updated=
need_apt() {
  if [ -z "$apt_updated" ]; then
    echo "peers: apt-get update"
    apt-get update -qq >/dev/null
    apt_updated=1
  fi
  echo "peers: apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# OpenSSH server (the image's policy-rc.d keeps the system service from starting).
[ -x /usr/sbin/sshd ] || need_apt openssh-server
[ -x /usr/bin/ssh ] || need_apt openssh-client
mkdir -p /run/sshd

# An HTTP proxy for the delegate's proxy support.
[ -x /usr/bin/tinyproxy ] || need_apt tinyproxy

# Python peers, pinned. A stamp file records what the venv holds.
PY_REQS="kmock==0.8 aiohttp pyyaml attrs ansible-core==2.17.*"
VENV="$PEERS_DIR/venv"
STAMP="$VENV/.dray-reqs"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$PY_REQS" ]; then
  echo "peers: python venv ($PY_REQS)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check $PY_REQS
  echo "$PY_REQS" > "$STAMP"
fi

# AWS emulator for the ecs and lambda targets, in the same venv with its own stamp.
MOTO_REQS="moto[server]==5.2.*"
MOTO_STAMP="$VENV/.dray-moto"
if [ ! -f "$MOTO_STAMP" ] || [ "$(cat "$MOTO_STAMP")" != "$MOTO_REQS" ]; then
  echo "peers: python venv ($MOTO_REQS)"
  "$VENV/bin/pip" install -q --disable-pip-version-check "$MOTO_REQS"
  echo "$MOTO_REQS" > "$MOTO_STAMP"
fi
