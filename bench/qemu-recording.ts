/**
 * A real QEMU recording (issue 14, item 5): stored bytes against the ideal for a series recorded with the
 * QEMU adapter, split by what they hold, beside workload S's (bench/run.ts) split the same way.
 *
 *   node scripts/fetch-guest.mjs && npm run bench:recording
 *
 * The recording: the Linux guest of .guest/ (i386 Linux 6.1 + busybox, TCG; its /init: an awk + tmpfs
 * loop, scripts/guest/init) with 256 MiB RAM and a 64 MiB raw disk, checkpointed from the moment QMP
 * answers (the boot is part of the series) BENCH_REC_CHECKPOINTS times (default 200),
 * BENCH_REC_INTERVAL_MS apart (default 250), by checkpointQemu() in `shadow` mode (dirty hints from its
 * compare with a copy) with the device state; every 4th step 1 MiB of the disk is written through QEMU's
 * block layer.
 *
 * The ideal, as bench/ideal.ts computes S's, from the files alone: while the VM is stopped for a
 * checkpoint the bench reads the RAM file and the disk itself; every distinct non-zero 4 KiB page and
 * 64 KiB cluster of the series counts once, compressed on its own (zstd -1), and so does every distinct
 * content-defined chunk of the device-state stream (the store's own blob chunking, SPEC.md §3.5).
 *
 * Replay: BENCH_REC_TRACE=DIR also writes what changed at each checkpoint (pages, clusters, blobs, meta)
 * to DIR; BENCH_REC_REPLAY=DIR then feeds that same series to a fresh store through the library (dirty
 * hints and previous bytes, as the shadow mode does; BENCH_REC_PREVIOUS=0 leaves the previous bytes out:
 * no chunk deltas) instead of running QEMU: same bytes every run, so two builds compare exactly.
 *
 * Thinning: after the whole series is measured, every checkpoint but each BENCH_REC_THIN-th (default 4;
 * 0 skips it) and the last is removed and gc runs; the store is then measured against the ideal of the
 * checkpoints kept (their distinct pages, clusters and blob chunks), which shows what gc reclaims of
 * the versions chunk deltas were made against (SPEC.md §14).
 *
 * Workload S (bench/workload.ts, 768 MiB, BENCH_S_CHECKPOINTS default 100, as `npm run bench`) is
 * ingested in the same run and split the same way (BENCH_REC_S=0 skips it; BENCH_REC=0 skips the recording). Results go to
 * bench/results/qemu-recording.md and .json. Env also: BENCH_DIR (default os.tmpdir()), CKPT_GUEST_DIR,
 * BENCH_REC_KEEP=1 (keep the stores).
 */
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { AT_REST } from '../codecs/index.js'
import { cdcCuts } from '../codecs/cdc.js'
import { openStore, type Checkpoint } from '../src/index.js'
import { ENTRY_HEADER_SIZE, ENTRY_KIND, FOOTER_SIZE, PACK_HEADER_SIZE, scanPackFile } from '../store/index.js'
import { IdealSize } from './ideal.js'
import { recordQemu, type Step } from './qemu-recorder.js'
import { dirBytes, fmtBytes, median, table } from './stats.js'
import { Workload } from './workload.js'

const N = Number(process.env.BENCH_REC_CHECKPOINTS ?? 200)
const S_N = Number(process.env.BENCH_S_CHECKPOINTS ?? 100)
const root = fs.mkdtempSync(path.join(process.env.BENCH_DIR ?? os.tmpdir(), 'ckpt-bench-rec-'))
const keep = process.env.BENCH_REC_KEEP === '1'

/** The ideal of a series: pages and clusters as bench/ideal.ts, blobs as their distinct CDC chunks. */
class SeriesIdeal {
  readonly regions = new IdealSize()
  readonly blobs = new IdealSize()
  addBlob(b: Uint8Array): void {
    let start = 0
    for (const end of cdcCuts(b)) {
      this.blobs.add(b.subarray(start, end))
      start = end
    }
  }
  get bytes(): number {
    return this.regions.bytes + this.blobs.bytes
  }
}

interface SeriesResult {
  name: string
  checkpoints: number
  storeDir: string
  ideal: SeriesIdeal
  stats: Checkpoint['stats'][]
  note: string
  /** the recording's checkpoints, and the ideal of those a thinning keeps (every THIN-th and the last) */
  cids?: string[]
  kept?: KeptIdeal
}

/** Every THIN-th checkpoint of the recording (and the last) is kept by the thinning measured after it (0: none). */
const THIN = Number(process.env.BENCH_REC_THIN ?? 4)
/** BENCH_REC_PREVIOUS=0: a replay passes no previous bytes (no chunk deltas), the baseline to compare with */
const withPrevious = process.env.BENCH_REC_PREVIOUS !== '0'

/**
 * The ideal of the checkpoints a thinning keeps, from the steps alone: a unit's content at a kept
 * checkpoint is its last write since the kept one before (earlier content was counted then).
 */
class KeptIdeal {
  readonly ideal = new SeriesIdeal()
  private readonly pending = new Map<string, Uint8Array>()
  step(i: number, last: boolean, units: [string, number[], number, Uint8Array][], blobs: Record<string, Uint8Array>): void {
    for (const [region, idx, unit, bytes] of units) for (let k = 0; k < idx.length; k++) this.pending.set(`${region}${idx[k]}`, bytes.subarray(k * unit, (k + 1) * unit))
    if (i % THIN !== 0 && !last) return
    for (const b of this.pending.values()) this.ideal.regions.add(b)
    this.pending.clear()
    for (const b of Object.values(blobs)) this.ideal.addBlob(b)
  }
}

// --- the recording (or its replay) ---
async function recording(): Promise<SeriesResult> {
  const storeDir = path.join(root, 'rec-store')
  const store = await openStore(storeDir)
  const ideal = new SeriesIdeal()
  const stats: Checkpoint['stats'][] = []
  const cids: string[] = []
  const kept = new KeptIdeal()
  const replay = process.env.BENCH_REC_REPLAY
  let note: string
  if (replay) {
    const meta = JSON.parse(fs.readFileSync(path.join(replay, 'meta.json'), 'utf8')) as { ramBytes: number; diskBytes: number; checkpoints: number; note: string }
    const ram = Buffer.alloc(meta.ramBytes)
    const disk = Buffer.alloc(meta.diskBytes)
    const tl = await store.timeline('rec', { regions: { ram: { size: ram.length, chunkSize: 4096 }, 'disk.d0': { size: disk.length, chunkSize: 65536 } } })
    for (let i = 0; i < meta.checkpoints; i++) {
      const step = readStep(replay, i)
      // the units' bytes before the step, as the shadow mode hands them over (RegionInput.previous)
      const prevRam = apply(ram, 4096, step.ram, step.ramBytes, ideal.regions)
      const prevDisk = apply(disk, 65536, step.disk, step.diskBytes, ideal.regions)
      for (const b of Object.values(step.blobs)) ideal.addBlob(b)
      const first = i === 0
      const c = await tl.checkpoint({
        vtime: step.vtime,
        regions: {
          ram: first ? { data: ram, stable: true } : { data: ram, dirty: step.ram, ...(withPrevious ? { previous: prevRam } : {}) },
          'disk.d0': first ? { data: disk, stable: true } : { data: disk, dirty: step.disk, ...(withPrevious ? { previous: prevDisk } : {}) },
        },
        blobs: step.blobs,
        meta: step.meta,
      })
      stats.push(c.stats)
      cids.push(c.cid.toString())
      if (THIN > 0) kept.step(i, i === meta.checkpoints - 1, [['r', step.ram, 4096, step.ramBytes], ['d', step.disk, 65536, step.diskBytes]], step.blobs)
    }
    note = `replay of ${replay} (${meta.note})${withPrevious ? '' : '; without previous bytes (BENCH_REC_PREVIOUS=0): no chunk deltas'}`
  } else {
    const trace = process.env.BENCH_REC_TRACE
    if (trace) fs.mkdirSync(trace, { recursive: true })
    const r = await recordQemu(store, path.join(root, 'vm'), N, (i, step, c) => {
      for (const [units, unit, bytes] of [[step.ram, 4096, step.ramBytes], [step.disk, 65536, step.diskBytes]] as const) {
        for (let k = 0; k < units.length; k++) ideal.regions.add(bytes.subarray(k * unit, (k + 1) * unit))
      }
      for (const b of Object.values(step.blobs)) ideal.addBlob(b)
      stats.push(c.stats)
      cids.push(c.cid.toString())
      if (THIN > 0) kept.step(i, i === N - 1, [['r', step.ram, 4096, step.ramBytes], ['d', step.disk, 65536, step.diskBytes]], step.blobs)
      if (trace) writeStep(trace, i, step)
      if (i % 20 === 0) console.log(`checkpoint ${i}: ${step.ram.length} pages changed, ${c.stats.newChunks} new chunks, ${fmtBytes(c.stats.newStoredBytes)} chunk data, ${fmtBytes(c.stats.nodeBytes)} nodes`)
    })
    note = r.note
    if (trace) fs.writeFileSync(path.join(trace, 'meta.json'), JSON.stringify({ ramBytes: r.ramBytes, diskBytes: r.diskBytes, checkpoints: N, note }))
  }
  await store.close()
  return { name: 'QEMU recording', checkpoints: stats.length, storeDir, ideal, stats, note, cids, kept: THIN > 0 ? kept : undefined }
}

/** The recording thinned to every THIN-th checkpoint (and the last), then gc: the store's bytes, and what gc stored anew. */
async function thinned(s: SeriesResult): Promise<{ storeBytes: number; kept: number; chunksReencoded: number; gcMs: number }> {
  const store = await openStore(s.storeDir)
  try {
    const drop = s.cids!.filter((_, k) => k % THIN !== 0 && k !== s.cids!.length - 1)
    await store.rm(drop)
    const t = performance.now()
    const g = await store.gc()
    return { storeBytes: NaN, kept: s.cids!.length - drop.length, chunksReencoded: g.chunksReencoded, gcMs: performance.now() - t }
  } finally {
    await store.close()
  }
}

/** Writes the changed units into the image and counts them in the ideal; returns what they held before. */
function apply(img: Buffer, unit: number, idx: number[], bytes: Buffer, ideal: IdealSize): Buffer {
  const before = Buffer.allocUnsafe(idx.length * unit)
  for (let k = 0; k < idx.length; k++) {
    const piece = bytes.subarray(k * unit, (k + 1) * unit)
    img.copy(before, k * unit, idx[k]! * unit, (idx[k]! + 1) * unit)
    piece.copy(img, idx[k]! * unit)
    ideal.add(piece)
  }
  return before
}

function writeStep(dir: string, i: number, s: Step): void {
  const base = path.join(dir, String(i).padStart(5, '0'))
  fs.writeFileSync(`${base}.json`, JSON.stringify({ vtime: s.vtime.toString(), ram: s.ram, disk: s.disk, blobs: Object.keys(s.blobs), meta: s.meta }))
  fs.writeFileSync(`${base}.ram`, s.ramBytes)
  fs.writeFileSync(`${base}.disk`, s.diskBytes)
  for (const [k, b] of Object.entries(s.blobs)) fs.writeFileSync(`${base}.blob.${k}`, b)
}

function readStep(dir: string, i: number): Step {
  const base = path.join(dir, String(i).padStart(5, '0'))
  const j = JSON.parse(fs.readFileSync(`${base}.json`, 'utf8')) as { vtime: string; ram: number[]; disk: number[]; blobs: string[]; meta: Record<string, string> }
  const blobs: Record<string, Uint8Array> = {}
  for (const k of j.blobs) blobs[k] = fs.readFileSync(`${base}.blob.${k}`)
  return { vtime: BigInt(j.vtime), ram: j.ram, disk: j.disk, ramBytes: fs.readFileSync(`${base}.ram`), diskBytes: fs.readFileSync(`${base}.disk`), blobs, meta: j.meta }
}

// --- workload S, as bench/run.ts ingests it ---
async function workloadS(): Promise<SeriesResult> {
  const w = new Workload()
  const storeDir = path.join(root, 's-store')
  const store = await openStore(storeDir)
  const tl = await store.timeline('run', { regions: { ram: { size: w.ram.length, chunkSize: 4096 }, disk: { size: w.disk.length, chunkSize: 65536 } } })
  const ideal = new SeriesIdeal()
  ideal.regions.addUnits(w.ram, 4096)
  ideal.regions.addUnits(w.disk, 65536)
  const stats: Checkpoint['stats'][] = []
  stats.push((await tl.checkpoint({ vtime: 0n, regions: { ram: { data: w.ram, stable: true }, disk: { data: w.disk, stable: true } }, blobs: { cpu: Buffer.from('cpu state 0') } })).stats)
  for (let k = 1; k < S_N; k++) {
    const d = w.next()
    ideal.regions.addUnits(w.ram, 4096, d.pages)
    ideal.regions.addUnits(w.disk, 65536, d.clusters)
    const c = await tl.checkpoint({ vtime: BigInt(k) * 10_000_000n, regions: { ram: { data: w.ram, dirty: d.pages }, disk: { data: w.disk, dirty: d.clusters } }, blobs: { cpu: Buffer.from(`cpu state ${k}`) } })
    stats.push(c.stats)
  }
  await store.close()
  return { name: 'workload S', checkpoints: S_N, storeDir, ideal, stats, note: `bench/workload.ts, ${S_N} checkpoints of 1,000 dirty pages + 20 clusters` }
}

// --- what a store's packs hold ---
interface Parts {
  chunkPayload: number
  chunks: number
  fullNodePayload: number
  fullNodes: number
  deltaPayload: number
  deltas: number
  deltaMedian: number
  manifestPayload: number
  manifests: number
  recordPayload: number
  records: number
  entryHeaders: number
  packFraming: number
  packBytes: number
  indexBytes: number
  storeBytes: number
}

function breakdown(storeDir: string): Parts {
  const packsDir = path.join(storeDir, 'packs')
  const p: Parts = { chunkPayload: 0, chunks: 0, fullNodePayload: 0, fullNodes: 0, deltaPayload: 0, deltas: 0, deltaMedian: 0, manifestPayload: 0, manifests: 0, recordPayload: 0, records: 0, entryHeaders: 0, packFraming: 0, packBytes: 0, indexBytes: 0, storeBytes: 0 }
  const deltaSizes: number[] = []
  for (const f of fs.readdirSync(packsDir).filter((x) => x.endsWith('.pack'))) {
    p.packFraming += PACK_HEADER_SIZE
    for (const ev of scanPackFile(path.join(packsDir, f), Number.parseInt(f, 10))) {
      if (ev.kind === 'footer') p.packFraming += FOOTER_SIZE
      if (ev.kind !== 'entry') continue
      const e = ev.entry
      const n = e.payload.length
      p.entryHeaders += ENTRY_HEADER_SIZE
      if (e.kind === ENTRY_KIND.record) {
        p.recordPayload += n
        p.records++
      } else if (e.kind === ENTRY_KIND.manifest) {
        p.manifestPayload += n
        p.manifests++
      } else if (e.codec === AT_REST.nodeDelta) {
        p.deltaPayload += n
        p.deltas++
        deltaSizes.push(n)
      } else if (e.cid[1] === 0x71) {
        p.fullNodePayload += n
        p.fullNodes++
      } else {
        p.chunkPayload += n
        p.chunks++
      }
    }
  }
  p.deltaMedian = median(deltaSizes)
  p.packBytes = dirBytes(packsDir)
  p.indexBytes = dirBytes(path.join(storeDir, 'index'))
  p.storeBytes = dirBytes(storeDir)
  return p
}

const series: SeriesResult[] = []
if (process.env.BENCH_REC !== '0') series.push(await recording())
if (process.env.BENCH_REC_S !== '0') series.push(await workloadS())
const parts = series.map((s) => breakdown(s.storeDir))
// after the breakdown of the whole series: the thinned store
const thin: (Awaited<ReturnType<typeof thinned>> | undefined)[] = []
for (const s of series) thin.push(s.kept ? { ...(await thinned(s)), storeBytes: dirBytes(s.storeDir) } : undefined)

const rows: string[][] = [['part', ...series.map((s) => `${s.name}: bytes (share of ideal)`), ...series.map((s) => `${s.name}: entries`)]]
const line = (name: string, bytes: (p: Parts, s: SeriesResult) => number, count?: (p: Parts) => number | string) => {
  rows.push([
    name,
    ...series.map((s, i) => `${fmtBytes(bytes(parts[i]!, s))} (${((bytes(parts[i]!, s) / s.ideal.bytes) * 100).toFixed(2)}%)`),
    ...series.map((_, i) => (count ? String(count(parts[i]!)) : '')),
  ])
}
line('ideal: distinct non-zero pages + clusters, each zstd -1 alone', (_, s) => s.ideal.regions.bytes, () => '')
rows.at(-1)!.splice(1 + series.length, series.length, ...series.map((s) => String(s.ideal.regions.chunks)))
line('ideal: distinct blob chunks (device state), each zstd -1 alone', (_, s) => s.ideal.blobs.bytes)
rows.at(-1)!.splice(1 + series.length, series.length, ...series.map((s) => String(s.ideal.blobs.chunks)))
line('**ideal, total**', (_, s) => s.ideal.bytes)
line('chunk payloads (pages, clusters, blob chunks)', (p) => p.chunkPayload, (p) => p.chunks)
line('tree nodes stored whole', (p) => p.fullNodePayload, (p) => p.fullNodes)
line('tree node deltas', (p) => p.deltaPayload, (p) => `${p.deltas} (median ${p.deltaMedian.toFixed(0)} B)`)
line('manifests', (p) => p.manifestPayload, (p) => p.manifests)
line('catalog records', (p) => p.recordPayload, (p) => p.records)
line(`entry headers (${ENTRY_HEADER_SIZE} B each)`, (p) => p.entryHeaders)
line('pack headers + footers', (p) => p.packFraming)
line('packs on disk', (p) => p.packBytes)
line('LevelDB index (index/)', (p) => p.indexBytes)
line('**store on disk** (packs + index + the rest)', (p) => p.storeBytes)
rows.push(['**stored / ideal**', ...series.map((s, i) => `**${(parts[i]!.storeBytes / s.ideal.bytes).toFixed(3)} x**`), ...series.map(() => '')])
const tree = (p: Parts) => p.fullNodePayload + p.deltaPayload
rows.push(['tree metadata / chunk payloads', ...series.map((_, i) => `${((tree(parts[i]!) / parts[i]!.chunkPayload) * 100).toFixed(1)}% (${fmtBytes(tree(parts[i]!) / series[i]!.checkpoints)} per checkpoint)`), ...series.map(() => '')])
const sum = (s: SeriesResult, f: (x: Checkpoint['stats']) => number) => s.stats.reduce((n, x) => n + f(x), 0)
rows.push(['new chunks stored as deltas of their previous version', ...series.map((s) => `${sum(s, (x) => x.deltaChunks)} of ${sum(s, (x) => x.newChunks)}`), ...series.map(() => '')])
if (thin.some(Boolean)) {
  const cell = (i: number, f: (t: NonNullable<(typeof thin)[number]>, s: SeriesResult) => string) => (thin[i] ? f(thin[i]!, series[i]!) : '-')
  rows.push([`thinned to every ${THIN}th checkpoint and the last, then gc: store / ideal of the kept checkpoints`, ...series.map((_, i) => cell(i, (t, s) => `${fmtBytes(t.storeBytes)} / ${fmtBytes(s.kept!.ideal.bytes)} = **${(t.storeBytes / s.kept!.ideal.bytes).toFixed(3)} x** (${t.kept} kept)`)), ...series.map(() => '')])
  rows.push(['the thinning gc: chunks stored anew (their bases were dead), time', ...series.map((_, i) => cell(i, (t) => `${t.chunksReencoded}, ${(t.gcMs / 1000).toFixed(2)} s`)), ...series.map(() => '')])
}
rows.push(['commit ms, median (after the first)', ...series.map((s) => median(s.stats.slice(1).map((x) => x.commitMs)).toFixed(1)), ...series.map(() => '')])

const date = new Date().toISOString()
const md = [
  '# Stored bytes against the ideal: a real QEMU recording beside workload S',
  '',
  `\`npm run bench:recording\` (node dist/bench/qemu-recording.js) on ${os.cpus().length} cores (shared with other sessions: loaded), node ${process.version}, ${date.slice(0, 10)}.`,
  '',
  ...series.map((s) => `- ${s.name}: ${s.checkpoints} checkpoints; ${s.note}`),
  '',
  table(rows),
  '',
]
const out = path.join(import.meta.dirname, '..', '..', 'bench', 'results')
fs.mkdirSync(out, { recursive: true })
fs.writeFileSync(path.join(out, 'qemu-recording.md'), md.join('\n'))
fs.writeFileSync(
  path.join(out, 'qemu-recording.json'),
  JSON.stringify({ date, series: series.map((s, i) => ({ name: s.name, checkpoints: s.checkpoints, note: s.note, idealBytes: s.ideal.bytes, idealRegionBytes: s.ideal.regions.bytes, idealBlobBytes: s.ideal.blobs.bytes, ratio: parts[i]!.storeBytes / s.ideal.bytes, parts: parts[i], thinned: thin[i] && { ...thin[i], every: THIN, keptIdealBytes: s.kept!.ideal.bytes, ratio: thin[i]!.storeBytes / s.kept!.ideal.bytes } })) }, null, 1) + '\n',
)
console.log(md.join('\n'))
if (keep) console.log(`stores kept under ${root}`)
else fs.rmSync(root, { recursive: true, force: true })
