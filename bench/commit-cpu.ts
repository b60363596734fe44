/**
 * Where a dirty-hint checkpoint's time goes (issue 14's commit-latency target, ≤ 10 ms median on S):
 * N checkpoints of workload S (1,000 dirty pages + 20 clusters each) through the library, each one's
 * latency (stats.commitMs) with its phases, and the CPU it costs: the main thread's (Linux
 * /proc/self/task/PID/schedstat) and the whole process's (every thread: the hashing and compressing
 * workers, libuv's pool doing the fsyncs and LevelDB, V8's GC helpers). On 2 cores, half the process
 * CPU per checkpoint is a floor under its latency whatever the pipelining.
 *
 * The same checkpoints are also taken with compression off (CKPT_COMPRESS=identity, a store of its
 * own), alternated with the default in ROUNDS rounds of ~N/ROUNDS each: what the compressor costs the latency, measured
 * in the same run. WARMUP checkpoints (default 0) into a store of their own go first, unmeasured: the
 * dirty-hint path's functions are optimised by V8 over its first ~50 checkpoints (`--trace-opt`), so a
 * long recording's steady state is measured with WARMUP=100.
 *   node dist/bench/commit-cpu.js [N=60] [ROUNDS=2] [WARMUP=0]   (npm run bench:commit)
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { openStore } from '../src/index.js'
import { mainCpuMs, median, processCpuMs, quantile } from './stats.js'
import { Workload } from './workload.js'

const N = Number(process.argv[2] ?? 60)
const ROUNDS = Number(process.argv[3] ?? 2)
const WARMUP = Number(process.argv[4] ?? 0)

interface Row {
  commit: number
  pause: number
  chunks: number
  tree: number
  fsyncCommit: number
  main: number
  all: number
  dirtyMiB: number
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ckpt-commit-cpu-'))
try {
  // one workload for every pass: each pass's store starts with a full checkpoint of the images as they are then
  const w = new Workload()
  /** `per` dirty-hint checkpoints into a fresh store, with the compressor CKPT_COMPRESS names ('' = the default) */
  const pass = async (compress: string, per: number, into: Row[], tag: string) => {
    const was = process.env['CKPT_COMPRESS']
    process.env['CKPT_COMPRESS'] = compress
    try {
      const store = await openStore(path.join(dir, tag))
      const tl = await store.timeline('run', { regions: w.regions() })
      await tl.checkpoint(w.first())
      for (let k = 1; k <= per; k++) {
        const d = w.nextCheckpoint()
        const m0 = mainCpuMs()
        const p0 = processCpuMs()
        const c = await tl.checkpoint(d.input)
        const ph = c.stats.phases as { chunks: number; tree: number; commit: number }
        into.push({ commit: c.stats.commitMs, pause: c.stats.pauseMs, chunks: ph.chunks, tree: ph.tree, fsyncCommit: ph.commit, main: mainCpuMs() - m0, all: processCpuMs() - p0, dirtyMiB: d.dirtyBytes / 2 ** 20 })
      }
      await store.close()
      fs.rmSync(path.join(dir, tag), { recursive: true, force: true })
    } finally {
      if (was === undefined) delete process.env['CKPT_COMPRESS']
      else process.env['CKPT_COMPRESS'] = was
    }
  }
  const zstd: Row[] = []
  const none: Row[] = []
  const per = Math.max(1, Math.round((N - 1) / ROUNDS))
  if (WARMUP > 0) await pass('', WARMUP, [], 'warmup')
  for (let r = 0; r < ROUNDS; r++) {
    await pass('', per, zstd, `default-${r}`)
    await pass('identity', per, none, `identity-${r}`)
  }
  const col = (rows: Row[], k: keyof Row) => rows.map((r) => r[k])
  const med = (rows: Row[], k: keyof Row, digits: number) => median(col(rows, k)).toFixed(digits)
  const line = (name: string, a: string, b: string) => console.log(`| ${name.padEnd(58)} | ${a.padStart(16)} | ${b.padStart(16)} |`)
  console.log(`# commit with dirty hints on workload S: latency and CPU (${os.availableParallelism()} cores, node ${process.version}, ${zstd.length} + ${none.length} checkpoints in ${ROUNDS} alternated rounds${WARMUP > 0 ? ` after ${WARMUP} unmeasured` : ''}, load ${os.loadavg()[0]!.toFixed(1)})\n`)
  line('figure (median)', 'default (zstd)', 'compression off')
  console.log(`|${'-'.repeat(60)}|${'-'.repeat(18)}|${'-'.repeat(18)}|`)
  const both = (name: string, f: (rows: Row[]) => string) => line(name, f(zstd), f(none))
  both('dirty data per checkpoint', (r) => `${med(r, 'dirtyMiB', 2)} MiB`)
  both('commit latency (checkpoint() to durable), median / p99', (r) => `${med(r, 'commit', 1)} / ${quantile(col(r, 'commit'), 0.99).toFixed(1)} ms`)
  both('  pause (the copy of the dirty chunks)', (r) => `${med(r, 'pause', 2)} ms`)
  both('  chunks: hash, dedup, compress, place', (r) => `${med(r, 'chunks', 1)} ms`)
  both('  tree nodes', (r) => `${med(r, 'tree', 1)} ms`)
  both('  commit: pack fdatasync + LevelDB batch (synced)', (r) => `${med(r, 'fsyncCommit', 1)} ms`)
  both('CPU per checkpoint, main thread', (r) => `${med(r, 'main', 1)} ms`)
  both('CPU per checkpoint, other threads (workers, libuv, V8)', (r) => `${median(r.map((x) => x.all - x.main)).toFixed(1)} ms`)
  both('CPU per checkpoint, whole process (all threads)', (r) => `${med(r, 'all', 1)} ms`)
  both(`floor from CPU alone on ${os.availableParallelism()} cores (process CPU / cores)`, (r) => `${(median(col(r, 'all')) / os.availableParallelism()).toFixed(1)} ms`)
} finally {
  fs.rmSync(dir, { recursive: true, force: true })
}
