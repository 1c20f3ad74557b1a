#!/usr/bin/env bash
# make test-cluster: the container cluster's acceptance run (needs Docker Engine,
# docker-compose, openssl and python3; not part of `make test`).
#   1. deploy/cluster.sh up: bootstraps 3 meta + 7 chunk containers and the agent with the
#      commands of docs/deploy.md, timed;
#   2. every meta server and chunk node answers `coffer admin status` (state up);
#   3. key separation (deploy/cluster-keycheck.py): no node volume holds another machine's
#      private key or the CA key, and each holds its own;
#   4. a backup and a restore from the agent container, the restored tree compared byte for
#      byte with the source;
#   5. deploy/cluster.sh down: no container, network or volume of the project is left.
# KEEP=1 leaves the cluster running (deploy/cluster.sh down removes it).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
COFFER_CLUSTER_DIR=${COFFER_CLUSTER_DIR:-$ROOT/bin/cluster}
case $COFFER_CLUSTER_DIR in /*) ;; *) COFFER_CLUSTER_DIR=$PWD/$COFFER_CLUSTER_DIR ;; esac
export COFFER_CLUSTER_DIR  # absolute: compose reads a relative path as a volume name
export COFFER_IMAGE=${COFFER_IMAGE:-coffer:dev}
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-coffer}
export COFFER_AGENT_DATA=${COFFER_AGENT_DATA:-$ROOT/docs}
if [ -z "${COMPOSE:-}" ]; then
  if docker compose version >/dev/null 2>&1; then COMPOSE="docker compose"; else COMPOSE=docker-compose; fi
fi
export COMPOSE
P=$COMPOSE_PROJECT_NAME
WORK=$(mktemp -d "${TMPDIR:-/tmp}/coffer-cluster-test.XXXXXX")
dc() { $COMPOSE -f "$HERE/compose.yaml" --profile tools "$@"; }
say() { printf '\n== %s\n' "$*"; }
fail() { echo "test-cluster: FAIL: $*"; exit 1; }
done_ok=
cleanup() {
  if [ -z "$done_ok" ]; then
    echo "test-cluster: container logs (last 20 lines each):"
    dc logs --no-color --tail 20 2>/dev/null | tail -300 || true
    if [ -z "${KEEP:-}" ]; then "$HERE/cluster.sh" down >/dev/null 2>&1 || true; fi
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

[ -z "$(docker ps -aq --filter "label=com.docker.compose.project=$P")" ] ||
  fail "project $P already has containers: run deploy/cluster.sh down first"

say "1. cluster-up (bootstrap with the commands of docs/deploy.md)"
t0=$(date +%s)
"$HERE/cluster.sh" up | tee "$WORK/up.txt"
up_s=$(( $(date +%s) - t0 ))
echo "cluster-up took ${up_s} s"

say "2. every meta server and chunk node answers coffer admin status"
"$HERE/cluster.sh" status --json >"$WORK/status.json"
python3 - "$WORK/status.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
nodes = {n["id"]: n for n in s["nodes"]}
want = ["meta-%d" % i for i in range(1, 4)] + ["chunk-%d" % i for i in range(1, 8)]
down = [i for i in want if nodes.get(i, {}).get("state") != "up"]
voters = [v["id"] for v in s["raft"]["servers"] if v.get("voter")]
if down or sorted(voters) != want[:3]:
    sys.exit("status: not up: %s; voters %s" % (down, voters))
active = [n["id"] for n in s["nodes"] if n.get("map_state") == "active"]
if sorted(active) != want[3:]:
    sys.exit("status: active chunk nodes %s" % active)
print("status: %d nodes up, voters %s, leader %s, %d active chunk nodes, map epoch %s" % (
    len(want), ",".join(voters), s["raft"]["leader"], len(active), s["map_epoch"]))
EOF
ids=$(docker ps --filter "label=com.docker.compose.project=$P" --format '{{.Names}}' | sort)
echo "running containers:" $ids
[ "$(echo "$ids" | grep -c -E '_(meta|chunk)-[0-9]+_1$')" = 10 ] || fail "want 10 node containers running"

say "3. key separation: no node volume holds another machine's private key or the CA key"
args=()
for svc in meta-1 meta-2 meta-3 chunk-1 chunk-2 chunk-3 chunk-4 chunk-5 chunk-6 chunk-7 agent; do
  args+=("$svc=docker cp $(dc ps -q "$svc"):/var/lib/coffer -")
done
python3 "$HERE/cluster-keycheck.py" "$COFFER_CLUSTER_DIR" "${args[@]}"
# The check can fail: a machine whose files hold a copy of the CA key (planted in a tar
# stream, no volume is touched) and one holding chunk-1's key inside a log line.
keyline=$(docker cp "$(dc ps -q chunk-1):/var/lib/coffer/node-key.pem" - | tar -xO | sed -n 2p)
mkdir -p "$WORK/planted/logs" && echo "debug: loaded key $keyline" >"$WORK/planted/logs/node.log"
cp "$COFFER_CLUSTER_DIR/ca/ca-key.pem" "$WORK/planted/backup.pem"
if python3 "$HERE/cluster-keycheck.py" "$COFFER_CLUSTER_DIR" "${args[@]}" \
     "planted=tar -cf - -C $WORK/planted ." >"$WORK/planted.txt"; then
  fail "the key check passed with the CA key and chunk-1's key planted on another machine"
fi
grep -q "the CA key is held by planted" "$WORK/planted.txt" &&
  grep -q "planted:./logs/node.log contains the private key of chunk-1" "$WORK/planted.txt" ||
  { cat "$WORK/planted.txt"; fail "the key check did not name the planted keys"; }
echo "keycheck refuses planted keys:"; sed 's/^/  /' "$WORK/planted.txt"

say "4. backup and restore from the agent container ($COFFER_AGENT_DATA mounted at /data)"
agent() { dc run --rm --no-deps -T -e COFFER_PASSPHRASE=cluster-test-passphrase agent "$@"; }
agent init
t0=$(date +%s)
agent backup /data
backup_s=$(( $(date +%s) - t0 ))
agent snapshots
t0=$(date +%s)
agent restore latest --target /var/lib/coffer/restore
restore_s=$(( $(date +%s) - t0 ))
docker cp "$(dc ps -q agent):/var/lib/coffer/restore/data" "$WORK/restored"
diff -r --no-dereference "$COFFER_AGENT_DATA" "$WORK/restored" || fail "the restored tree differs from $COFFER_AGENT_DATA"
echo "restore verified: $(find "$WORK/restored" -type f | wc -l) files, $(du -sb "$WORK/restored" | cut -f1) bytes identical (backup ${backup_s} s, restore ${restore_s} s)"

if [ -n "${KEEP:-}" ]; then done_ok=1; echo "test-cluster: OK (cluster kept; deploy/cluster.sh down removes it)"; exit 0; fi

say "5. cluster-down removes the containers, their network and volumes"
t0=$(date +%s)
"$HERE/cluster.sh" down
down_s=$(( $(date +%s) - t0 ))
left="$(docker ps -aq --filter "label=com.docker.compose.project=$P")$(docker network ls -q --filter "label=com.docker.compose.project=$P")$(docker volume ls -q --filter "label=com.docker.compose.project=$P")"
[ -z "$left" ] || fail "left after cluster-down: $left"
[ ! -e "$COFFER_CLUSTER_DIR" ] || fail "$COFFER_CLUSTER_DIR is left after cluster-down"
echo "cluster-down took ${down_s} s; no container, network or volume of project $P is left"
done_ok=1
echo "test-cluster: OK (cluster-up ${up_s} s, backup ${backup_s} s, restore ${restore_s} s, cluster-down ${down_s} s)"
