/**
 * `npm run bench:travel`: a debugging session on the demo's timeline (2,000 checkpoints of a 256 MiB
 * RAM + 512 MiB disk guest, 10 ms apart; bench/demo.ts's workload). A cursor makes 1,000 jumps: 80%
 * to a checkpoint 1-10 steps back from where it stands, 20% anywhere; after each, a "replay" writes
 * 200 random RAM pages into the cursor's buffer (and says so with dirty()). Prints jump latency by
 * distance, whole-restore time, the same jumps done as full restores (today's way, on a sample of
 * them, in the same run) for the ratio, and page-history queries.
 *
 * TRAVEL_CHECKPOINTS (default 2000) sets the timeline's length; TRAVEL_STORE=DIR TRAVEL_TIMELINE=NAME
 * reuse a timeline built earlier (e.g. by `npm run demo`) instead of building one; TRAVEL_JUMPS
 * (default 1000) and TRAVEL_FULL (default 40) the number of jumps and of full-restore samples.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { openStore, type CkptStore, type LogEntry } from '../src/index.js'
import { median, peakRssMiB, quantile, table } from './stats.js'
import { buildDemoTimeline, measureHistory } from './travel-history.js'
import { Rng } from './workload.js'

const COUNT = Number(process.env.TRAVEL_CHECKPOINTS ?? 2000)
const JUMPS = Number(process.env.TRAVEL_JUMPS ?? 1000)
const FULL = Number(process.env.TRAVEL_FULL ?? 40)
const REPLAY_PAGES = 200
const t0 = performance.now()
const secs = () => ((performance.now() - t0) / 1000).toFixed(0) + ' s'

/** The demo's timeline, built here (as bench/demo.ts builds it) unless TRAVEL_STORE names one. */
async function timeline(): Promise<{ store: CkptStore; name: string; dir: string; temp: boolean }> {
  if (process.env.TRAVEL_STORE) {
    const dir = path.resolve(process.env.TRAVEL_STORE)
    const store = await openStore(dir)
    const name = process.env.TRAVEL_TIMELINE ?? (await store.listTimelines()).map((t) => t.name).filter((n) => n.startsWith('demo-')).sort().pop()
    if (!name) throw new Error(`no demo-* timeline in ${dir}: set TRAVEL_TIMELINE`)
    return { store, name, dir, temp: false }
  }
  const dir = fs.mkdtempSync(path.join(process.env.BENCH_DIR ?? os.tmpdir(), 'ckpt-travel-'))
  const store = await openStore(path.join(dir, 'store'))
  const name = 'demo'
  await buildDemoTimeline(store, name, COUNT, (line) => console.log(`${line} (${secs()})`))
  return { store, name, dir, temp: true }
}

const { store, name, dir, temp } = await timeline()
const log: LogEntry[] = []
for await (const e of store.log(name)) log.push(e)
const n = log.length
console.log(`ckpt bench:travel: timeline ${name}, ${n} checkpoints; ${JUMPS} jumps, ${REPLAY_PAGES} pages written after each (${secs()})`)

// --- the session: jumps with a cursor ---
const rng = new Rng(13)
const cur = await store.cursor(name)
const first = await cur.goto(log[n - 1]!.cid)
const ramPages = cur.regions.ram!.length / 4096
let at = n - 1
interface Jump {
  distance: number
  ms: number
  chunks: number
  to: number
}
const jumps: Jump[] = []
const page = new Uint8Array(4096)
for (let j = 0; j < JUMPS; j++) {
  // the replay since the last jump: the emulator wrote pages
  const pages: number[] = []
  for (let p = 0; p < REPLAY_PAGES; p++) {
    const i = rng.int(ramPages)
    rng.fill(page.subarray(0, 64))
    cur.regions.ram!.set(page, i * 4096)
    pages.push(i)
  }
  cur.dirty('ram', pages)
  const to = rng.float() < 0.8 ? Math.max(0, at - 1 - rng.int(10)) : rng.int(n)
  const t = performance.now()
  const r = await cur.goto(log[to]!.cid)
  const ms = performance.now() - t
  jumps.push({ distance: Math.abs(at - to), ms, chunks: Object.values(r.regions).reduce((s, x) => s + x.chunksWritten, 0), to })
  at = to
  // a wrap at the start: the session goes on from a random place
  if (at === 0) at = n - 1 - rng.int(Math.min(n, 100))
  if (at !== to) await cur.goto(log[at]!.cid)
}
console.log(`  ${JUMPS} jumps done (${secs()}); first goto (a whole restore into fresh buffers) ${first.ms.toFixed(0)} ms`)

// --- correctness on a sample: the cursor's buffers against full restores ---
let identical = 0
const checks = 5
const ram = Buffer.from(new SharedArrayBuffer(cur.regions.ram!.length))
const disk = Buffer.from(new SharedArrayBuffer(cur.regions.disk!.length))
for (let c = 0; c < checks; c++) {
  const to = rng.int(n)
  await cur.goto(log[to]!.cid)
  await store.restore(log[to]!.cid, 'ram', ram)
  await store.restore(log[to]!.cid, 'disk', disk)
  if (ram.equals(cur.regions.ram!) && disk.equals(cur.regions.disk!)) identical++
}

// --- today's way: the same jumps as full restores (a sample), and the whole restore ---
const fullMs: number[] = []
const sample = jumps.filter((_, k) => k % Math.max(1, Math.floor(jumps.length / FULL)) === 0).slice(0, FULL)
for (const j of sample) {
  const t = performance.now()
  await store.restore(log[j.to]!.cid, 'ram', ram)
  await store.restore(log[j.to]!.cid, 'disk', disk)
  fullMs.push(performance.now() - t)
}
const wholeMs = median(fullMs)

// --- history of random pages over the whole timeline ---
const hist = await measureHistory(store, name, { queries: 100, seed: 7 })

const near = jumps.filter((j) => j.distance >= 1 && j.distance <= 10)
const p50near = median(near.map((j) => j.ms))
const ratio = wholeMs / p50near
const rows: string[][] = [['jumps', 'count', 'p50 ms', 'p99 ms', 'chunks written p50']]
for (const [lo, hi, label] of [[0, 0, 'same checkpoint'], [1, 1, '1 step'], [2, 5, '2-5 steps'], [6, 10, '6-10 steps'], [11, 100, '11-100 steps'], [101, Infinity, '> 100 steps']] as const) {
  const js = jumps.filter((j) => j.distance >= lo && j.distance <= hi)
  if (js.length) rows.push([label, String(js.length), median(js.map((j) => j.ms)).toFixed(2), quantile(js.map((j) => j.ms), 0.99).toFixed(2), median(js.map((j) => j.chunks)).toFixed(0)])
}
rows.push(['all jumps', String(jumps.length), median(jumps.map((j) => j.ms)).toFixed(2), quantile(jumps.map((j) => j.ms), 0.99).toFixed(2), median(jumps.map((j) => j.chunks)).toFixed(0)])
console.log('\n' + table(rows))

const targets: string[][] = [['figure', 'measured', 'target', 'met']]
const t = (what: string, v: string, target: string, ok: boolean) => targets.push([what, v, target, ok ? 'yes' : 'NO'])
t('jump to a neighbour (1-10 steps), p50', `${p50near.toFixed(2)} ms (${near.length} jumps)`, '<= 5 ms', p50near <= 5)
t('full restore of the same jumps (today), median', `${wholeMs.toFixed(0)} ms (${fullMs.length} of the jumps, both regions, 768 MiB)`, '', true)
t('neighbour jump against full restore', `${ratio.toFixed(0)}x faster`, '>= 50x', ratio >= 50)
t('any jump, p99', `${quantile(jumps.map((j) => j.ms), 0.99).toFixed(1)} ms`, '<= 100 ms', quantile(jumps.map((j) => j.ms), 0.99) <= 100)
t('whole restore of 768 MiB into buffers, median', `${wholeMs.toFixed(0)} ms (${(768 / (wholeMs / 1000)).toFixed(0)} MiB/s)`, '<= 500 ms', wholeMs <= 500)
{
  t('history of one page over the timeline, p50 / p99', `${hist.history.p50.toFixed(2)} / ${hist.history.p99.toFixed(2)} ms (${hist.changesPerQuery.toFixed(1)} changes per page)`, '<= 5 ms p50', hist.history.p50 <= 5)
  t('firstChange over the timeline, p50 / p99', `${hist.firstChange.p50.toFixed(2)} / ${hist.firstChange.p99.toFixed(2)} ms`, '<= 2 ms p50', hist.firstChange.p50 <= 2)
}
t('cursor byte-identical to full restores', `${identical}/${checks}`, 'all', identical === checks)
console.log('\n' + table(targets))
console.log(`\n${n} checkpoints; peak RSS ${peakRssMiB().toFixed(0)} MiB; ${secs()} in all; ${os.cpus().length} cores`)
await store.close()
if (temp && !process.env.TRAVEL_KEEP) fs.rmSync(dir, { recursive: true, force: true })
else console.log(`store kept: ${dir}`)
