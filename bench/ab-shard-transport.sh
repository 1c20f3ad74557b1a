#!/bin/bash
# A/B: shard transport tcp vs quic on a cofferd dev cluster, backup + restore of /usr/local/go.
# Usage: make build; B=bin SRC=/usr/local/go WORK=/tmp/coffer-ab bench/ab-shard-transport.sh
set -u
B=${B:-bin}
SRC=${SRC:-/usr/local/go}
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
run() {
  mode=$1; round=$2; D=${WORK:-/tmp/coffer-ab}/c-$mode-$round; rm -rf $D ${WORK:-/tmp/coffer-ab}/r-$mode-$round; mkdir -p $D
  $B/cofferd dev --dir $D/cluster > $D/log 2>&1 & P=$!
  until grep -q "dev cluster ready" $D/log; do sleep 0.2; done
  kill $P; wait $P 2>/dev/null
  for f in $(grep -l "^id:" -r $D/cluster --include=*.yaml); do
    grep -q "shard_transport" $f || echo "shard_transport: $mode" >> $f
  done
  $B/cofferd dev --dir $D/cluster > $D/log2 2>&1 & P=$!
  until grep -q "dev cluster ready" $D/log2; do sleep 0.2; done
  export COFFER_CONFIG=$D/cluster/coffer.yaml COFFER_PASSPHRASE=abtest
  $B/coffer init >/dev/null 2>&1
  c0=$(cpu $P); t0=$(date +%s.%N)
  /usr/bin/time -f "%U %S" -o $D/agent_b $B/coffer -q backup $SRC >/dev/null
  t1=$(date +%s.%N); c1=$(cpu $P)
  /usr/bin/time -f "%U %S" -o $D/agent_r $B/coffer -q restore latest --target ${WORK:-/tmp/coffer-ab}/r-$mode-$round >/dev/null
  t2=$(date +%s.%N); c2=$(cpu $P)
  tck=$(getconf CLK_TCK)
  echo "$mode round $round: backup $(echo "$t1-$t0"|bc) s (cofferd cpu $(echo "($c1-$c0)/$tck"|bc -l|cut -c1-5) s, agent $(cat $D/agent_b)); restore $(echo "$t2-$t1"|bc) s (cofferd cpu $(echo "($c2-$c1)/$tck"|bc -l|cut -c1-5) s, agent $(cat $D/agent_r)); load $(cut -d' ' -f1 /proc/loadavg)"
  kill $P; wait $P 2>/dev/null
  rm -rf ${WORK:-/tmp/coffer-ab}/r-$mode-$round $D
}
mkdir -p ${WORK:-/tmp/coffer-ab}
for r in 1 2 3; do run tcp $r; run quic $r; done
