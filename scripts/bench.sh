#!/usr/bin/env bash
# Benchmarks (not tests): dispatch throughput and latency on SQLite and
# PostgreSQL, idle delegate footprint, pipeline executions/s and manager CPU per step. Builds release binaries first.
#   scripts/bench.sh                 # both stores, 50,000 tasks
#   BENCH_STORE=sqlite BENCH_TASKS=20000 scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins
cargo bench -p dray-tests --bench dispatch
cargo bench -p dray-tests --bench executions
BENCH_STREAMS=${BENCH_STREAMS:-5000} cargo bench -p dray-tests --bench streams
