#!/usr/bin/env bash
# make demo: start the one-process dev cluster, back up the Go toolchain's src tree,
# restore it, verify it is bit-identical, back it up again to show dedup, print stats,
# and stop the cluster cleanly. Everything lives in a temporary directory.
set -euo pipefail
BIN=${BIN:-bin}
GO=${GO:-go}
COFFER=$BIN/coffer
COFFERD=$BIN/cofferd

SRC=$("$GO" env GOROOT)/src
WORK=$(mktemp -d "${TMPDIR:-/tmp}/coffer-demo.XXXXXX")
CLUSTER=$WORK/cluster
RESTORE=$WORK/restore
LOG=$WORK/cofferd.log
DPID=
cleanup() {
  if [ -n "$DPID" ] && kill -0 "$DPID" 2>/dev/null; then
    kill -INT "$DPID"; wait "$DPID" || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

say() { printf '\n== %s\n' "$*"; }
json_field() { # json_field FILE KEY -> first numeric/string value of KEY
  sed -n "s/.*\"$2\": *\"\{0,1\}\([^,\"}]*\)\"\{0,1\}.*/\1/p" "$1" | head -1
}

say "starting dev cluster (3 meta + 6 chunk nodes, QUIC on 127.0.0.1) in $CLUSTER"
"$COFFERD" dev --dir "$CLUSTER" >"$LOG" 2>&1 &
DPID=$!
for _ in $(seq 1 600); do
  grep -q "dev cluster ready" "$LOG" 2>/dev/null && break
  kill -0 "$DPID" 2>/dev/null || { cat "$LOG"; echo "demo: cofferd exited"; exit 1; }
  sleep 0.1
done
grep -q "dev cluster ready" "$LOG" || { cat "$LOG"; echo "demo: cluster not ready after 60 s"; exit 1; }
cat "$LOG"

export COFFER_CONFIG=$CLUSTER/coffer.yaml
export COFFER_PASSPHRASE=demo-passphrase-not-for-production

say "coffer init"
"$COFFER" init

say "coffer backup $SRC"
"$COFFER" backup "$SRC"
"$COFFER" backup --json "$SRC" >"$WORK/backup2.json"

say "coffer snapshots"
"$COFFER" snapshots

say "coffer restore latest --target $RESTORE"
"$COFFER" restore latest --target "$RESTORE"

say "verifying the restore is bit-identical"
# Content, symlinks and file types: diff -r compares every file byte for byte.
diff -r --no-dereference "$SRC" "$RESTORE/src"
# Modes and modification times of every entry.
( cd "$SRC" && find . -printf '%y %m %T@ %s %l %p\n' | sort ) >"$WORK/src.lst"
( cd "$RESTORE/src" && find . -printf '%y %m %T@ %s %l %p\n' | sort ) >"$WORK/dst.lst"
diff "$WORK/src.lst" "$WORK/dst.lst"
FILES=$(grep -c '^f ' "$WORK/src.lst")
echo "verified: $FILES files, directories, symlinks, modes and mtimes identical"

say "second backup of the same tree (dedup)"
PROCESSED=$(json_field "$WORK/backup2.json" bytes_processed)
ADDED=$(json_field "$WORK/backup2.json" bytes_added)
DUR=$(json_field "$WORK/backup2.json" duration_s)
awk -v p="$PROCESSED" -v a="$ADDED" -v d="$DUR" 'BEGIN {
  printf "processed %.1f MiB, added %.1f KiB, dedup ratio %.0fx, %.1f MB/s\n",
    p/1048576, a/1024, (a > 0 ? p/a : p), (d > 0 ? p/d/1e6 : 0) }'

say "coffer admin status"
"$COFFER" admin status

say "stopping the cluster"
kill -INT "$DPID"; wait "$DPID"; DPID=
echo "demo: OK"
