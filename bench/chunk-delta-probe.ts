/**
 * `npm run bench:chunk-delta`: what storing a changed chunk against an earlier one would save on a real
 * recording, measured before building it (no store format holds such chunks yet). Reads a series saved
 * by `BENCH_REC_TRACE=DIR npm run bench:recording` (BENCH_CHUNK_DELTA_TRACE=DIR, default .bench-trace)
 * and compresses every distinct non-zero page and cluster the store would keep, in recording order:
 *
 * - alone: zstd -1, as ckpt stores a chunk today and as the ideal counts it (bench/ideal.ts);
 * - rolling dictionary: zstd -1 with the last K distinct pages stored before the checkpoint as a
 *   raw-content dictionary (one dictionary per checkpoint, shared by all its chunks);
 * - delta: zstd -1 with the previous version of the same page or cluster as a raw-content dictionary,
 *   kept only where smaller than alone, plus the base's 36-byte CID it would have to name; with a
 *   chain limit L, a chunk whose base is already L deep is stored alone (depth 0) instead.
 *
 * For the delta forms it prints what a whole restore of the last checkpoint would decompress: each
 * chunk's chain (itself and its bases; at most, as bases two chunks share are counted twice), against
 * one decompression a chunk today; and the time to
 * compress and decompress a changed page alone and against its previous version (up to 2,000 of the
 * recording's, median of 3 passes).
 */
import fs from 'node:fs'
import path from 'node:path'
import { createRequire } from 'node:module'
import { blake3 } from '../codecs/blake3.js'
import { fmtBytes, median, table } from './stats.js'

interface CCtx {
  compress(dst: Uint8Array, src: Uint8Array, level: number): number
  compressUsingDict(dst: Uint8Array, src: Uint8Array, dict: Uint8Array, level: number): number
  compressUsingCDict(dst: Uint8Array, src: Uint8Array, dict: object): number
}
interface DCtx {
  decompress(dst: Uint8Array, src: Uint8Array): number
  decompressUsingDict(dst: Uint8Array, src: Uint8Array, dict: Uint8Array): number
}
type ZstdBinding = {
  CCtx: new () => CCtx
  DCtx: new () => DCtx
  CDict: new (dict: Uint8Array, level: number) => object
}
// the probe uses zstd-napi's dictionary calls (zstd-napi is an optional dependency)
let zstd: ZstdBinding
try {
  zstd = createRequire(import.meta.url)('zstd-napi/binding') as ZstdBinding
} catch (err) {
  console.error(`the probe needs zstd-napi, which does not load here: ${(err as Error).message}`)
  process.exit(2)
}

const dir = process.env.BENCH_CHUNK_DELTA_TRACE ?? '.bench-trace'
if (!fs.existsSync(path.join(dir, 'meta.json'))) {
  console.error(`no recording at ${dir}: run BENCH_REC_TRACE=${dir} npm run bench:recording first`)
  process.exit(2)
}
const ROLL = [32, 256]
const LIMITS = [Infinity, 16, 8, 4]
const CID_BYTES = 36

const cctx = new zstd.CCtx()
const dctx = new zstd.DCtx()
const out = Buffer.alloc(256 * 1024)
const isZero = (b: Uint8Array) => b.every((x) => x === 0)
const hex = (b: Uint8Array) => Buffer.from(blake3(b)).toString('hex')

/** One delta form (a chain limit): the bytes it stores, its deltas, and the chain depth of every chunk's entry. */
interface DeltaState {
  limit: number
  bytes: number
  deltas: number
  depthOf: Map<string, number> // content hash -> depth of its stored entry
}

const seen = new Set<string>()
const last = new Map<string, Uint8Array>() // "ram:7" -> the position's latest content
const recent: Uint8Array[] = []
let alone = 0
let chunks = 0
const rolling = ROLL.map((k) => ({ k, bytes: 0 }))
const deltas: DeltaState[] = LIMITS.map((limit) => ({ limit, bytes: 0, deltas: 0, depthOf: new Map() }))
const PAIRS = 2_000
const pairs: [Uint8Array, Uint8Array][] = [] // real pages with their previous version, for the speed figures
const latestHash = new Map<string, string>() // position -> content hash, for the last checkpoint's restore
const meta = JSON.parse(fs.readFileSync(path.join(dir, 'meta.json'), 'utf8')) as { checkpoints: number; note: string }

for (let i = 0; i < meta.checkpoints; i++) {
  const base = path.join(dir, String(i).padStart(5, '0'))
  const step = JSON.parse(fs.readFileSync(`${base}.json`, 'utf8')) as { ram: number[]; disk: number[] }
  const dicts = ROLL.map((k) => (recent.length >= k ? new zstd.CDict(Buffer.concat(recent.slice(-k)), 1) : undefined))
  for (const [region, unit, idx] of [['ram', 4096, step.ram], ['disk', 65536, step.disk]] as const) {
    const bytes = fs.readFileSync(`${base}.${region}`)
    for (let k = 0; k < idx.length; k++) {
      const pos = `${region}:${idx[k]}`
      const chunk = new Uint8Array(bytes.subarray(k * unit, (k + 1) * unit))
      const prev = last.get(pos)
      // the previous version's hash, where it was not a hole (hashed when it was stored)
      const prevHash = latestHash.get(pos)
      last.set(pos, chunk)
      if (isZero(chunk)) {
        latestHash.delete(pos)
        continue
      }
      const h = hex(chunk)
      latestHash.set(pos, h)
      if (seen.has(h)) continue
      seen.add(h)
      chunks++
      if (unit === 4096) recent.push(chunk)
      const a = cctx.compress(out, chunk, 1)
      alone += a
      ROLL.forEach((_, r) => {
        const d = dicts[r]
        rolling[r]!.bytes += d && unit === 4096 ? Math.min(a, cctx.compressUsingCDict(out, chunk, d)) : a
      })
      const withBase = prev && prevHash !== undefined ? cctx.compressUsingDict(out, chunk, prev, 1) + CID_BYTES : Infinity
      if (unit === 4096 && prev && prevHash !== undefined && pairs.length < PAIRS && i % 4 === 0) pairs.push([chunk, prev])
      for (const s of deltas) {
        const baseDepth = prevHash === undefined ? undefined : s.depthOf.get(prevHash)
        if (baseDepth !== undefined && baseDepth < s.limit && withBase < a) {
          s.bytes += withBase
          s.deltas++
          s.depthOf.set(h, baseDepth + 1)
        } else {
          s.bytes += a
          s.depthOf.set(h, 0)
        }
      }
    }
  }
  if (recent.length > 2 * Math.max(...ROLL)) recent.splice(0, recent.length - Math.max(...ROLL))
}

// a whole restore of the last checkpoint: every distinct non-zero chunk it holds, decompressed with its chain
const restore = deltas.map((s) => {
  let decompressions = 0
  const held = new Set(latestHash.values())
  for (const h of held) decompressions += (s.depthOf.get(h) ?? 0) + 1
  return { decompressions, chunks: held.size }
})

// the speed of a real changed page, alone and against its previous version (up to PAIRS of them)
const time = (f: (pair: [Uint8Array, Uint8Array], j: number) => void) => {
  const runs: number[] = []
  for (let r = 0; r < 3; r++) {
    const t0 = process.hrtime.bigint()
    for (let rep = 0; rep < 10; rep++) pairs.forEach(f)
    runs.push(Number(process.hrtime.bigint() - t0) / 1e3 / (10 * pairs.length))
  }
  return median(runs).toFixed(2)
}
const framesAlone = pairs.map(([c]) => Buffer.from(out.subarray(0, cctx.compress(out, c, 1))))
const framesDelta = pairs.map(([c, b]) => Buffer.from(out.subarray(0, cctx.compressUsingDict(out, c, b, 1))))
const dst = Buffer.alloc(4096)
const speed = {
  compressAlone: time(([c]) => cctx.compress(out, c, 1)),
  compressDelta: time(([c, b]) => cctx.compressUsingDict(out, c, b, 1)),
  decompressAlone: time((_, j) => dctx.decompress(dst, framesAlone[j]!)),
  decompressDelta: time(([, b], j) => dctx.decompressUsingDict(dst, framesDelta[j]!, b)),
}

const pct = (n: number) => `${((n / alone) * 100).toFixed(1)}%`
const rows = [
  ['form', 'stored payload', 'of alone', 'chunks stored against another', 'restore of the last checkpoint: decompressions per chunk, at most'],
  ['alone (today; the ideal)', fmtBytes(alone), '100.0%', '0', '1.00'],
  ...rolling.map((r) => [`rolling dictionary, last ${r.k} pages`, fmtBytes(r.bytes), pct(r.bytes), 'all pages after the first', '1.00 (+ the dictionary)']),
  ...deltas.map((s, j) => [
    `delta to the position's previous version, chain limit ${s.limit === Infinity ? 'none' : s.limit} (+${CID_BYTES} B a delta)`,
    fmtBytes(s.bytes),
    pct(s.bytes),
    `${s.deltas} of ${chunks}`,
    (restore[j]!.decompressions / restore[j]!.chunks).toFixed(2),
  ]),
]
const report = [
  `# Chunks stored against earlier chunks: a probe on a real recording`,
  '',
  `\`npm run bench:chunk-delta\` (node dist/bench/chunk-delta-probe.js) over ${dir}: ${meta.checkpoints} checkpoints, ${chunks} distinct non-zero pages and clusters; ${meta.note}. node ${process.version}, ${new Date().toISOString().slice(0, 10)}.`,
  '',
  table(rows),
  '',
  `A changed 4 KiB page of the recording (${pairs.length} of them, each with its previous version), µs a page, median of 3 passes: compress alone ${speed.compressAlone}, against a 4 KiB base ${speed.compressDelta}; decompress alone ${speed.decompressAlone}, against its base ${speed.decompressDelta}.`,
  '',
].join('\n')
console.log(report)
fs.mkdirSync('bench/results', { recursive: true })
fs.writeFileSync('bench/results/chunk-delta-probe.md', report)
