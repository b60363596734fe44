#!/usr/bin/env bash
# bench/peers/run.sh — ckpt side by side with restic, borg, casync, QEMU qcow2 chains and zstd, in one run
# on one machine, through the shared harness (../shared/peers, or PEERS_DIR). `npm run bench:peers`.
#   1. copies the harness to bench/results/tmp/peers-harness and adds ckpt's plug-in (bench/peers/ckpt.sh);
#   2. makes the synthetic default series as a lazy recipe (make-synthetic.py --lazy; SERIES_ARGS to change);
#   3. run-peers.sh over TOOLS -> bench/results/peers.tsv (+ peers.ingest.tsv);
#   4. the same series through the library with dirty-page hints (dist/bench/peers-hints.js), rows appended;
#   5. bench/results/peers.md (table, targets) and peers.svg (chart) from the TSVs.
# Env: PEERS_DIR, SERIES_ARGS (default: the harness's defaults), TOOLS, WORK (default /tmp/peers-work),
#      HINTS=0 skips step 4, REPORT_ONLY=1 only redoes step 5.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PEERS_DIR=${PEERS_DIR:-$ROOT/../shared/peers}
OUTDIR=$ROOT/bench/results
OUT=$OUTDIR/peers.tsv
export WORK=${WORK:-/tmp/peers-work}
report() { node "$ROOT/dist/bench/peers-report.js" "$OUT" "$OUTDIR/peers.md" "$OUTDIR/peers.svg"; }
[ "${REPORT_ONLY:-0}" = 1 ] && { report; exit 0; }
[ -x "$PEERS_DIR/run-peers.sh" ] || { echo "bench:peers: no harness at $PEERS_DIR (set PEERS_DIR to the peers/ folder)" >&2; exit 2; }
missing=""
for c in restic borg casync qemu-img zstd /usr/bin/time; do command -v "$c" >/dev/null || missing+=" $c"; done
/usr/bin/python3 -c 'import numpy, zstandard' 2>/dev/null || missing+=" python3-numpy/python3-zstandard"
if [ -n "$missing" ]; then
  echo "bench:peers: missing$missing; install with:" >&2
  echo "  apt-get update && apt-get install -y restic borgbackup casync qemu-utils time zstd python3-zstandard python3-numpy" >&2
  exit 2
fi
H=$OUTDIR/tmp/peers-harness
rm -rf "$H"; mkdir -p "$H"
cp -r "$PEERS_DIR"/. "$H"/
rm -rf "$H/results"
cp "$ROOT"/bench/peers/*.sh "$H/tools/" && rm -f "$H/tools/run.sh"
export CKPT_CLI=$ROOT/dist/src/cli.js
# shellcheck disable=SC2086
SERIES=$(/usr/bin/python3 "$H/make-synthetic.py" --lazy ${SERIES_ARGS:-})
echo "bench:peers: series $SERIES" >&2
export TOOLS=${TOOLS:-"ideal ckpt qemu-chain qemu-chain-4k borg-fixed4k borg restic casync zstd-countonly"}
{ echo "# machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(. /etc/os-release; echo "$PRETTY_NAME"), node $(node --version), $(date -u +%FT%TZ)"
  echo "# restic: $(restic version 2>&1 | head -n 1)"
  for c in borg casync qemu-img zstd; do echo "# $c: $($c --version 2>&1 | head -n 1)"; done
  echo "# series: $SERIES"; } > "$OUTDIR/peers.env"
"$H/run-peers.sh" "$SERIES" "$OUT"
if [ "${HINTS:-1}" = 1 ]; then
  node "$ROOT/dist/bench/peers-hints.js" "$SERIES" "$H" "$OUT"
fi
report
