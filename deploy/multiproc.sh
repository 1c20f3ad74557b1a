#!/usr/bin/env bash
# make test-multiproc: the dev cluster as separate processes. `cofferd dev --init-only`
# writes the CA, certificates and one config per node; each node then runs as its own
# `cofferd run --config FILE` process. Backs up a directory, restores and verifies it,
# SIGKILLs one chunk node and restores again (any k=4 of 6 shards serve every read), and
# stops the rest with SIGTERM.
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

"$COFFERD" dev --dir "$D" --init-only
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
say "backup with chunk-3 dead"
"$COFFER" backup "$SRC"
verify

say "stopping the nodes (SIGTERM)"
for id in "${!PID[@]}"; do kill -TERM "${PID[$id]}"; done
for id in "${!PID[@]}"; do wait "${PID[$id]}" || { echo "multiproc: $id exited badly"; tail "$WORK/$id.log"; exit 1; }; done
PID=()
echo "multiproc: OK"
