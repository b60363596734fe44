/**
 * Where a dirty-hint checkpoint's time goes (issue 14's commit-latency target, ≤ 10 ms median on S):
 * N checkpoints of workload S (1,000 dirty pages + 20 clusters each) through the library, each one's
 * latency (stats.commitMs) with its phases, and the CPU it costs: the main thread's (Linux
 * /proc/self/task/PID/schedstat) and the whole process's (every thread: the hashing and compressing
 * workers, libuv's pool doing the fsyncs and LevelDB, V8's GC helpers). On 2 cores, half the process
 * CPU per checkpoint is a floor under its latency whatever the pipelining.
 *   node dist/bench/commit-cpu.js [N=60]   (npm run bench:commit)
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { openStore } from '../src/index.js'
import { mainCpuMs, median, processCpuMs, quantile } from './stats.js'
import { Workload } from './workload.js'

const N = Number(process.argv[2] ?? 60)

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ckpt-commit-cpu-'))
try {
  const w = new Workload()
  const store = await openStore(path.join(dir, 'store'))
  const tl = await store.timeline('run', { regions: { ram: { size: w.ram.length, chunkSize: 4096 }, disk: { size: w.disk.length, chunkSize: 65536 } } })
  await tl.checkpoint({ vtime: 0n, regions: { ram: { data: w.ram, stable: true }, disk: { data: w.disk, stable: true } } })
  const rows: { commit: number; pause: number; chunks: number; tree: number; fsyncCommit: number; main: number; all: number; dirtyMiB: number }[] = []
  for (let k = 1; k < N; k++) {
    const d = w.next()
    const m0 = mainCpuMs()
    const p0 = processCpuMs()
    const c = await tl.checkpoint({ vtime: BigInt(k) * 10_000_000n, regions: { ram: { data: w.ram, dirty: d.pages }, disk: { data: w.disk, dirty: d.clusters } }, blobs: { cpu: Buffer.from(`cpu ${k}`) } })
    const ph = c.stats.phases as { chunks: number; tree: number; commit: number }
    rows.push({ commit: c.stats.commitMs, pause: c.stats.pauseMs, chunks: ph.chunks, tree: ph.tree, fsyncCommit: ph.commit, main: mainCpuMs() - m0, all: processCpuMs() - p0, dirtyMiB: (d.pages.length * 4096 + d.clusters.length * 65536) / 2 ** 20 })
  }
  await store.close()
  const col = (k: keyof (typeof rows)[number]) => rows.map((r) => r[k])
  const line = (name: string, v: string) => console.log(`| ${name.padEnd(58)} | ${v.padStart(22)} |`)
  console.log(`# commit with dirty hints on workload S: latency and CPU (${os.availableParallelism()} cores, node ${process.version}, ${N - 1} checkpoints, load ${os.loadavg()[0]!.toFixed(1)})\n`)
  console.log(`| ${'figure'.padEnd(58)} | ${'median'.padStart(22)} |`)
  console.log(`|${'-'.repeat(60)}|${'-'.repeat(24)}|`)
  line('dirty data per checkpoint', `${median(col('dirtyMiB')).toFixed(2)} MiB`)
  line('commit latency (checkpoint() to durable), median / p99', `${median(col('commit')).toFixed(1)} / ${quantile(col('commit'), 0.99).toFixed(1)} ms`)
  line('  pause (the copy of the dirty chunks)', `${median(col('pause')).toFixed(2)} ms`)
  line('  chunks: hash, dedup, compress, place', `${median(col('chunks')).toFixed(1)} ms`)
  line('  tree nodes', `${median(col('tree')).toFixed(1)} ms`)
  line('  commit: pack fdatasync + LevelDB batch (synced)', `${median(col('fsyncCommit')).toFixed(1)} ms`)
  line('CPU per checkpoint, main thread', `${median(col('main')).toFixed(1)} ms`)
  line('CPU per checkpoint, whole process (all threads)', `${median(col('all')).toFixed(1)} ms`)
  line(`floor from CPU alone on ${os.availableParallelism()} cores (process CPU / cores)`, `${(median(col('all')) / os.availableParallelism()).toFixed(1)} ms`)
} finally {
  fs.rmSync(dir, { recursive: true, force: true })
}
