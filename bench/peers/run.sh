#!/usr/bin/env bash
# bench/peers/run.sh — `npm run bench:peers`: ckpt side by side with restic, borg, casync, QEMU qcow2
# backing chains and zstd, in one run on one machine, with the project's own harness (bench/peers/*.ts,
# built into dist/bench/peers by `npm run build`). For each series:
#   1. dist/bench/peers/run.js: every tool over the synthetic series -> bench/results/peers[-small].tsv
#      (+ .ingest.tsv, .env); a tool that is not installed is skipped with a line saying how to install it;
#   2. dist/bench/peers-hints.js: the same series through the library with dirty hints, one row appended;
# then 3. dist/bench/peers-report.js: bench/results/peers.md (both series' tables, targets) and peers.svg.
# Env: PEERS_SERIES=both|small|default (default both; the small series first: 30 × 192 MiB, minutes;
#      the default one is 100 × 768 MiB, hours with every tool), TOOLS="ideal ckpt qemu-chain ..." (a
#      subset, in this order), HINTS=0 skips step 2, REPORT_ONLY=1 only redoes step 3; WORK, STAGE,
#      KEEP_REPOS, MIN_FREE_GB, PEERS_INTERLEAVE=0 (one tool after the other instead of every checkpoint
#      through every tool in turn), PEERS_CORPUS as in bench/peers/run.ts.
# Tools: apt-get install -y restic borgbackup casync qemu-utils time zstd
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUTDIR=$ROOT/bench/results
report() { node "$ROOT/dist/bench/peers-report.js" "$OUTDIR"; }
[ "${REPORT_ONLY:-0}" = 1 ] && { report; exit $?; }
case ${PEERS_SERIES:-both} in
  both) LIST="small default" ;;
  small|default|tiny) LIST=$PEERS_SERIES ;;
  *) echo "bench:peers: PEERS_SERIES must be both, small or default (got '$PEERS_SERIES')" >&2; exit 2 ;;
esac
[ -f "$ROOT/dist/bench/peers/run.js" ] || { echo "bench:peers: run npm run build first" >&2; exit 2; }
for s in $LIST; do
  case $s in default) OUT=$OUTDIR/peers.tsv ;; *) OUT=$OUTDIR/peers-$s.tsv ;; esac
  node "$ROOT/dist/bench/peers/run.js" --series "$s" --out "$OUT" ${TOOLS:+--tools "$TOOLS"}
  rc=$?; [ $rc -eq 2 ] && exit 2
  [ $rc -eq 0 ] || echo "bench:peers: the $s series' run exited $rc" >&2
  if [ "${HINTS:-1}" = 1 ]; then
    node "$ROOT/dist/bench/peers-hints.js" --series "$s" "$OUT" || echo "bench:peers: the library run (dirty hints) failed" >&2
  fi
done
report
