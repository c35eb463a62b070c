#!/usr/bin/env bash
# Quickstart on the embedded default: builds Dray, starts a manager on SQLite,
# enrols a local delegate, runs a few tasks and shows how to look at them.
#   scripts/quickstart.sh          # run the demo, then stop everything
#   scripts/quickstart.sh --keep   # leave the manager and delegate running
set -euo pipefail
cd "$(dirname "$0")/.."
keep=${1:-}
cargo build --bins -q
bin=$PWD/target/debug
repo=$PWD
work=$PWD/.quickstart
mkdir -p "$work"
cd "$work"
export DRAY_DATA_DIR=$work/dray-data

pids=()
cleanup() { [ "$keep" = "--keep" ] || for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

echo "==> Starting the manager (SQLite in $DRAY_DATA_DIR, gRPC 127.0.0.1:7443, HTTP 127.0.0.1:7080)"
"$bin/dray" server >manager.log 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -fsS 127.0.0.1:7080/readyz >/dev/null 2>&1 && break; sleep 0.1; done
curl -fsS 127.0.0.1:7080/readyz >/dev/null || { echo "manager did not start; see $work/manager.log"; tail -20 manager.log; exit 1; }

echo "==> Creating a delegate token and enrolling a local delegate"
if [ ! -f delegate-state/cert.pem ]; then
  token=$("$bin/dray" delegate-token create --name "quickstart-$(date +%s)" --max-uses 1 --expires-in 10m)
else
  token=""
fi
QUICKSTART_PASSWORD=hunter2-quickstart "$bin/dray-delegate" run --manager https://127.0.0.1:7443 \
  --ca-file "$DRAY_DATA_DIR/ca.pem" ${token:+--token "$token"} --name local --tags linux,quickstart,local \
  --state-dir delegate-state >delegate.log 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do grep -q "Delegate connected" delegate.log && break; sleep 0.1; done
"$bin/dray" get delegates

echo; echo "==> Running a task and following its log"
"$bin/dray" task run --selector linux --wait -- 'echo "hello from $(hostname)"; for i in 1 2 3; do echo "step $i"; sleep 0.2; done'

echo; echo "==> A secret reference: resolved on the delegate, masked in the log, never seen by the manager"
"$bin/dray" task run --wait --env 'PW=<+secrets.getValue("env:QUICKSTART_PASSWORD")>' -- 'echo "the password is $PW"'

echo; echo "==> A failing task exits non-zero with the reason"
"$bin/dray" task run --wait -- 'echo about to fail; exit 3' || echo "(exit status $?)"

echo; echo "==> A task no delegate can take is explained"
"$bin/dray" task run --wait --selector gpu --queue-timeout 2s -- 'nvidia-smi' || true

echo; echo "==> Pipelines: apply the examples, run a release, approve it"
"$bin/dray" apply -f "$repo/examples/"
"$bin/dray" get pipelines
exec_id=$("$bin/dray" run release)
for _ in $(seq 1 100); do
  "$bin/dray" describe execution "$exec_id" -o json | grep -q '"waitingFor": *"approval"' && break; sleep 0.2
done
"$bin/dray" approve "$exec_id" --comment "looks good" --input ticket=CHG-1
for _ in $(seq 1 150); do
  "$bin/dray" describe execution "$exec_id" | head -1 | grep -qE ' — (Succeeded|Failed|Aborted)' && break; sleep 0.2
done
"$bin/dray" describe execution "$exec_id"
"$bin/dray" logs "$exec_id" --step deploy.deploy

echo; echo "==> Runtime inputs from an overlay input set and --set"
"$bin/dray" run inputs --input-set qa_big --set greeting=hello --wait

echo; echo "==> What happened"
"$bin/dray" get executions
"$bin/dray" get tasks
"$bin/dray" delegate ping "$(sed -n 's/.*"delegate_id": *"\([0-9a-f]*\)".*/\1/p' delegate-state/identity.json)"
echo
echo "Try: $bin/dray get tasks -o json | $bin/dray logs TASK_ID | $bin/dray leases watch | curl 127.0.0.1:7080/metrics"
echo "(with DRAY_DATA_DIR=$DRAY_DATA_DIR, or run them from $work)"
[ "$keep" = "--keep" ] && echo "Manager and delegate keep running (PIDs ${pids[*]})."
exit 0
