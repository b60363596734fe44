/**
 * `npm run bench:fanout`: what the tree's fan-out costs in stored bytes and commit latency. Workload S's
 * ingest with dirty hints (as `npm run bench` does it: 768 MiB, BENCH_CHECKPOINTS default 100), once per
 * fan-out (BENCH_FANOUTS, default 256,512,1024,2048,4096; each region asks for it through
 * RegionConfig.fanout), a fresh store each; stored bytes against the ideal, by part, and the median leaves
 * a checkpoint touches. Results also go to bench/results/fanout.md.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { DEFAULT_FANOUT, openStore } from '../src/index.js'
import { IdealSize } from './ideal.js'
import { measureStoreBytes } from './store-bytes.js'
import { dirBytes, fmtBytes, median, quantile, table } from './stats.js'
import { Workload } from './workload.js'

const N = Number(process.env.BENCH_CHECKPOINTS ?? 100)
const FANOUTS = (process.env.BENCH_FANOUTS ?? '256,512,1024,2048,4096').split(',').map(Number)
const root = fs.mkdtempSync(path.join(process.env.BENCH_DIR ?? os.tmpdir(), 'ckpt-bench-fanout-'))
console.log(`ckpt bench: fan-out, workload S, ${N} checkpoints, ${os.cpus().length} cores, node ${process.version} (default fan-out ${DEFAULT_FANOUT})`)

const rows: string[][] = [['fan-out', 'entries', 'leaves touched (median)', 'tree nodes per checkpoint', 'entry headers + index', 'commit median / p99', 'stored / ideal']]
for (const fanout of FANOUTS) {
  const w = new Workload()
  const dir = path.join(root, String(fanout))
  const store = await openStore(dir)
  const tl = await store.timeline('run', { regions: w.regions(fanout) })
  const ideal = new IdealSize()
  ideal.addUnits(w.ram, 4096)
  ideal.addUnits(w.disk, 65536)
  await tl.checkpoint(w.first())
  const commit: number[] = []
  const touched: number[] = []
  let nodeBytes = 0
  for (let k = 1; k < N; k++) {
    const d = w.nextCheckpoint()
    ideal.addUnits(w.ram, 4096, d.pages)
    ideal.addUnits(w.disk, 65536, d.clusters)
    touched.push(new Set(d.pages.map((p) => Math.floor(p / fanout))).size + new Set(d.clusters.map((c) => Math.floor(c / fanout))).size)
    const c = await tl.checkpoint(d.input)
    commit.push(c.stats.commitMs)
    nodeBytes += c.stats.nodeBytes
  }
  await store.close()
  const parts = measureStoreBytes(dir)
  const pct = (n: number) => `${((n / ideal.bytes) * 100).toFixed(2)}%`
  rows.push([
    String(fanout),
    String(parts.entries),
    String(median(touched)),
    fmtBytes(nodeBytes / (N - 1)),
    `${pct(parts.entryHeaders)} + ${pct(parts.index)}`,
    `${median(commit).toFixed(1)} / ${quantile(commit, 0.99).toFixed(1)} ms`,
    `${(dirBytes(dir) / ideal.bytes).toFixed(4)} x`,
  ])
  fs.rmSync(dir, { recursive: true, force: true })
  console.log(rows.at(-1)!.join('  '))
}
fs.rmSync(root, { recursive: true, force: true })
const out = table(rows)
console.log(out)
fs.writeFileSync(path.join(import.meta.dirname, '..', '..', 'bench', 'results', 'fanout.md'), `# fan-out (${new Date().toISOString()}, node ${process.version}, ${N} checkpoints)\n\n${out}\n`)
