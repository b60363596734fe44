/**
 * Region ingest: chunks (copied at checkpoint time, or read from a file) are hashed in batches on the
 * worker pool; zero chunks become holes; chunks whose digest equals the tree's current slot cost nothing
 * more; chunks already in the store (fingerprint filter, then index) are only linked; the rest are
 * compressed on the pool and appended to the open pack.
 */
import fs from 'node:fs'
import { cidBytes, RAW } from '../codecs/cid.js'
import { CkptError } from '../codecs/errors.js'
import type { BlockStore } from '../store/block-store.js'
import type { WorkerPool } from './pipeline/worker-pool.js'
import { acquireSlab } from './pipeline/slabs.js'
import type { RegionTree } from './region-tree.js'

/** ~1 MiB of chunks per task: large enough to amortise a postMessage, small enough to spread. */
export const BATCH_BYTES = 1 << 20

export interface ChunkBatch {
  data: Uint8Array
  /** chunk index of each chunk in the batch */
  indexes: Uint32Array
  offsets: Uint32Array
  lengths: Uint32Array
}

export interface IngestStats {
  chunks: number
  zeroChunks: number
  unchangedChunks: number
  dedupChunks: number
  newChunks: number
  newRawBytes: number
  newStoredBytes: number
}

export function emptyStats(): IngestStats {
  return { chunks: 0, zeroChunks: 0, unchangedChunks: 0, dedupChunks: 0, newChunks: 0, newRawBytes: 0, newStoredBytes: 0 }
}

export function addStats(a: IngestStats, b: IngestStats): void {
  for (const k of Object.keys(a) as (keyof IngestStats)[]) a[k] += b[k]
}

/** Splits consecutive chunks held contiguously in `data` (chunk k of the list at k*chunkSize) into batches. */
export function batchesOf(data: Uint8Array, indexes: Uint32Array, lengthOf: (i: number) => number, chunkSize: number): ChunkBatch[] {
  const per = Math.max(1, Math.floor(BATCH_BYTES / chunkSize))
  const out: ChunkBatch[] = []
  for (let s = 0; s < indexes.length; s += per) {
    const idx = indexes.subarray(s, Math.min(indexes.length, s + per))
    const offsets = new Uint32Array(idx.length)
    const lengths = new Uint32Array(idx.length)
    const base = s * chunkSize
    let end = 0
    for (let k = 0; k < idx.length; k++) {
      offsets[k] = k * chunkSize
      lengths[k] = lengthOf(idx[k]!)
      end = offsets[k]! + lengths[k]!
    }
    out.push({ data: data.subarray(base, base + end), indexes: idx, offsets, lengths })
  }
  return out
}

/** Hashes, dedups, compresses and stores one batch; updates the tree. */
export async function ingestBatch(pool: WorkerPool, blocks: BlockStore, tree: RegionTree, b: ChunkBatch, stats: IngestStats): Promise<void> {
  const h = await pool.run({ op: 'hash', data: b.data, offsets: b.offsets, lengths: b.lengths })
  const fresh: number[] = []
  const freshCids: Uint8Array[] = []
  for (let k = 0; k < b.indexes.length; k++) {
    const i = b.indexes[k]!
    stats.chunks++
    if (h.zero[k]) {
      stats.zeroChunks++
      tree.setChunk(i, undefined)
      continue
    }
    const digest = h.digests.subarray(k * 32, k * 32 + 32)
    if (!tree.setChunk(i, digest)) {
      stats.unchangedChunks++
      continue
    }
    const cid = cidBytes(RAW, digest)
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
  const c = await pool.run({ op: 'compress', data: b.data, offsets, lengths })
  let at = 0
  for (let n = 0; n < fresh.length; n++) {
    const len = c.outLengths[n]!
    // a chunk may have been stored meanwhile by a concurrent batch with the same content
    if (blocks.put(freshCids[n]!, c.codes[n]!, c.out.subarray(at, at + len), lengths[n]!)) {
      stats.newChunks++
      stats.newRawBytes += lengths[n]!
      stats.newStoredBytes += len
    } else stats.dedupChunks++
    at += len
  }
}

/**
 * Runs batches with bounded parallelism (twice the pool size in flight), so reading, hashing and
 * compressing overlap while memory stays bounded.
 */
export async function runBatches(
  pool: WorkerPool,
  next: () => Promise<ChunkBatch | undefined>,
  work: (b: ChunkBatch) => Promise<void>,
): Promise<void> {
  const limit = Math.max(2, pool.threads * 2)
  const inflight = new Set<Promise<void>>()
  let failure: unknown
  for (;;) {
    if (failure) break
    const b = await next()
    if (!b) break
    const p: Promise<void> = work(b).then(
      () => void inflight.delete(p),
      (err) => {
        inflight.delete(p)
        failure ??= err
      },
    )
    inflight.add(p)
    if (inflight.size >= limit) await Promise.race(inflight)
  }
  await Promise.all(inflight)
  if (failure) throw failure
}

/** Batches of a whole file, read sequentially into shared memory (full scan of a disk image). */
export function fileBatches(path: string, size: number, chunkSize: number, lengthOf: (i: number) => number): () => Promise<ChunkBatch | undefined> {
  const per = Math.max(1, Math.floor((4 * BATCH_BYTES) / chunkSize))
  const chunks = Math.ceil(size / chunkSize)
  let fd: number | undefined
  let next = 0
  return async () => {
    if (next >= chunks) {
      if (fd !== undefined) fs.closeSync(fd)
      fd = undefined
      return undefined
    }
    try {
      fd ??= fs.openSync(path, 'r')
      const n = Math.min(per, chunks - next)
      const bytes = Math.min(size - next * chunkSize, n * chunkSize)
      const data = acquireSlab(bytes)
      let got = 0
      while (got < bytes) {
        const r = await new Promise<number>((res, rej) =>
          fs.read(fd!, data, got, bytes - got, next * chunkSize + got, (e, nr) => (e ? rej(e) : res(nr))),
        )
        if (r === 0) throw new CkptError('CKPT_WRONG_SIZE', `${path} shrank while it was read`, { path })
        got += r
      }
      const indexes = new Uint32Array(n)
      const offsets = new Uint32Array(n)
      const lengths = new Uint32Array(n)
      for (let k = 0; k < n; k++) {
        indexes[k] = next + k
        offsets[k] = k * chunkSize
        lengths[k] = lengthOf(next + k)
      }
      next += n
      return { data, indexes, offsets, lengths }
    } catch (err) {
      if (fd !== undefined) fs.closeSync(fd)
      fd = undefined
      if (err instanceof CkptError) throw err
      throw new CkptError('CKPT_IO', `cannot read ${path}: ${(err as Error).message}`, { path }, err)
    }
  }
}
