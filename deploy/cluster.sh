#!/usr/bin/env bash
# deploy/cluster.sh up|down|status|admin ARGS...: the container cluster of docs/deploy.md
# (deploy/compose.yaml: 3 meta servers, 7 chunk nodes, one backup agent), bootstrapped with
# the production commands and nothing else: every step below is a step of docs/deploy.md
# ("Bootstrapping a cluster"), numbered the same way. `make cluster-up` / `make cluster-down`.
#
# The operator's machines are played by two tool containers of the compose file: `ca` (the
# CA host, no network) and `admin` (the admin's workstation). Their files live in the host's
# bootstrap directory COFFER_CLUSTER_DIR:
#   ca/     the CA: ca.pem and ca-key.pem. The CA key is never copied anywhere else.
#   admin/  the admin's key (made there), certificate, ca.pem and coffer.yaml
#   carry/  what the operator carries between machines: CSRs out of the nodes, certificates
#           into them. Public files only.
# Files are carried into and out of a node's volume with `docker cp`, the container
# equivalent of scp; a node's private key is generated in its own volume by `cofferd ca
# request` or `cofferd join` and never leaves it.
#
# Environment: COFFER_CLUSTER_DIR (default bin/cluster), COFFER_IMAGE (default coffer:dev,
# built by `make image`), COMPOSE_PROJECT_NAME (default coffer), COFFER_SUBNET_PREFIX
# (default 10.213.0), COMPOSE (default: `docker compose` if present, else docker-compose),
# COFFER_COMPOSE_OVERRIDE (a second compose file merged over compose.yaml: the chaos suite's
# deploy/chaos/compose.chaos.yaml), COFFER_NO_AGENT (skip step 7, the agent: the chaos
# suite enrolls its own).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
STATE=${COFFER_CLUSTER_DIR:-$ROOT/bin/cluster}
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
export COFFER_CLUSTER_DIR=$STATE
export COFFER_IMAGE=${COFFER_IMAGE:-coffer:dev}
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-coffer}
export COFFER_SUBNET_PREFIX=${COFFER_SUBNET_PREFIX:-10.213.0}
export COFFER_UID=${COFFER_UID:-$(id -u)} COFFER_GID=${COFFER_GID:-$(id -g)}
if [ -z "${COMPOSE:-}" ]; then
  if docker compose version >/dev/null 2>&1; then COMPOSE="docker compose"; else COMPOSE=docker-compose; fi
fi
NET=$COFFER_SUBNET_PREFIX
PORT=7000
META_IDS=(meta-1 meta-2 meta-3)
CHUNK_IDS=(chunk-1 chunk-2 chunk-3 chunk-4 chunk-5 chunk-6 chunk-7)
DATA=/var/lib/coffer
VAULT=${COFFER_VAULT:-default}
AGENT_NAME=${COFFER_AGENT_NAME:-agent-1}
WAIT=${COFFER_WAIT:-180}

say() { printf '\n== %s (%d s)\n' "$*" "$SECONDS" >&2; }
die() { echo "cluster: $*" >&2; exit 1; }
dc() { $COMPOSE -f "$HERE/compose.yaml" ${COFFER_COMPOSE_OVERRIDE:+-f "$COFFER_COMPOSE_OVERRIDE"} --profile tools "$@"; }
# The address of a service on the private network.
addr() {
  case $1 in
    meta-*) echo "$NET.$((10 + ${1#meta-})):$PORT" ;;
    chunk-*) echo "$NET.$((20 + ${1#chunk-})):$PORT" ;;
    agent) echo "$NET.31:$PORT" ;;
  esac
}
domain() { echo "rack-${1#*-}"; }
# On a node's machine: a one-off container of that service (its volume, its address), with
# the operator's carry/ directory mounted read-only at /carry (a USB stick, or scp).
# A join token is passed in the environment (COFFER_JOIN_TOKEN), not on a command line.
on_node() {
  local svc=$1; shift
  dc run --rm --no-deps -T -v "$STATE/carry:/carry:ro" ${COFFER_JOIN_TOKEN:+-e COFFER_JOIN_TOKEN} "$svc" "$@"
}
# On the CA host and on the admin's workstation.
on_ca() { dc run --rm -T ca "$@"; }
coffer_admin() { dc run --rm -T admin "$@"; }
# The service's container, by compose's labels: the docker CLI answers in a tenth of a
# second where docker-compose (v1, Python) takes seconds on a loaded machine, and the
# carries below ask for it once per file.
container() {
  docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" \
    --filter "label=com.docker.compose.service=$1" --filter "label=com.docker.compose.oneoff=False"
}
# Carry public files between the host's carry/ directory and a node's data directory.
carry_out() { # carry_out SVC FILE...
  local svc=$1 f; shift
  mkdir -p "$STATE/carry/$svc"
  for f in "$@"; do docker cp "$(container "$svc"):$DATA/$f" "$STATE/carry/$svc/$f"; done
}
carry_in() { # carry_in SVC FILE...: carry/SVC/FILE into the node's data directory
  local svc=$1 f; shift
  for f in "$@"; do
    chmod 0644 "$STATE/carry/$svc/$f"
    docker cp "$STATE/carry/$svc/$f" "$(container "$svc"):$DATA/$f"
  done
}

# The operator's additions to the node.yaml that bootstrap or join wrote: Prometheus
# metrics on the node's address of the private network (its management network here).
configure_node() { # configure_node SVC
  local svc=$1 ip
  ip=$(addr "$svc"); ip=${ip%:*}
  carry_out "$svc" node.yaml
  printf 'metrics_listen: %s:9450\n' "$ip" >>"$STATE/carry/$svc/node.yaml"
  carry_in "$svc" node.yaml
}

status() { coffer_admin admin status "$@"; }
# The agent container runs the agent daemon (`coffer agent run`) when this build has it.
start_agent() {
  if on_node agent agent run --help >/dev/null 2>&1; then
    dc up -d agent
  else
    echo "cluster: this coffer has no 'agent run': the agent container is used for one-off commands only" >&2
  fi
}
wait_status() { # wait until `coffer admin status` answers on the admin side
  local deadline=$((SECONDS + WAIT))
  until status >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { status || true; die "coffer admin status did not answer within ${WAIT}s"; }
    sleep 1
  done
}
token() { # token ROLE ID: a one-time node join token from the admin
  coffer_admin admin node-token create --role "$1" --id "$2" --domain "$(domain "$2")" --ttl 1h | tr -d '\r\n'
}

bootstrap() {
  mkdir -p -m 0700 "$STATE/ca" "$STATE/admin"
  mkdir -p "$STATE/carry"
  say "1. the CA (on the CA host; its key stays there)"
  on_ca ca init --out /ca
  cp "$STATE/ca/ca.pem" "$STATE/carry/ca.pem"

  say "2. the node machines: containers, network and empty volumes"
  dc up --no-start "${META_IDS[@]}" "${CHUNK_IDS[@]}" agent

  say "3. the first meta server, meta-1: keys made on meta-1, certificates signed on the CA host"
  on_node meta-1 ca request --id meta-1 --issuer --data "$DATA"
  carry_out meta-1 node.csr issuer.csr
  on_ca ca sign --ca-dir /ca --csr meta-1/node.csr --role meta --id meta-1 --out meta-1/node.pem
  on_ca ca sign --ca-dir /ca --csr meta-1/issuer.csr --role issuer --id meta-1 --out meta-1/issuer.pem
  carry_in meta-1 node.pem issuer.pem
  on_node meta-1 bootstrap --id meta-1 --data "$DATA" --ca /carry/ca.pem \
    --listen "$(addr meta-1)" --domain "$(domain meta-1)"
  configure_node meta-1
  dc up -d meta-1

  say "4. the first admin: key made on the workstation, certificate signed on the CA host"
  coffer_admin cert request --principal admin --key admin-key.pem --csr admin.csr
  cp "$STATE/admin/admin.csr" "$STATE/carry/admin.csr"
  on_ca ca sign --ca-dir /ca --csr admin.csr --role admin --id admin --out admin.pem
  cp "$STATE/carry/admin.pem" "$STATE/carry/ca.pem" "$STATE/admin/"
  cat >"$STATE/admin/coffer.yaml" <<EOF
meta: ["$(addr meta-1)", "$(addr meta-2)", "$(addr meta-3)"]
ca: ca.pem
cert: admin.pem
key: admin-key.pem
EOF
  wait_status

  say "5. two more meta servers: join with a one-time token, then become voters"
  local id tok
  for id in meta-2 meta-3; do
    tok=$(token meta "$id")
    COFFER_JOIN_TOKEN=$tok on_node "$id" join --meta "$(addr meta-1)" --ca /carry/ca.pem --id "$id" \
      --listen "$(addr "$id")" --data "$DATA"
    carry_out "$id" issuer.csr
    on_ca ca sign --ca-dir /ca --csr "$id/issuer.csr" --role issuer --id "$id" --out "$id/issuer.pem"
    carry_in "$id" issuer.pem
    configure_node "$id"
    dc up -d "$id"
    coffer_admin admin meta add "$id" "$(addr "$id")" --reason "cluster bootstrap"
  done

  say "6. seven chunk nodes: join with a one-time token, then enter the map"
  # The chunk machines are independent: their tokens and joins run side by side.
  local pids=() n=0
  for id in "${CHUNK_IDS[@]}"; do
    ( tok=$(token chunk "$id") && COFFER_JOIN_TOKEN=$tok on_node "$id" join --meta "$(addr meta-1)" \
        --ca /carry/ca.pem --id "$id" --listen "$(addr "$id")" --data "$DATA" &&
      configure_node "$id" ) &
    pids+=($!)
  done
  for id in "${pids[@]}"; do wait "$id" || n=$((n + 1)); done
  [ "$n" = 0 ] || die "$n chunk node joins failed"
  dc up -d "${CHUNK_IDS[@]}"
  for id in "${CHUNK_IDS[@]}"; do
    local deadline=$((SECONDS + WAIT))
    until coffer_admin admin node add "$id" --reason "cluster bootstrap"; do
      [ $SECONDS -lt $deadline ] || die "chunk node $id was not seen by the cluster within ${WAIT}s"
      sleep 2
    done
  done
  coffer_admin admin rebalance apply --wait

  if [ -n "${COFFER_NO_AGENT:-}" ]; then
    say "7. (skipped: COFFER_NO_AGENT is set; the caller enrolls its own agents)"
    return
  fi

  say "7. the backup agent: enrolled with a one-time token; its key is made in its volume"
  tok=$(coffer_admin --vault "$VAULT" admin enroll-token create --name "$AGENT_NAME" --ttl 1h | tr -d '\r\n')
  on_node agent agent enroll --token "$tok" --meta "$(addr meta-1),$(addr meta-2),$(addr meta-3)" \
    --ca /carry/ca.pem --out "$DATA"
  touch "$STATE/agent-enrolled"
  start_agent
}

case "${1:-}" in
  up)
    start=$SECONDS
    if [ -f "$STATE/ca/ca-key.pem" ] && [ -f "$STATE/admin/coffer.yaml" ]; then
      say "the cluster in $STATE exists: starting its containers"
      dc up -d "${META_IDS[@]}" "${CHUNK_IDS[@]}"
      [ ! -f "$STATE/agent-enrolled" ] || start_agent
    else
      [ -z "$(ls -A "$STATE" 2>/dev/null)" ] || die "$STATE holds a partial bootstrap: run '$0 down' first"
      bootstrap
    fi
    wait_status
    say "coffer admin status (from the admin's workstation, $((SECONDS - start)) s after start)"
    status
    ;;
  status)
    status "${@:2}"
    ;;
  admin)
    coffer_admin "${@:2}"
    ;;
  down)
    dc down --volumes --remove-orphans
    rm -rf "$STATE"
    ;;
  *)
    echo "usage: $0 up|down|status|admin COFFER-ARGS..." >&2
    exit 2
    ;;
esac
