/**
 * The peers the harness measures ckpt against, each a small plug-in: bash bodies the runner times
 * from outside, one process per phase (`bash -c BODY _ ARGS...`, under /usr/bin/time). Every body
 * sees REPO (the tool's fresh repository; its bytes are the stored size unless `size` says
 * otherwise), TOOLWORK (scratch, not counted), FILES (the file names of one checkpoint), NODE,
 * CKPT_CLI (this checkout's dist/cli/ckpt.js), PEERS_BIN (dist/bench/peers) and RESTORE_IDX (the
 * checkpoints the runner restores). Arguments: ingest CKPT_DIR NAME INDEX; restore NAME INDEX OUT_DIR
 * (must leave OUT_DIR/<file> for every file); init, verify and size none.
 *
 * To add a tool: one more entry below. `ideal` is not a store: the runner computes it in-process.
 */
export interface Tool {
  name: string
  /** how the report names it */
  label: string
  /** commands it needs */
  needs: string[]
  /** how to get them */
  install: string
  init?: string
  ingest: string
  restore?: string
  verify?: string
  /** prints the stored bytes (default: the apparent size of REPO) */
  size?: string
  /** a peer that deduplicates (ckpt's restore is compared with these) */
  dedup?: boolean
  /** its verify reads all stored data (and checks it) */
  readsAll?: boolean
  /** what its verify covers, when not all data */
  verifyNote?: string
  /** left out of the default list */
  optIn?: boolean
  /** run after the tool's last timed phase, before its repository is removed (stops a server) */
  done?: string
}

const APT = 'apt-get install -y'

const ckpt: Tool = {
  name: 'ckpt',
  label: 'ckpt, CLI, full scan',
  needs: ['node'],
  install: 'npm run build',
  init: '"$NODE" "$CKPT_CLI" init --store "$REPO" >/dev/null',
  // files named ram* are 4 KiB-page regions, the others 64 KiB-cluster regions (what `ideal` counts)
  ingest: `args=(); for f in $FILES; do case $f in ram*) cs=4096 ;; *) cs=65536 ;; esac
  args+=("\${f//[^A-Za-z0-9._-]/_}=$1/$f:$cs"); done
"$NODE" "$CKPT_CLI" add --quiet --store "$REPO" --timeline series --vtime "$3" --label "$2" "\${args[@]}"`,
  restore: '"$NODE" "$CKPT_CLI" restore --quiet --store "$REPO" "series@$2" --all --out "$3"',
  verify: '"$NODE" "$CKPT_CLI" verify --store "$REPO" --deep',
  readsAll: true,
}

/**
 * ckpt's CLI exactly as above, with `ckpt serve` holding the store from init to the end: every
 * `ckpt add`, restore and verify is a process of its own that the server runs (SPEC.md §24). The
 * server's CPU is not in the ingest's CPU column (it is not a child of the timed process).
 */
const ckptServe: Tool = {
  ...ckpt,
  name: 'ckpt-serve',
  label: 'ckpt, CLI, full scan, `ckpt serve` (CPU: the client processes only)',
  init: `${ckpt.init}
"$NODE" "$CKPT_CLI" serve --detach --idle 3600 --store "$REPO" >/dev/null`,
  done: '"$NODE" "$CKPT_CLI" serve --stop --store "$REPO" >/dev/null',
}

/**
 * A qcow2 external backing chain per file: REPO/<file>/<ckpt>.qcow2. The first checkpoint is
 * converted; each later one is an empty overlay over the raw file rebased (safe mode) onto the
 * previous qcow2, which writes only the clusters that differ (`convert -B` copies every cluster in
 * qemu-img 7.2). qcow2 has no data checksums: `qemu-img check` reads metadata only.
 */
function qemuChain(name: string, cluster?: number): Tool {
  const o = cluster ? `-o cluster_size=${cluster}` : ''
  return {
    name,
    label: `qemu-img backing chain, ${cluster ? cluster / 1024 : 64} KiB clusters`,
    needs: ['qemu-img'],
    install: `${APT} qemu-utils`,
    init: 'for f in $FILES; do mkdir -p "$REPO/$f"; done',
    ingest: `for f in $FILES; do cd "$REPO/$f"; prev=$(ls | tail -n 1)
  if [ -z "$prev" ]; then qemu-img convert -O qcow2 ${o} "$1/$f" "$2.qcow2"
  else qemu-img create -q -f qcow2 ${o} -b "$1/$f" -F raw "$2.qcow2" && qemu-img rebase -f qcow2 -b "$prev" -F qcow2 "$2.qcow2"; fi
done`,
    restore: 'for f in $FILES; do qemu-img convert -O raw "$REPO/$f/$1.qcow2" "$3/$f"; done',
    verify: 'for q in "$REPO"/*/*.qcow2; do qemu-img check -q "$q"; done',
    verifyNote: 'metadata only',
  }
}

/** borg, unencrypted repository, default compression (lz4); one archive per checkpoint */
function borg(name: string, chunker?: string): Tool {
  const env = 'export BORG_REPO="$REPO" BORG_BASE_DIR="$TOOLWORK" BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes;'
  return {
    name,
    label: chunker ? 'borg, fixed 4 KiB chunker' : 'borg, default chunker',
    needs: ['borg'],
    install: `${APT} borgbackup`,
    init: `${env} borg init -e none "$REPO"`,
    ingest: `${env} cd "$1" && borg create ${chunker ? `--chunker-params ${chunker}` : ''} "::$2" .`,
    restore: `${env} cd "$3" && borg extract "::$1"`,
    verify: `${env} borg check --verify-data`,
    dedup: true,
    readsAll: true,
  }
}

// restic before 0.17 has no --insecure-no-password: a fixed password
const RESTIC = 'export RESTIC_REPOSITORY="$REPO" RESTIC_PASSWORD=peers-bench RESTIC_CACHE_DIR="$TOOLWORK/cache";'

export const TOOLS: Tool[] = [
  ckpt,
  ckptServe,
  qemuChain('qemu-chain'),
  qemuChain('qemu-chain-4k', 4096),
  borg('borg-fixed4k', 'fixed,4096'),
  borg('borg'),
  {
    name: 'restic',
    label: 'restic',
    needs: ['restic'],
    install: `${APT} restic`,
    init: `${RESTIC} restic init -q`,
    ingest: `${RESTIC} cd "$1" && restic backup -q --host peers --tag "$2" .`,
    restore: `${RESTIC} restic restore -q latest --host peers --tag "$1" --target "$3"`,
    verify: `${RESTIC} restic check --read-data`,
    dedup: true,
    readsAll: true,
  },
  {
    // casync has no store-wide check: casync-verify.js decompresses every chunk and checks its digest
    name: 'casync',
    label: 'casync',
    needs: ['casync'],
    install: `${APT} casync`,
    init: 'mkdir -p "$REPO/store" "$REPO/index"',
    ingest: 'casync make --store="$REPO/store" "$REPO/index/$2.caidx" "$1" >/dev/null',
    restore: 'casync extract --store="$REPO/store" "$REPO/index/$1.caidx" "$3"',
    verify: '"$NODE" "$PEERS_BIN/casync-verify.js" "$REPO/store"',
    dedup: true,
    readsAll: true,
  },
  {
    name: 'zstd',
    label: 'zstd -1 of every file',
    needs: ['zstd'],
    install: `${APT} zstd`,
    ingest: 'mkdir "$REPO/$2" && for f in $FILES; do zstd -1 -q "$1/$f" -o "$REPO/$2/$f.zst"; done',
    restore: 'for f in $FILES; do zstd -d -q "$REPO/$1/$f.zst" -o "$3/$f"; done',
    verify: 'zstd -t -q "$REPO"/*/*.zst',
    readsAll: true,
  },
  {
    // for a series too big to keep compressed whole: the checkpoints the runner restores are stored,
    // the others compressed to a pipe and counted
    name: 'zstd-countonly',
    label: 'zstd -1 of every file (sizes counted; the restored checkpoints stored)',
    needs: ['zstd'],
    install: `${APT} zstd`,
    ingest: `if [[ " $RESTORE_IDX " == *" $3 "* ]]; then mkdir "$REPO/$2" && for f in $FILES; do zstd -1 -q "$1/$f" -o "$REPO/$2/$f.zst"; done
else for f in $FILES; do zstd -1 -q -c "$1/$f" | wc -c >> "$TOOLWORK/counted"; done; fi`,
    size: 'echo $(( $(du -sb "$REPO" | cut -f1) + $(awk \'{s+=$1} END {printf "%.0f", s}\' "$TOOLWORK/counted" 2>/dev/null || echo 0) ))',
    restore: 'for f in $FILES; do zstd -d -q "$REPO/$1/$f.zst" -o "$3/$f"; done',
    verify: 'zstd -t -q "$REPO"/*/*.zst',
    verifyNote: 'the restored checkpoints only',
    optIn: true,
  },
]

export const IDEAL_LABEL = 'ideal (lower bound: distinct 4 KiB RAM pages and 64 KiB disk clusters, zstd -1 each)'

/** the default tool order: ideal first, then every tool not opt-in */
export const DEFAULT_TOOLS = ['ideal', ...TOOLS.filter((t) => !t.optIn).map((t) => t.name)]
