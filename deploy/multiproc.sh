#!/usr/bin/env bash
# make test-multiproc: the dev cluster as separate processes. `cofferd dev --init-only`
# writes the CA, certificates and one config per node; each node then runs as its own
# `cofferd run --config FILE` process. Backs up a directory, restores and verifies it,
# SIGKILLs one chunk node and restores again (any k=4 of 6 shards serve every read), and
# stops the rest with SIGTERM. With 7 chunk nodes and a 5 s down_out_interval the
# killed node is then marked out and the cluster re-protects every PG on the other 6.
set -euo pipefail
BIN=${BIN:-bin}
COFFER=$BIN/coffer
COFFERD=$BIN/cofferd
SRC=${SRC:-$(go env GOROOT)/src/net}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/coffer-multiproc.XXXXXX")
D=$WORK/cluster
declare -A PID
cleanup() {
  for id in "${!PID[@]}"; do kill -TERM "${PID[$id]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
say() { printf '\n== %s\n' "$*"; }

"$COFFERD" dev --dir "$D" --init-only --chunk 7
# Shorten the failure timers for the check: meta nodes mark a dead node out after 5 s,
# chunk nodes run a repair pass every 2 s.
for cfg in "$D"/nodes/meta-*/node.yaml; do echo "down_out_interval: 5s" >>"$cfg"; done
for cfg in "$D"/nodes/chunk-*/node.yaml; do printf 'repair:\n  interval: 2s\n' >>"$cfg"; done
for cfg in "$D"/nodes/*/node.yaml; do
  id=$(basename "$(dirname "$cfg")")
  "$COFFERD" run --config "$cfg" --log-level "${LOG_LEVEL:-info}" >"$WORK/$id.log" 2>&1 &
  PID[$id]=$!
done
echo "started ${#PID[@]} node processes"

export COFFER_CONFIG=$D/coffer.yaml COFFER_PASSPHRASE=multiproc-test-passphrase
# Wait until the meta group has a leader and the map names every chunk node.
for i in $(seq 1 120); do
  if "$COFFER" admin status --json >"$WORK/status.json" 2>/dev/null &&
     [ "$(grep -o '"state": *"up"' "$WORK/status.json" | wc -l)" -ge "${#PID[@]}" ]; then
    break
  fi
  [ "$i" = 120 ] && { cat "$WORK"/*.log | tail -50; echo "multiproc: cluster not ready"; exit 1; }
  sleep 0.5
done

verify() {
  rm -rf "$WORK/restore"
  "$COFFER" restore latest --target "$WORK/restore"
  diff -r --no-dereference "$SRC" "$WORK/restore/$(basename "$SRC")"
  echo "verified: restore of $SRC is identical"
}

say "init, backup $SRC, restore"
"$COFFER" init
"$COFFER" backup "$SRC"
verify

say "SIGKILL chunk-3, restore again"
kill -KILL "${PID[chunk-3]}"; wait "${PID[chunk-3]}" 2>/dev/null || true; unset 'PID[chunk-3]'
verify
say "waiting for chunk-3 to be marked out and every PG to be re-protected"
start=$(date +%s)
for i in $(seq 1 240); do
  "$COFFER" admin pgs --json >"$WORK/pgs.json" 2>/dev/null || true
  "$COFFER" admin nodes --json >"$WORK/nodes.json" 2>/dev/null || true
  pgs=$(grep -o '"pg_count": *[0-9]*' "$WORK/pgs.json" | grep -o '[0-9]*$' || true)
  healthy=$(grep -o '"healthy": *[0-9]*' "$WORK/pgs.json" | grep -o '[0-9]*$' || true)
  if grep -q '"id": *"chunk-3"[^}]*"state": *"out"' "$WORK/nodes.json" && [ -n "$pgs" ] && [ "$healthy" = "$pgs" ]; then
    echo "re-protected: $healthy of $pgs PGs healthy, $(( $(date +%s) - start )) s after the kill"
    break
  fi
  [ "$i" = 240 ] && { cat "$WORK/pgs.json" "$WORK/nodes.json"; echo "multiproc: not re-protected after 120 s"; exit 1; }
  sleep 0.5
done
"$COFFER" admin scrub status
verify

say "backup with chunk-3 dead"
"$COFFER" backup "$SRC"
verify

say "stopping the nodes (SIGTERM)"
for id in "${!PID[@]}"; do kill -TERM "${PID[$id]}"; done
for id in "${!PID[@]}"; do wait "${PID[$id]}" || { echo "multiproc: $id exited badly"; tail "$WORK/$id.log"; exit 1; }; done
PID=()
echo "multiproc: OK"
