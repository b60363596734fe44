/**
 * Region ingest: chunks (copied at checkpoint time, or read from a file) are hashed in batches on the
 * worker pool; zero chunks become holes; chunks whose digest equals the tree's current slot cost nothing
 * more; chunks already in the store (fingerprint filter, then index) are only linked; the rest are
 * compressed on the pool and appended to the open pack.
 */
import { blake3 } from '../codecs/blake3.js'
import { cdcCuts } from '../codecs/cdc.js'
import { cidBytes, cidDigest, cidEquals, RAW, type CidBytes } from '../codecs/cid.js'
import type { BlobRoot } from '../codecs/manifest.js'
import type { NodeEntries } from '../codecs/tree-node.js'
import { AT_REST, compressBlock, maxBlockPayload, type Compressor } from '../codecs/compress.js'
import { CHUNK_DELTA_MAX_DEPTH } from '../codecs/chunk-delta.js'
import { CkptError } from '../codecs/errors.js'
import type { BlockStore } from '../store/index.js'
import { acquireSlab, releaseSlab } from './pipeline/slabs.js'
import { COMPRESSED, type HashResult } from './pipeline/tasks.js'
import { ENTRY_HEADER_SIZE } from '../codecs/pack-format.js'
import { PRESCAN_SPANS, prescanOf, type WorkerPool } from './pipeline/worker-pool.js'
import type { Geometry, RegionTree } from './region-tree.js'
import { SPAN_SIZE, type SpanTable } from '../codecs/scan-cache.js'


/** ~1 MiB of chunks per task: large enough to amortise a postMessage, small enough to spread. */
export const BATCH_BYTES = 1 << 20

export interface ChunkBatch {
  /** the chunks' bytes in shared memory, or (for files) undefined: workers pread `file` themselves */
  data?: Uint8Array
  file?: string
  fileOffset?: number
  /** dirty-hint batches: the chunks' bytes at the previous checkpoint, at the same offsets as in `data` */
  bases?: Uint8Array
  /** chunk index of each chunk in the batch */
  indexes: Uint32Array
  offsets: Uint32Array
  lengths: Uint32Array
  /**
   * Tree leaves [from, to) that no other batch of this checkpoint touches: the worker hashes them
   * with the chunks (sorted indexes only)
   */
  ownedLeaves?: [number, number]
}

export interface IngestStats {
  chunks: number
  zeroChunks: number
  unchangedChunks: number
  dedupChunks: number
  newChunks: number
  newRawBytes: number
  newStoredBytes: number
  /** full scans: 64 KiB spans found equal to the scan cache, whose chunks were not hashed one by one */
  spansUnchanged: number
  /** full scans: tree leaves taken from the leaf file (SPEC §18.1) instead of rebuilt from the packs */
  leavesFromFile: number
  /** new chunks stored as deltas against their previous version (RegionInput.previous) */
  deltaChunks: number
  /** chunks whose `previous` bytes did not hash to the previous checkpoint's chunk (stored whole) */
  deltaBaseMismatches: number
}

export function emptyStats(): IngestStats {
  return { chunks: 0, zeroChunks: 0, unchangedChunks: 0, dedupChunks: 0, newChunks: 0, newRawBytes: 0, newStoredBytes: 0, spansUnchanged: 0, leavesFromFile: 0, deltaChunks: 0, deltaBaseMismatches: 0 }
}

/**
 * A full scan's spans (regions with chunks under SPAN_SIZE): `cached`, the scan cache's table valid
 * for the tree the scan diffs against, if any; `out`, this scan's digests, filled batch by batch
 * (`filled` spans so far) and saved once the checkpoint is durable.
 */
export interface SpanScan {
  /** chunks per span */
  per: number
  cached?: SpanTable
  out: SpanTable
  filled: number
}

export function addStats(a: IngestStats, b: IngestStats): void {
  for (const k of Object.keys(a) as (keyof IngestStats)[]) a[k] += b[k]
}

/**
 * Splits consecutive chunks held contiguously in `data` (chunk k of the list at k*chunkSize) into
 * batches of at most BATCH_BYTES, and into at least `parts` batches so every worker gets a share.
 */
export function batchesOf(data: Uint8Array, indexes: Uint32Array, lengthOf: (i: number) => number, chunkSize: number, parts = 1, bases?: Uint8Array): ChunkBatch[] {
  const out: ChunkBatch[] = []
  let s = 0
  for (const size of balancedRuns(indexes.length, Math.max(1, Math.floor(BATCH_BYTES / chunkSize)), parts)) {
    const idx = indexes.subarray(s, s + size)
    const offsets = new Uint32Array(idx.length)
    const lengths = new Uint32Array(idx.length)
    const base = s * chunkSize
    let end = 0
    for (let k = 0; k < idx.length; k++) {
      offsets[k] = k * chunkSize
      lengths[k] = lengthOf(idx[k]!)
      end = offsets[k]! + lengths[k]!
    }
    out.push({ data: data.subarray(base, base + end), bases: bases?.subarray(base, base + end), indexes: idx, offsets, lengths })
    s += size
  }
  return out
}

/**
 * Marks, for batches of sorted chunk indexes, the tree leaves (`fanout` chunks each) that each batch
 * alone touches: all of its leaves but one it shares with the batch before or after it.
 */
export function markOwnedLeaves(batches: ChunkBatch[], fanout: number): void {
  for (let k = 0; k < batches.length; k++) {
    const idx = batches[k]!.indexes
    if (idx.length === 0) continue
    let from = Math.floor(idx[0]! / fanout)
    let to = Math.floor(idx[idx.length - 1]! / fanout) + 1
    const prev = batches[k - 1]?.indexes
    const next = batches[k + 1]?.indexes
    if (prev && prev.length > 0 && Math.floor(prev[prev.length - 1]! / fanout) === from) from++
    if (next && next.length > 0 && Math.floor(next[0]! / fanout) === to - 1) to--
    if (from < to) batches[k]!.ownedLeaves = [from, to]
  }
}

/**
 * The prescanned digests and zero flags (prescanFiles) of a file batch's 64 KiB spans, where its
 * file was prescanned at the region's size and its chunks tile spans (chunks of 64 KiB, or smaller
 * ones scanned by spans): undefined otherwise, or when a piece of the prescan failed.
 */
async function prescanned(b: ChunkBatch, geo: Geometry, bySpans: boolean): Promise<{ digests: Uint8Array; zero: Uint8Array } | undefined> {
  const pre = prescanOf(b.file!, geo.size)
  const at = b.fileOffset ?? 0
  if (!pre || at % SPAN_SIZE !== 0 || !(geo.chunkSize === SPAN_SIZE || (bySpans && SPAN_SIZE % geo.chunkSize === 0))) return undefined
  const s0 = at / SPAN_SIZE
  const count = Math.ceil((b.indexes.length * geo.chunkSize) / SPAN_SIZE)
  const ok = await Promise.all(pre.pieces.slice(Math.floor(s0 / PRESCAN_SPANS), Math.floor((s0 + count - 1) / PRESCAN_SPANS) + 1))
  if (!ok.every(Boolean)) return undefined
  return { digests: pre.digests.slice(s0 * 32, (s0 + count) * 32), zero: pre.zero.slice(s0, s0 + count) }
}

/**
 * Hashes, dedups, compresses and stores one batch; updates the tree. `speculative` (dirty-hint
 * batches, mostly new content): the worker compresses changed chunks in the same round trip; otherwise
 * (full scans, mostly unchanged) only chunks found new are compressed, in a second task.
 */
export async function ingestBatch(pool: WorkerPool, blocks: BlockStore, tree: RegionTree, b: ChunkBatch, stats: IngestStats, speculative = false, spans?: SpanScan): Promise<void> {
  if (speculative) return ingestSpeculative(pool, blocks, tree, b, stats)
  // spans: a full scan's batches are consecutive chunks starting on a span boundary
  const first = b.indexes[0] ?? 0
  const span = spans && first % spans.per === 0 ? { s0: first / spans.per, count: Math.ceil(b.indexes.length / spans.per) } : undefined
  let cachedSpans: Uint8Array | undefined
  let cachedZero: Uint8Array | undefined
  if (span && spans!.cached) {
    cachedSpans = spans!.cached.digests.slice(span.s0 * 32, (span.s0 + span.count) * 32)
    cachedZero = spans!.cached.zero.slice(span.s0, span.s0 + span.count)
  }
  const known = b.file ? await prescanned(b, tree.geo, span !== undefined) : undefined
  const h = await pool.run({
    op: 'hash', data: b.data, file: b.file, fileOffset: b.fileOffset, offsets: b.offsets, lengths: b.lengths,
    spanChunks: span ? spans!.per : undefined, cachedSpans, cachedZero, knownSpans: known?.digests, knownZero: known?.zero,
  })
  if (span && h.spanDigests && h.spanZero) {
    spans!.out.digests.set(h.spanDigests, span.s0 * 32)
    spans!.out.zero.set(h.spanZero, span.s0)
    spans!.filled += span.count
    stats.spansUnchanged += h.spansUnchanged ?? 0
  }
  const fresh: number[] = []
  const freshCids: Uint8Array[] = []
  for (let k = 0; k < b.indexes.length; k++) {
    if (h.unchanged?.[k]) {
      // its span hashes as the scan cache says it did for the tree's current content: the tree's slot stands
      stats.chunks++
      if (tree.chunkDigest(b.indexes[k]!)) stats.unchangedChunks++
      else stats.zeroChunks++
      continue
    }
    const cid = link(tree, stats, b.indexes[k]!, h.zero[k] === 1, h.digests, k)
    if (!cid) continue
    // duplicates inside one batch are rare; put() skips the second, at the cost of one extra compression
    if (blocks.has(cid)) {
      stats.dedupChunks++
      continue
    }
    fresh.push(k)
    freshCids.push(cid)
  }
  if (fresh.length === 0) return
  const offsets = new Uint32Array(fresh.map((k) => b.offsets[k]!))
  const lengths = new Uint32Array(fresh.map((k) => b.lengths[k]!))
  let digests: Uint8Array | undefined
  if (b.file) {
    // re-read from the file: the worker checks the bytes still hash to what phase 1 saw
    digests = new Uint8Array(fresh.length * 32)
    fresh.forEach((k, n) => digests!.set(h.digests.subarray(k * 32, k * 32 + 32), n * 32))
  }
  const c = await pool.run({ op: 'compress', data: b.data, file: b.file, fileOffset: b.fileOffset, offsets, lengths, digests, codec: blocks.compressor.code })
  if (c.changed !== undefined && c.changed >= 0) {
    throw new CkptError('CKPT_IO', `${b.file} changed while it was being checkpointed`, { path: b.file })
  }
  let at = 0
  for (let n = 0; n < fresh.length; n++) {
    const len = c.outLengths[n]!
    // a chunk may have been stored meanwhile by a concurrent batch with the same content
    const stored = blocks.put(freshCids[n]!, c.codes[n]!, c.out.subarray(at, at + len), lengths[n]!)
    counted(stats, stored, lengths[n]!, len)
    if (stored) tree.setChunkDepth(b.indexes[fresh[n]!]!, 0)
    at += len
  }
}

/** A dirty-hint batch: hashed, compressed (against previous versions where given) and leaves updated on a worker in one round trip. */
async function ingestSpeculative(pool: WorkerPool, blocks: BlockStore, tree: RegionTree, b: ChunkBatch, stats: IngestStats): Promise<void> {
  // the task's inputs and the payloads live in reused shared memory: fresh buffers per task
  // (~2.5 MB of leaf copies per workload-S checkpoint) would make V8 run collections for their
  // external memory every few checkpoints
  const previous = acquireSlab(b.indexes.length * 32).fill(0)
  // with the previous versions' bytes: each may be a delta's base while its chain stays short
  const baseDepths = b.bases ? acquireSlab(b.indexes.length).fill(255) : undefined
  for (let k = 0; k < b.indexes.length; k++) {
    const d = tree.chunkDigest(b.indexes[k]!)
    if (d) previous.set(d, k * 32)
    if (d && baseDepths) {
      const depth = tree.chunkDepth(b.indexes[k]!)
      if (depth < CHUNK_DELTA_MAX_DEPTH) baseDepths[k] = depth
    }
  }
  const comp = blocks.compressor
  let bound = 0
  for (let k = 0; k < b.lengths.length; k++) bound += ENTRY_HEADER_SIZE + maxBlockPayload(comp, b.lengths[k]!)
  const out = acquireSlab(bound)
  // the worker also makes the owned leaves' deltas: the commit then only places them
  const leaves = b.ownedLeaves ? tree.leafSet(b.indexes, b.ownedLeaves[0], b.ownedLeaves[1], true, acquireSlab) : undefined
  try {
    const h = await pool.run(
      {
        op: 'hash', data: b.data, file: b.file, fileOffset: b.fileOffset, offsets: b.offsets, lengths: b.lengths,
        compress: true, codec: blocks.compressor.code, previous, known: blocks.filterView(), out, leaves, indexes: leaves ? b.indexes : undefined,
        bases: baseDepths ? b.bases : undefined, baseDepths,
      },
    )
    stats.deltaBaseMismatches += h.baseMismatches ?? 0
    await placeSpeculative(blocks, tree, b, h as Required<typeof h>, stats)
    if (leaves && h.leafHashes) tree.presetLeaves(leaves.numbers, h.leafHashes, h.leafLive!, h.leafDeltaLengths && h.leafDeltas && h.leafSizes ? { lengths: h.leafDeltaLengths, bytes: h.leafDeltas, sizes: h.leafSizes } : undefined)
  } finally {
    releaseSlab(out)
    releaseSlab(previous)
    if (baseDepths) releaseSlab(baseDepths)
    if (leaves) releaseSlab(leaves.counts)
  }
}

/** Links chunk i into the tree: a hole, an unchanged chunk, or a changed one whose CID is returned. */
function link(tree: RegionTree, stats: IngestStats, i: number, zero: boolean, digests: Uint8Array, k: number): CidBytes | undefined {
  stats.chunks++
  if (zero) {
    stats.zeroChunks++
    tree.setChunk(i, undefined)
    return undefined
  }
  const digest = digests.subarray(k * 32, k * 32 + 32)
  if (!tree.setChunk(i, digest)) {
    stats.unchangedChunks++
    return undefined
  }
  return cidBytes(RAW, digest)
}

function counted(stats: IngestStats, stored: boolean, rawLength: number, storedLength: number): void {
  if (!stored) {
    stats.dedupChunks++
    return
  }
  stats.newChunks++
  stats.newRawBytes += rawLength
  stats.newStoredBytes += storedLength
}

async function placeSpeculative(blocks: BlockStore, tree: RegionTree, b: ChunkBatch, h: Required<HashResult>, stats: IngestStats): Promise<void> {
  let at = 0
  const check: [number, CidBytes][] = []
  for (let k = 0; k < b.indexes.length; k++) {
    const mark = h.compressed[k]!
    const len = mark === COMPRESSED ? h.outLengths[k]! : 0
    const entry = h.out.subarray(at, at + len)
    at += len
    const cid = link(tree, stats, b.indexes[k]!, h.zero[k] === 1, h.digests, k)
    if (!cid) continue
    if (mark === COMPRESSED) {
      const depth = h.depths ? h.depths[k]! : 0
      const stored = blocks.putEntry(cid, entry, b.lengths[k]!, h.codes[k]!, depth)
      counted(stats, stored, b.lengths[k]!, len - ENTRY_HEADER_SIZE)
      // the chain a later version of this chunk would extend (unknown where the block was there already)
      if (stored) tree.setChunkDepth(b.indexes[k]!, depth)
      if (stored && h.codes[k] === AT_REST.chunkDelta) stats.deltaChunks++
    } else check.push([k, cid])
  }
  if (check.length === 0) return
  // KNOWN chunks (the filter's "maybe"), confirmed in one index call off this thread
  const locs = await blocks.locateMany(check.map(([, cid]) => cid))
  let comp: Compressor | undefined
  for (let j = 0; j < check.length; j++) {
    const [k, cid] = check[j]!
    if (locs[j] || blocks.has(cid)) {
      stats.dedupChunks++
      continue
    }
    // not stored after all (a false "maybe"), or unchanged by the tree's digest when the task was
    // built but changed now (a duplicate index): compress here, from the batch's bytes
    const chunk = b.data ? b.data.subarray(b.offsets[k]!, b.offsets[k]! + b.lengths[k]!) : undefined
    if (!chunk || !cidEquals(blake3(chunk), cidDigest(cid))) throw new CkptError('CKPT_IO', `chunk ${b.indexes[k]} changed during its checkpoint`, { index: b.indexes[k] })
    const c = compressBlock((comp ??= blocks.compressor), chunk)
    const stored = blocks.put(cid, c.code, c.bytes, b.lengths[k]!)
    counted(stats, stored, b.lengths[k]!, c.bytes.length)
    if (stored) tree.setChunkDepth(b.indexes[k]!, 0)
  }
}

/** Splits n items into nearly equal consecutive runs: at least `parts` of them, none over `maxPer`. */
export function balancedRuns(n: number, maxPer: number, parts: number): number[] {
  const count = Math.max(Math.min(parts, n), Math.ceil(n / maxPer))
  const out: number[] = []
  for (let p = 0; p < count; p++) out.push(Math.floor(((p + 1) * n) / count) - Math.floor((p * n) / count))
  return out.filter((x) => x > 0)
}

/**
 * Batches of a whole file (full scan of a disk image): ranges only; each worker preads its range, so
 * no image bytes pass through the main thread. The file must not change until the checkpoint resolves.
 */
export function fileBatches(path: string, size: number, chunkSize: number, lengthOf: (i: number) => number): () => Promise<ChunkBatch | undefined> {
  const per = Math.max(1, Math.floor((4 * BATCH_BYTES) / chunkSize))
  const chunks = Math.ceil(size / chunkSize)
  let next = 0
  return async () => {
    if (next >= chunks) return undefined
    const n = Math.min(per, chunks - next)
    const indexes = new Uint32Array(n)
    const offsets = new Uint32Array(n)
    const lengths = new Uint32Array(n)
    for (let k = 0; k < n; k++) {
      indexes[k] = next + k
      offsets[k] = k * chunkSize
      lengths[k] = lengthOf(next + k)
    }
    const b = { file: path, fileOffset: next * chunkSize, indexes, offsets, lengths }
    next += n
    return b
  }
}

/** Tree nodes hashed on the pool: split across it, each part travelling as three flat arrays. */
export async function hashNodes(pool: WorkerPool, nodes: NodeEntries[]): Promise<Uint8Array[]> {
  const parts = Math.max(1, Math.min(pool.threads, nodes.length))
  const results = await Promise.all(
    balancedRuns(nodes.length, nodes.length, parts).map((size, p, sizes) => {
      const from = sizes.slice(0, p).reduce((a, b) => a + b, 0)
      const list = nodes.slice(from, from + size)
      const slots = list.reduce((a, e) => a + e.count, 0)
      const task = { op: 'nodes' as const, counts: new Uint32Array(list.map((e) => e.count)), codecs: new Uint8Array(slots), digests: new Uint8Array(slots * 32) }
      let at = 0
      for (const e of list) {
        task.codecs.set(e.codecs, at)
        task.digests.set(e.digests, at * 32)
        at += e.count
      }
      // the arrays were built for this task: move them rather than copy ~2 MB of digests
      return pool.run(task, [task.counts.buffer, task.codecs.buffer, task.digests.buffer] as ArrayBuffer[])
    }),
  )
  return results.flatMap((r) => Array.from({ length: r.hashes.length / 32 }, (_, k) => r.hashes.subarray(k * 32, k * 32 + 32)))
}

export function bufferBatches(data: Uint8Array, geo: Geometry): () => Promise<ChunkBatch | undefined> {
  const per = Math.max(1, Math.floor((1 << 20) / geo.chunkSize))
  let next = 0
  const shared = data.buffer instanceof SharedArrayBuffer
  return async () => {
    if (next >= geo.chunks) return undefined
    const n = Math.min(per, geo.chunks - next)
    const start = next * geo.chunkSize
    const end = Math.min(geo.size, (next + n) * geo.chunkSize)
    // a view of an ordinary ArrayBuffer would be cloned whole by postMessage: copy just this batch
    let view = data.subarray(start, end)
    if (!shared) {
      const s = acquireSlab(view.length)
      s.set(view)
      view = s
    }
    const indexes = new Uint32Array(n)
    const offsets = new Uint32Array(n)
    const lengths = new Uint32Array(n)
    for (let k = 0; k < n; k++) {
      indexes[k] = next + k
      offsets[k] = k * geo.chunkSize
      lengths[k] = geo.chunkLength(next + k)
    }
    next += n
    return { data: view, indexes, offsets, lengths }
  }
}

/** Content-defined chunks of a blob; the manifest lists them in order. */
export function storeBlob(blocks: BlockStore, data: Uint8Array): { root: BlobRoot; stored: number } {
  const cuts = cdcCuts(data)
  const chunks: BlobRoot['chunks'] = []
  let start = 0
  let stored = 0
  const comp = blocks.compressor
  for (const end of cuts) {
    const piece = data.subarray(start, end)
    const cid = cidBytes(RAW, blake3(piece))
    if (!blocks.has(cid)) {
      const c = compressBlock(comp, piece)
      blocks.put(cid, c.code, c.bytes, piece.length)
      stored += c.bytes.length
    }
    chunks.push({ cid, length: piece.length })
    start = end
  }
  return { root: { size: data.length, chunks }, stored }
}
