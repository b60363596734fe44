/**
 * `npm run bench` part 2 (issue 5): a long recording that thins itself. 10,000 checkpoints 10 ms of
 * virtual time apart of a 256 MiB RAM with a few hundred dirty pages per step, on a timeline with the
 * policy 10ms@1s,100ms@10s,1s@1m; gc (in a process of its own, so its peak RSS is its own) every
 * GC_EVERY checkpoints. Reports over time: live checkpoints, store bytes before and after gc, the ideal
 * for the live checkpoints (distinct non-zero pages they hold, each compressed alone with zstd -1),
 * gc time, rewrite rate and peak RSS; then the time of an explicit thin. BENCH_QUICK=1: 1,500 steps.
 * Results go to bench/results/lifecycle.md and .json.
 */
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { deflateCompressor, zstdCompressor } from '../codecs/index.js'
import { openStore, type CkptStore, type GcSummary, type Timeline } from '../src/index.js'
import { fmtBytes, median, MiB, quantile, table, dirBytes } from './stats.js'
import { Workload } from './workload.js'

const quick = process.env.BENCH_QUICK === '1'
const N = Number(process.env.BENCH_LIFECYCLE_CHECKPOINTS ?? (quick ? 1500 : 10_000))
const GC_EVERY = Number(process.env.BENCH_GC_EVERY ?? (quick ? 500 : 1000))
const DIRTY = Number(process.env.BENCH_DIRTY_PAGES ?? 300)
const POLICY = '10ms@1s,100ms@10s,1s@1m'
const STEP_NS = 10_000_000n
const root = fs.mkdtempSync(path.join(process.env.BENCH_DIR ?? os.tmpdir(), 'ckpt-bench-life-'))
const dir = path.join(root, 'store')

console.log(`ckpt bench: lifecycle, ${N} checkpoints 10 ms apart, 256 MiB RAM, ${DIRTY} dirty pages a step, policy ${POLICY}, gc every ${GC_EVERY}; ${os.cpus().length} cores, node ${process.version}, store in ${dir}`)

const w = new Workload({ ramBytes: 256 * MiB, diskBytes: 65536, dirtyPages: DIRTY, dirtyClusters: 0, seed: 11 })
const pages = w.ram.length / w.pageSize

// ---------------------------------------------------------------- the ideal for the live checkpoints
// a page version is live when a live checkpoint was taken while it was current: versions whose
// lifetime holds no live checkpoint are dropped at each report (thinning never revives the past)
const comp = zstdCompressor() ?? deflateCompressor()
const sizeOf = new Map<number, number>()
const compressed = (key: number) => {
  let n = sizeOf.get(key)
  if (n === undefined) sizeOf.set(key, (n = key === 0 ? 0 : comp.compress(w.pageContent(key)).length))
  return n
}
const since = new Int32Array(pages) // step from which each page's current version is current
let retired: { key: number; from: number; to: number }[] = []
function idealLive(liveSteps: number[]): number {
  const has = (from: number, to: number) => {
    let lo = 0
    let hi = liveSteps.length
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if (liveSteps[mid]! < from) lo = mid + 1
      else hi = mid
    }
    return lo < liveSteps.length && liveSteps[lo]! <= to
  }
  retired = retired.filter((r) => has(r.from, r.to))
  const keys = new Set<number>()
  for (const r of retired) keys.add(r.key)
  for (let p = 0; p < pages; p++) keys.add(w.ramKeys[p]!)
  let n = 0
  for (const k of keys) n += compressed(k)
  return n
}

// ---------------------------------------------------------------- the recording
let store: CkptStore = await openStore(dir)
let tl: Timeline = await store.timeline('rec', { regions: { ram: { size: w.ram.length, chunkSize: 4096 } }, policy: POLICY })
const commitMs: number[] = []
const pauseMs: number[] = []
let thinnedTotal = 0
const report: string[][] = [['step', 'virtual time', 'live ckpts', 'store before gc', 'gc: rewritten, reclaimed', 'gc ms (mark/sweep)', 'rewrite MB/s', 'gc peak RSS', 'store after gc', 'ideal (live)', 'after / ideal']]
type ChildGc = Omit<GcSummary, 'ms'> & { ms: number; markMs: number; sweepMs: number; rewriteMs: number; rssMiB: number; maxStallMs: number }
const gcs: { step: number; live: number; before: number; after: number; ideal: number; ratio: number; ratioBefore: number; summary: ChildGc }[] = []
const prevKeys = new Int32Array(pages)
const t0 = performance.now()
for (let k = 0; k < N; k++) {
  let dirty: Uint32Array | undefined
  if (k > 0) {
    prevKeys.set(w.ramKeys)
    dirty = w.next().pages
    // the old versions of the dirty pages were current up to the previous step
    for (const p of dirty) {
      if (prevKeys[p] === w.ramKeys[p]) continue
      retired.push({ key: prevKeys[p]!, from: since[p]!, to: k - 1 })
      since[p] = k
    }
  }
  const tp = performance.now()
  const pending = tl.checkpoint({ vtime: BigInt(k) * STEP_NS, regions: { ram: { data: w.ram, dirty } }, blobs: { cpu: Buffer.from(`cpu ${k}`) } })
  pauseMs.push(performance.now() - tp)
  const ck = await pending
  if (k > 0) commitMs.push(ck.stats.commitMs)
  thinnedTotal += ck.stats.thinned
  if ((k + 1) % GC_EVERY === 0 || k === N - 1) {
    const live: number[] = []
    for await (const e of store.log('rec')) live.push(Number(e.vtime / STEP_NS))
    await store.close()
    const before = dirBytes(dir)
    // BENCH_KEEP_PRE_GC=DIR: a copy of the store as gc finds it (for profiling gc on its own)
    if (process.env.BENCH_KEEP_PRE_GC) fs.cpSync(dir, path.join(process.env.BENCH_KEEP_PRE_GC, `pre-gc-${k + 1}`), { recursive: true })
    const r = spawnSync(process.execPath, [path.join(import.meta.dirname, 'bundle-child.js'), 'gc', dir], { encoding: 'utf8' })
    if (r.status !== 0) throw new Error(`gc child failed: ${r.stderr}`)
    if (process.env.CKPT_BENCH_RSS_TRACE === '1') process.stderr.write(r.stderr)
    const g = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as ChildGc
    const after = dirBytes(dir)
    const ideal = idealLive(live)
    const entry = { step: k + 1, live: live.length, before, after, ideal, ratio: after / ideal, ratioBefore: before / ideal, summary: g }
    gcs.push(entry)
    const sweepMs = g.sweepMs
    // the rewrite itself: reading the packs that go, copying their live entries, committing
    const rate = g.rewrittenBytes / 1e6 / (g.rewriteMs / 1000)
    report.push([
      String(k + 1),
      `${((k * 10) / 1000).toFixed(2)} s`,
      String(live.length),
      fmtBytes(before),
      `${fmtBytes(g.rewrittenBytes)} in ${g.packsRewritten} packs (+${g.packsDeleted} deleted), ${fmtBytes(g.reclaimedBytes)}`,
      `${g.ms.toFixed(0)} (${g.markMs.toFixed(0)}/${sweepMs.toFixed(0)})`,
      g.rewrittenBytes > 0 ? rate.toFixed(0) : '-',
      `${g.rssMiB.toFixed(0)} MiB`,
      fmtBytes(after),
      fmtBytes(ideal),
      `${(after / ideal).toFixed(3)} x`,
    ])
    console.log(report.at(-1)!.join(' | '))
    store = await openStore(dir)
    tl = await store.timeline('rec')
  }
}
const wallS = (performance.now() - t0) / 1000

// ---------------------------------------------------------------- an explicit thin
const thinRuns: { dry: number; real: number; dropped: number; live: number } = { dry: 0, real: 0, dropped: 0, live: 0 }
{
  let t = performance.now()
  const dry = await store.thin('rec', '1s@1m', { dryRun: true })
  thinRuns.dry = performance.now() - t
  thinRuns.live = dry.kept.length + dry.dropped.length
  t = performance.now()
  const real = await store.thin('rec', '1s@1m')
  thinRuns.real = performance.now() - t
  thinRuns.dropped = real.dropped.length
}
await store.close()

// ---------------------------------------------------------------- figures
const rows: string[][] = [['figure', 'measured', 'target', 'ok']]
const row = (name: string, value: string, target = '', ok?: boolean) => rows.push([name, value, target, ok === undefined ? '' : ok ? 'yes' : 'NO'])
const rated = gcs.filter((g) => g.summary.rewrittenBytes > 0).map((g) => g.summary.rewrittenBytes / 1e6 / (g.summary.rewriteMs / 1000))
const rateMed = rated.length ? median(rated) : 0
const rssMax = Math.max(...gcs.map((g) => g.summary.rssMiB))
const ratioMax = Math.max(...gcs.map((g) => g.ratio))
const ratioBeforeMax = Math.max(...gcs.map((g) => g.ratioBefore))
const lastGc = gcs.at(-1)!
row('recording', `${N} checkpoints in ${wallS.toFixed(0)} s wall (gc and reopen included); ${thinnedTotal} dropped by the policy as it went`)
row('live checkpoints at the end', `${lastGc.live} (policy ${POLICY})`)
row('commit latency with the policy, median / p99', `${median(commitMs).toFixed(1)} / ${quantile(commitMs, 0.99).toFixed(1)} ms`)
row('pause median', `${median(pauseMs).toFixed(2)} ms`)
row('gc rewrite rate (live bytes copied / time reading, copying, committing), median over gcs that rewrote', `${rateMed.toFixed(0)} MB/s (min ${rated.length ? Math.min(...rated).toFixed(0) : '-'}, ${rated.length} gcs)`, '>= 200 MB/s', rateMed >= 200)
row('gc time, median', `${median(gcs.map((g) => g.summary.ms)).toFixed(0)} ms (mark ${median(gcs.map((g) => g.summary.markMs)).toFixed(0)}, sweep ${median(gcs.map((g) => g.summary.sweepMs)).toFixed(0)} of which rewrite ${median(gcs.map((g) => g.summary.rewriteMs)).toFixed(0)})`)
row('gc live tree nodes, last gc', `${fmtBytes(lastGc.summary.liveNodeBytes)} (${lastGc.summary.nodesReencoded} nodes stored anew, ${fmtBytes(lastGc.summary.reencodedBytes)}); dead blocks unindexed ${lastGc.summary.deadBlocks}`)
row('gc: the longest the event loop waited for a timer, max over gcs', `${Math.max(...gcs.map((g) => g.summary.maxStallMs)).toFixed(0)} ms (median over gcs ${median(gcs.map((g) => g.summary.maxStallMs)).toFixed(0)} ms)`)
row('gc peak RSS, max over gcs (own process)', `${rssMax.toFixed(0)} MiB`, '<= 256 MiB', rssMax <= 256)
row('store after gc / ideal for live checkpoints, max', `${ratioMax.toFixed(3)} x (last: ${fmtBytes(lastGc.after)} vs ${fmtBytes(lastGc.ideal)})`, '<= 1.2 x', ratioMax <= 1.2)
row('store before gc / ideal, max (grows between gcs)', `${ratioBeforeMax.toFixed(3)} x`)
row('thin of the whole timeline (1s@1m), dry run / real', `${thinRuns.dry.toFixed(0)} / ${thinRuns.real.toFixed(0)} ms over ${thinRuns.live} checkpoints (${thinRuns.dropped} dropped)`)
const out = [
  `ckpt bench: lifecycle${quick ? ' (quick)' : ''}, ${N} checkpoints 10 ms apart, 256 MiB RAM, ${DIRTY} dirty pages a step, policy ${POLICY}, gc (default threshold 50%) every ${GC_EVERY}`,
  '',
  table(report),
  '',
  table(rows),
].join('\n')
console.log('\n' + out)
const resDir = path.join(import.meta.dirname, '../../bench/results')
fs.mkdirSync(resDir, { recursive: true })
fs.writeFileSync(path.join(resDir, quick ? 'lifecycle-quick.md' : 'lifecycle.md'), `${out}\n\nmeasured ${new Date().toISOString()} on ${os.cpus().length} cores, node ${process.version}\n`)
fs.writeFileSync(path.join(resDir, quick ? 'lifecycle-quick.json' : 'lifecycle.json'), JSON.stringify({ N, GC_EVERY, DIRTY, POLICY, wallS, gcs, thinRuns, rateMed, rssMax, ratioMax }, null, 1) + '\n')
if (process.env.BENCH_KEEP !== '1') fs.rmSync(root, { recursive: true, force: true })
