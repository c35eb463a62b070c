#!/usr/bin/env bash
# The whole test suite, on a fresh machine of this kind: makes sure the peers the
# tests need are there (PostgreSQL must be running; the target peers are
# installed by scripts/peers.sh, idempotently), builds the binaries the end-to-end tests run,
# then runs every test (unit, store conformance on SQLite and PostgreSQL, e2e).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
[ -n "${CI:-}" ] && export CARGO_INCREMENTAL=0

# PostgreSQL: running on every machine of this kind; start it if it stopped.
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "test.sh: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi

# SSH servers, the Kubernetes API emulator, moto (AWS), OpenBao, tinyproxy, Ansible
# (benchmarks only), helm, kubectl, kubernetes-validate and systemd-analyze (packaging checks).
bash scripts/peers.sh

cargo build --workspace --bins
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast --test-threads "${DRAY_TEST_THREADS:-4}" "$@"
else
  cargo test --workspace --no-fail-fast -- --test-threads "${DRAY_TEST_THREADS:-4}" "$@"
fi
