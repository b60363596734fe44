#!/usr/bin/env bash
# A throwaway single-node Ceph cluster for the remote test suite and `npm run bench:remote`:
# one monitor, one memstore OSD (its data lives in RAM) and a RADOS Gateway (S3) on 127.0.0.1,
# from Debian's packages, cephx auth, every file (conf, keyrings, pid files, logs, mon store) under DIR.
#
#   .ci/ceph.sh start DIR   installs the packages if missing, starts the cluster, creates the S3 user
#                           `ckpt` and writes DIR/env (export lines for the AWS_* variables and
#                           CKPT_TEST_S3_URL); does nothing if the cluster in DIR already answers
#   .ci/ceph.sh stop DIR    kills the daemons named by DIR/run/*.pid and removes DIR
#
# Ports on 127.0.0.1: radosgw 7480 and the monitor 3300 (msgr2 only), or the next free ones if another
# cluster holds those (CKPT_CEPH_RGW_PORT / CKPT_CEPH_MON_PORT: exactly that port, or fail); the OSD takes
# free ones in 6800-7300. DIR/env names the gateway's. docs/ci-ceph.md says more.
set -euo pipefail

usage() { echo "usage: $0 start|stop|status DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
dir=$2
if [ "$cmd" = start ]; then mkdir -p "$dir"; elif [ ! -d "$dir" ]; then
  [ "$cmd" = stop ] && { echo "ceph: no $dir, nothing to stop"; exit 0; }
  echo "ceph: no $dir" >&2; exit 1
fi
dir=$(cd "$dir" && pwd)

rgw_port=${CKPT_CEPH_RGW_PORT:-7480}
mon_port=${CKPT_CEPH_MON_PORT:-3300}
mem_bytes=${CKPT_CEPH_MEMSTORE_BYTES:-$((4 * 1024 * 1024 * 1024))}
conf=$dir/ceph.conf
export CEPH_CONF=$conf

t0=$(date +%s.%N)
tstep=$t0
# prints how long the step that just ended took
took() {
  local now
  now=$(date +%s.%N)
  awk -v a="$tstep" -v b="$now" -v s="$1" 'BEGIN { printf "ceph: %-26s %5.1f s\n", s, b - a }'
  tstep=$now
}
elapsed() { awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $t0}"; }

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
rgw_up() { curl -s -o /dev/null -m 2 "http://127.0.0.1:$rgw_port/"; }
# a process is running (a zombie is not: the daemons are reparented to PID 1, which may reap late)
running() { local st; st=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) && [ -n "$st" ] && [ "$st" != Z ]; }
# the first free port from $1 on (only $1 when $2 says the user chose it)
free_port() {
  local p=$1 last=$(($1 + 99))
  [ "$2" = chosen ] && last=$1
  while [ "$p" -le "$last" ]; do
    port_taken "$p" || { echo "$p"; return 0; }
    p=$((p + 1))
  done
  return 1
}
# a pid file's process is running and is one of ours (not a process that got the pid of a dead daemon)
pid_alive() {
  local pid
  [ -f "$1" ] && pid=$(cat "$1") && [ -n "$pid" ] && running "$pid" || return 1
  case $(cat "/proc/$pid/comm" 2>/dev/null) in ceph-mon | ceph-osd | radosgw) return 0 ;; *) return 1 ;; esac
}

# SIGKILL: the data is thrown away anyway, a clean shutdown takes ~2 s a daemon, and memstore's
# would first write all the OSD's objects out to DIR
kill_daemons() {
  local f pid n
  for f in "$dir/run/client.rgw.ckpt.pid" "$dir/run/osd.0.pid" "$dir/run/mon.a.pid"; do
    pid_alive "$f" || continue
    pid=$(cat "$f")
    kill -9 "$pid" 2>/dev/null || true
    for n in $(seq 1 50); do running "$pid" || break; sleep 0.1; done
  done
}

stop() {
  kill_daemons
  # only a directory this script made (it has ceph.conf or nothing at all) is removed
  if [ -f "$conf" ] || [ -z "$(ls -A "$dir" 2>/dev/null)" ]; then rm -rf "$dir"; fi
}

fail() {
  echo "ceph: $1" >&2
  local f
  for f in "$dir"/log/*.log; do
    [ -f "$f" ] || continue
    echo "---- tail of $f" >&2
    tail -n 25 "$f" >&2
  done
  # no half-started cluster left running; its files stay in DIR for a look (start or stop removes them)
  kill_daemons
  exit 1
}

install_packages() {
  local missing=()
  command -v ceph-mon >/dev/null 2>&1 || missing+=(ceph-mon)
  command -v ceph-osd >/dev/null 2>&1 || missing+=(ceph-osd)
  command -v radosgw >/dev/null 2>&1 || missing+=(radosgw)
  command -v ceph >/dev/null 2>&1 || missing+=(ceph-common)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  command -v uuidgen >/dev/null 2>&1 || missing+=(uuid-runtime)
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "ceph: installing ${missing[*]} (Debian's packages, --no-install-recommends)"
  # a mirror out of sync fails one index (apt-get update exits 100, the other lists are fresh): the
  # install below says whether what is needed could be had
  apt-get update -qq >/dev/null 2>&1 || echo "ceph: apt-get update reported errors (a mirror out of sync?); installing from the package lists it has"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$dir/apt.log" 2>&1 \
    || { tail -n 20 "$dir/apt.log" >&2; echo "ceph: apt-get install failed" >&2; exit 1; }
  took "install packages"
}

write_env() {
  local info access secret
  # the user survives in the cluster when start runs again on a live one
  info=$(radosgw-admin user info --uid=ckpt 2>/dev/null) \
    || info=$(radosgw-admin user create --uid=ckpt --display-name=ckpt 2>>"$dir/log/radosgw-admin.log") \
    || fail "radosgw-admin user create failed"
  access=$(printf '%s\n' "$info" | sed -n 's/^ *"access_key": "\([^"]*\)".*/\1/p' | head -n 1)
  secret=$(printf '%s\n' "$info" | sed -n 's/^ *"secret_key": "\([^"]*\)".*/\1/p' | head -n 1)
  [ -n "$access" ] && [ -n "$secret" ] || fail "no keys in radosgw-admin's answer: $info"
  cat >"$dir/env.tmp" <<EOF
export AWS_ACCESS_KEY_ID=$access
export AWS_SECRET_ACCESS_KEY=$secret
export AWS_REGION=us-east-1
export AWS_ENDPOINT_URL_S3=http://127.0.0.1:$rgw_port
export CKPT_TEST_S3_URL=s3://ckpt-test/ci
EOF
  mv "$dir/env.tmp" "$dir/env"
}

start() {
  # a cluster that runs in DIR already: its gateway's port is in DIR/env
  [ -f "$dir/env" ] && rgw_port=$(sed -n 's|.*AWS_ENDPOINT_URL_S3=http://127.0.0.1:\([0-9]*\).*|\1|p' "$dir/env")
  if [ -f "$dir/env" ] && pid_alive "$dir/run/mon.a.pid" && pid_alive "$dir/run/osd.0.pid" \
      && pid_alive "$dir/run/client.rgw.ckpt.pid" && rgw_up; then
    echo "ceph: already running in $dir (radosgw on 127.0.0.1:$rgw_port); source $dir/env"
    return 0
  fi
  # leftovers of a half-started or crashed cluster in this DIR go first
  if [ -f "$conf" ]; then stop; mkdir -p "$dir"; fi
  install_packages
  rgw_port=$(free_port "${CKPT_CEPH_RGW_PORT:-7480}" "${CKPT_CEPH_RGW_PORT:+chosen}") \
    || fail "no free port for radosgw from ${CKPT_CEPH_RGW_PORT:-7480} (ps aux | grep radosgw: clusters left running?)"
  mon_port=$(free_port "${CKPT_CEPH_MON_PORT:-3300}" "${CKPT_CEPH_MON_PORT:+chosen}") \
    || fail "no free port for the monitor from ${CKPT_CEPH_MON_PORT:-3300} (ps aux | grep ceph-mon: clusters left running?)"

  mkdir -p "$dir/run" "$dir/log" "$dir/mon/a" "$dir/osd/0"
  local fsid
  fsid=$(uuidgen 2>/dev/null || cat /proc/sys/kernel/random/uuid)
  cat >"$conf" <<EOF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$mon_port]
ms bind msgr1 = false
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $dir/keyring
run dir = $dir/run
admin socket = $dir/run/\$name.asok
pid file = $dir/run/\$name.pid
log file = $dir/log/\$name.log
crash dir = $dir/crash
; one OSD: pools of one replica, few placement groups, no warnings about either
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
mon allow pool delete = true
mon data avail warn = 1
mon data avail crit = 0
; every client is this release's
auth allow insecure global id reclaim = false
mon warn on insecure global id reclaim allowed = false

[mon]
; commit map changes (pool creations, the OSD's boot) after 0.1 s, not 1 s
paxos propose interval = 0.1
mon data = $dir/mon/\$id
mon cluster log file = $dir/log/cluster.log

[osd]
osd data = $dir/osd/\$id
osd objectstore = memstore
memstore device bytes = $mem_bytes
osd max object size = 1073741824

[client.rgw.ckpt]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port tcp_nodelay=1
rgw data = $dir/rgw
rgw enable usage log = false
; deleted objects' data (it is RAM) freed after a minute, not after two hours
rgw gc obj min wait = 60
rgw gc processor period = 60
EOF
  # every key in one keyring: the monitor imports them all at mkfs, so no `ceph auth add` round trips
  ceph-authtool --create-keyring "$dir/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool "$dir/keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
  ceph-authtool "$dir/keyring" --gen-key -n osd.0 \
    --cap mon 'allow profile osd' --cap osd 'allow *' --cap mgr 'allow profile osd' >/dev/null
  ceph-authtool "$dir/keyring" --gen-key -n client.rgw.ckpt \
    --cap mon 'allow rw' --cap osd 'allow rwx' --cap mgr 'allow rw' >/dev/null
  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$dir/monmap" >/dev/null
  ceph-mon --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/keyring" 2>>"$dir/log/mkfs.log" || fail "ceph-mon --mkfs failed"
  took "config, keys, mon mkfs"

  ceph-mon -i a 2>>"$dir/log/daemons.stderr" || fail "ceph-mon did not start"
  ceph --connect-timeout 30 mon stat >/dev/null 2>>"$dir/log/ceph-cli.log" || fail "the monitor does not answer"
  took "monitor up"

  local osd_uuid
  osd_uuid=$(uuidgen 2>/dev/null || cat /proc/sys/kernel/random/uuid)
  [ "$(timeout 60 ceph osd new "$osd_uuid" 0 2>>"$dir/log/ceph-cli.log")" = 0 ] || fail "ceph osd new did not give id 0"
  # every pool radosgw uses, made now while the OSD starts: radosgw would make each on first use, at
  # ~2 s a pool (its own four at startup, the bucket pools at a test's first CreateBucket and PutObject)
  local pool_names=(.rgw.root default.rgw.control default.rgw.meta default.rgw.log
    default.rgw.buckets.index default.rgw.buckets.non-ec default.rgw.buckets.data)
  (
    for pool in "${pool_names[@]}"; do timeout 60 ceph osd pool create "$pool" 8 8 replicated --autoscale-mode=off & done
    wait
    for pool in "${pool_names[@]}"; do timeout 60 ceph osd pool application enable "$pool" rgw & done
    wait
  ) >>"$dir/log/ceph-cli.log" 2>&1 &
  local pools=$!
  ceph-osd -i 0 --mkfs --osd-uuid "$osd_uuid" 2>>"$dir/log/mkfs.log" >/dev/null || fail "ceph-osd --mkfs failed"
  ceph-osd -i 0 2>>"$dir/log/daemons.stderr" || fail "ceph-osd did not start"
  local n
  for n in $(seq 1 120); do
    timeout 10 ceph osd dump 2>/dev/null | grep -q '^osd\.0 up' && break
    [ "$n" = 120 ] && fail "osd.0 not up after 60 s"
    sleep 0.5
  done
  took "osd up"
  wait "$pools" || fail "could not create the pools"
  [ "$(timeout 10 ceph osd pool ls 2>/dev/null | grep -c rgw)" = ${#pool_names[@]} ] || fail "pools are missing"
  took "pools"

  radosgw -n client.rgw.ckpt 2>>"$dir/log/daemons.stderr" || fail "radosgw did not start"
  for n in $(seq 1 240); do
    rgw_up && break
    [ "$n" = 240 ] && fail "radosgw does not answer HTTP on 127.0.0.1:$rgw_port after 120 s"
    pid_alive "$dir/run/client.rgw.ckpt.pid" || [ "$n" -lt 10 ] || fail "radosgw exited"
    sleep 0.5
  done
  took "radosgw answers"

  write_env
  took "S3 user ckpt"
  echo "ceph: up in $(elapsed) s: radosgw on http://127.0.0.1:$rgw_port, logs in $dir/log; source $dir/env"
}

case $cmd in
  start) start ;;
  stop) stop; echo "ceph: stopped, $dir removed" ;;
  status) ceph --connect-timeout 5 -s ;;
  *) usage ;;
esac
