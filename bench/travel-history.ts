/**
 * Page-history queries on a timeline (issue 13, item 3): `history` of one random RAM page over the
 * whole timeline and `firstChange` of one random page over the whole timeline, each query timed alone.
 * bench/travel.ts calls measureHistory() on the demo's timeline and prints its figures.
 *
 * Standalone (`npm run build && node dist/bench/travel-history.js`): builds HISTORY_CHECKPOINTS
 * (default 2000) checkpoints of the demo's workload (256 MiB RAM in 4 KiB pages + 512 MiB disk in
 * 64 KiB clusters, 300 dirty pages and 4 dirty clusters a step, seed 2026) in a temporary store, then
 * measures HISTORY_QUERIES (default 100) queries of each kind. HISTORY_STORE=DIR keeps the store there
 * (built when it has no timeline `demo` yet, reused otherwise); HISTORY_TIMELINE names another
 * timeline of it (e.g. one `npm run demo` built).
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { openStore, type CkptStore } from '../src/index.js'
import { quantile } from './stats.js'
import { Rng, Workload } from './workload.js'

const STEP_NS = 10_000_000n

export interface HistoryFigures {
  /** ms per query */
  history: { p50: number; p99: number }
  firstChange: { p50: number; p99: number }
  /** changes found per history query (the baseline entry not counted) */
  changesPerQuery: number
}

/** The region queried: `ram` when the timeline has one, else its first region. */
async function pickRegion(store: CkptStore, timeline: string): Promise<{ name: string; chunks: number }> {
  const rec = (await store.listTimelines()).find((t) => t.name === timeline)
  if (!rec) throw new Error(`no timeline ${timeline}`)
  const name = 'ram' in rec.regions ? 'ram' : Object.keys(rec.regions).sort()[0]!
  const r = rec.regions[name]!
  return { name, chunks: Math.ceil(r.size / r.chunkSize) }
}

/**
 * `queries` history queries of one random page (chunk) over the whole timeline, then `queries`
 * firstChange queries of one random page over the whole timeline (baseline: its first checkpoint);
 * the latency of each, in ms. The first query of each kind pays for reading the timeline's catalog
 * (kept afterwards) and is counted like the others.
 */
export async function measureHistory(store: CkptStore, timeline: string, opts: { queries: number; seed?: number }): Promise<HistoryFigures> {
  const rng = new Rng(opts.seed ?? 7)
  const region = await pickRegion(store, timeline)
  const hist: number[] = []
  const first: number[] = []
  let changes = 0
  for (let q = 0; q < opts.queries; q++) {
    const page = rng.int(region.chunks)
    const t = performance.now()
    let n = 0
    for await (const _ of store.history(timeline, region.name, page)) n++
    hist.push(performance.now() - t)
    changes += Math.max(0, n - 1)
  }
  for (let q = 0; q < opts.queries; q++) {
    const page = rng.int(region.chunks)
    const t = performance.now()
    await store.firstChange(timeline, region.name, page)
    first.push(performance.now() - t)
  }
  return {
    history: { p50: quantile(hist, 0.5), p99: quantile(hist, 0.99) },
    firstChange: { p50: quantile(first, 0.5), p99: quantile(first, 0.99) },
    changesPerQuery: changes / Math.max(1, opts.queries),
  }
}

/** The demo's workload as `count` checkpoints of timeline `name` (as bench/demo.ts builds it). */
export async function buildDemoTimeline(store: CkptStore, name: string, count: number, log: (s: string) => void = () => {}): Promise<void> {
  const w = new Workload({ dirtyPages: 300, dirtyClusters: 4, seed: 2026 })
  const tl = await store.timeline(name, { regions: { ram: { size: w.ram.length, chunkSize: 4096 }, disk: { size: w.disk.length, chunkSize: 65536 } } })
  let pending: Promise<unknown> = tl.checkpoint({ vtime: 0n, regions: { ram: { data: w.ram, stable: true }, disk: { data: w.disk, stable: true } }, blobs: { cpu: Buffer.from('cpu at step 0') } })
  await pending
  const t0 = performance.now()
  for (let k = 1; k < count; k++) {
    const d = w.next()
    pending = tl.checkpoint({ vtime: BigInt(k) * STEP_NS, regions: { ram: { data: w.ram, dirty: d.pages }, disk: { data: w.disk, dirty: d.clusters } }, blobs: { cpu: Buffer.from(`cpu at step ${k}`) } })
    if (k % 4 === 0) await pending
    if (k % 200 === 0) log(`  building the timeline: ${k}/${count} checkpoints, ${((performance.now() - t0) / 1000).toFixed(0)} s`)
  }
  await pending
}

async function main(): Promise<void> {
  const count = Number(process.env.HISTORY_CHECKPOINTS ?? 2000)
  const queries = Number(process.env.HISTORY_QUERIES ?? 100)
  const keep = process.env.HISTORY_STORE !== undefined
  const dir = keep ? path.resolve(process.env.HISTORY_STORE!) : path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ckpt-history-')), 'store')
  const store = await openStore(dir)
  try {
    const timeline = process.env.HISTORY_TIMELINE ?? 'demo'
    if (!(await store.listTimelines()).some((t) => t.name === timeline)) {
      console.log(`building ${count} checkpoints of the demo workload in ${dir} (timeline ${timeline})`)
      await buildDemoTimeline(store, timeline, count, console.log)
    }
    let n = 0
    for await (const _ of store.log(timeline)) n++
    const f = await measureHistory(store, timeline, { queries, seed: 7 })
    console.log(`timeline ${timeline}: ${n} checkpoints; ${queries} queries of each kind`)
    console.log(`  history of one page over the timeline   p50 ${f.history.p50.toFixed(2)} ms, p99 ${f.history.p99.toFixed(2)} ms (${f.changesPerQuery.toFixed(1)} changes per page)   target p50 <= 5 ms`)
    console.log(`  firstChange of one page over it         p50 ${f.firstChange.p50.toFixed(2)} ms, p99 ${f.firstChange.p99.toFixed(2)} ms   target p50 <= 2 ms`)
  } finally {
    await store.close()
    if (!keep) fs.rmSync(path.dirname(dir), { recursive: true, force: true })
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) await main()
