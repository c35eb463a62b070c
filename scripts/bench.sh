#!/usr/bin/env bash
# Benchmarks (not tests): dispatch throughput and latency on SQLite and
# PostgreSQL, then with 1, 2 and 3 manager replicas on PostgreSQL, idle delegate
# footprint, pipeline executions/s and manager CPU per step, SSH deploys against
# parallel scp+ssh and Ansible. Builds release binaries first.
#   scripts/bench.sh                 # both stores, 50,000 tasks; replicas: 5,000 tasks
#   BENCH_STORE=sqlite BENCH_TASKS=20000 scripts/bench.sh
#   BENCH_REPLICAS=1,3 BENCH_HA_TASKS=20000 scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins
cargo bench -p dray-tests --bench dispatch
# Replicas on one PostgreSQL schema, delegates spread over them, tasks submitted round-robin.
BENCH_REPLICAS=${BENCH_REPLICAS:-1,2,3} BENCH_TASKS=${BENCH_HA_TASKS:-5000} cargo bench -p dray-tests --bench ha_dispatch
cargo bench -p dray-tests --bench executions
BENCH_STREAMS=${BENCH_STREAMS:-5000} cargo bench -p dray-tests --bench streams
# SSH deploy of a 5 MiB artifact to 20 and 50 sshd hosts: dray vs parallel scp+ssh vs Ansible (needs scripts/peers.sh).
BENCH_SSH_HOSTS=${BENCH_SSH_HOSTS:-20,50} cargo bench -p dray-tests --bench ssh_deploy
