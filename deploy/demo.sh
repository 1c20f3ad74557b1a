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
# Modes and modification times of every entry, sizes of all but directories (a
# directory's size is the file system's allocation, which depends on creation order).
list() { find . \( -type d -printf '%y %m %T@ - %l %p\n' \) -o -printf '%y %m %T@ %s %l %p\n' | sort; }
( cd "$SRC" && list ) >"$WORK/src.lst"
( cd "$RESTORE/src" && list ) >"$WORK/dst.lst"
diff "$WORK/src.lst" "$WORK/dst.lst"
FILES=$(grep -c '^f ' "$WORK/src.lst")
echo "verified: $FILES files, directories, symlinks, modes and mtimes identical"

say "dedup and throughput"
"$COFFER" snapshots --json >"$WORK/snaps.json"
# bytes_processed / bytes_added of each snapshot, in commit order.
PROC=$(grep -o '"bytes_processed": *[0-9]*' "$WORK/snaps.json" | grep -o '[0-9]*$' | tr '\n' ' ')
ADDS=$(grep -o '"bytes_added": *[0-9]*' "$WORK/snaps.json" | grep -o '[0-9]*$' | tr '\n' ' ')
DUR=$(json_field "$WORK/backup2.json" duration_s)
awk -v p="$PROC" -v a="$ADDS" -v d="$DUR" 'BEGIN {
  n = split(p, P, " "); split(a, A, " "); tp = 0; ta = 0
  for (i = 1; i <= n; i++) { tp += P[i]; ta += A[i] }
  printf "first backup:  processed %.1f MiB, stored %.1f MiB (dedup+compression %.2fx)\n",
    P[1]/1048576, A[1]/1048576, (A[1] > 0 ? P[1]/A[1] : 0)
  printf "second backup: processed %.1f MiB, stored %.1f KiB, %.1f MB/s\n",
    P[2]/1048576, A[2]/1024, (d > 0 ? P[2]/d/1e6 : 0)
  printf "both backups:  %.1f MiB of source kept in %.1f MiB (%.2fx before erasure coding)\n",
    tp/1048576, ta/1048576, (ta > 0 ? tp/ta : 0) }'

say "coffer admin status"
"$COFFER" admin status

say "stopping the cluster"
kill -INT "$DPID"; wait "$DPID"; DPID=
echo "demo: OK"
