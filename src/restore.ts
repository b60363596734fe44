/**
 * Reading regions back. restore() walks the leaves, looks up a leaf's chunk locations in one index call,
 * reads the stored payloads, and hands batches to the worker pool, which decompresses and re-hashes each
 * chunk against its CID; a mismatch fails with CKPT_HASH_MISMATCH naming the chunk.
 */
import fs from 'node:fs'
import { cidBytes, cidCodec, cidDigest, cidKey, cidToString, RAW, type CidBytes } from '../codecs/cid.js'
import { CkptError } from '../codecs/errors.js'
import { decodeNode, type NodeEntries } from '../codecs/tree-node.js'
import { hashMismatch, type BlockLocation, type BlockStore } from '../store/block-store.js'
import type { WorkerPool } from './pipeline/worker-pool.js'
import type { Geometry } from './region-tree.js'

const decoded = new WeakMap<BlockStore, Map<string, NodeEntries>>()

/** Decoded tree node by CID, cached per store (nodes are immutable: a CID names one content forever). */
export function nodeEntries(blocks: BlockStore, cid: CidBytes): NodeEntries {
  let cache = decoded.get(blocks)
  if (!cache) decoded.set(blocks, (cache = new Map()))
  const k = cidKey(cid)
  let e = cache.get(k)
  if (!e) {
    e = decodeNode(blocks.get(cid))
    if (cache.size >= 8192) cache.delete(cache.keys().next().value!)
    cache.set(k, e)
  }
  return e
}

function childCid(e: NodeEntries, slot: number): CidBytes | null {
  return e.codecs[slot] ? cidBytes(e.codecs[slot]!, e.digests.subarray(slot * 32, slot * 32 + 32)) : null
}

/** Calls fn(leafIndex, leafEntries | null) for every leaf in order; null for hole subtrees (not loaded). */
export function walkLeaves(blocks: BlockStore, geo: Geometry, root: CidBytes | null, fn: (j: number, e: NodeEntries | null) => void): void {
  const visit = (level: number, index: number, cid: CidBytes | null) => {
    if (level === 1) return fn(index, cid ? nodeEntries(blocks, cid) : null)
    const first = index * geo.fanout
    const n = geo.nodeCount(level, index)
    const e = cid ? nodeEntries(blocks, cid) : null
    for (let s = 0; s < n; s++) visit(level - 1, first + s, e ? childCid(e, s) : null)
  }
  visit(geo.height, 0, root)
}

export function readChunk(blocks: BlockStore, geo: Geometry, root: CidBytes | null, i: number): Uint8Array {
  let cid = root
  for (let level = geo.height; level >= 1 && cid; level--) {
    const span = geo.fanout ** (level - 1)
    const slot = Math.floor(i / span) % geo.fanout
    cid = childCid(nodeEntries(blocks, cid), slot)
  }
  if (!cid) return new Uint8Array(geo.chunkLength(i))
  if (cidCodec(cid) !== RAW) throw new CkptError('CKPT_BAD_NODE', `leaf slot of chunk ${i} links a non-raw block`, { index: i })
  const bytes = blocks.get(cid)
  if (bytes.length !== geo.chunkLength(i)) {
    throw new CkptError('CKPT_BAD_NODE', `chunk ${i} has ${bytes.length} bytes, expected ${geo.chunkLength(i)}`, { cid: cidToString(cid), index: i })
  }
  return bytes
}

interface Job {
  chunks: number[]
  cids: CidBytes[]
  locs: BlockLocation[]
  payloads: Uint8Array[]
  raw: number
}

export async function restoreRegion(
  blocks: BlockStore,
  pool: WorkerPool,
  geo: Geometry,
  root: CidBytes | null,
  out: Uint8Array | string,
): Promise<{ bytes: number; chunks: number }> {
  let fd: number | undefined
  if (typeof out === 'string') {
    fd = fs.openSync(out, 'w')
    fs.ftruncateSync(fd, geo.size)
  }
  const leaves: { j: number; e: NodeEntries | null }[] = []
  walkLeaves(blocks, geo, root, (j, e) => leaves.push({ j, e }))
  let written = 0
  let count = 0
  const inflight = new Set<Promise<void>>()
  let failure: unknown
  const finish = async (job: Job) => {
    const offsets = new Uint32Array(job.payloads.length)
    const lengths = new Uint32Array(job.payloads.length)
    const codes = new Uint8Array(job.payloads.length)
    const rawLengths = new Uint32Array(job.payloads.length)
    const digests = new Uint8Array(job.payloads.length * 32)
    let total = 0
    for (const p of job.payloads) total += p.length
    const data = new Uint8Array(total)
    let at = 0
    for (let k = 0; k < job.payloads.length; k++) {
      data.set(job.payloads[k]!, at)
      offsets[k] = at
      lengths[k] = job.payloads[k]!.length
      codes[k] = job.locs[k]!.codec
      rawLengths[k] = job.locs[k]!.rawLength
      digests.set(cidDigest(job.cids[k]!), k * 32)
      at += job.payloads[k]!.length
    }
    const r = await pool.run({ op: 'decompress', data, offsets, lengths, codes, rawLengths, digests })
    if (r.bad >= 0) {
      const cid = job.cids[r.bad]!
      if (r.error) throw new CkptError('CKPT_BAD_PACK', `block ${cidToString(cid)} cannot be decompressed: ${r.error}`, { cid: cidToString(cid) })
      throw hashMismatch(cid, job.locs[r.bad]!)
    }
    let o = 0
    for (let k = 0; k < job.chunks.length; k++) {
      const i = job.chunks[k]!
      const len = job.locs[k]!.rawLength
      if (len !== geo.chunkLength(i)) throw new CkptError('CKPT_BAD_NODE', `chunk ${i} has ${len} bytes, expected ${geo.chunkLength(i)}`, { index: i })
      const bytes = r.out.subarray(o, o + len)
      if (fd !== undefined) fs.writeSync(fd, bytes, 0, len, i * geo.chunkSize)
      else (out as Uint8Array).set(bytes, i * geo.chunkSize)
      o += len
      written += len
      count++
    }
  }
  try {
    let job: Job = { chunks: [], cids: [], locs: [], payloads: [], raw: 0 }
    const flush = async () => {
      if (job.chunks.length === 0) return
      const j = job
      job = { chunks: [], cids: [], locs: [], payloads: [], raw: 0 }
      const p: Promise<void> = finish(j).then(
        () => void inflight.delete(p),
        (err) => {
          inflight.delete(p)
          failure ??= err
        },
      )
      inflight.add(p)
      if (inflight.size >= Math.max(2, pool.threads * 2)) await Promise.race(inflight)
    }
    for (const { j, e } of leaves) {
      if (failure) break
      const first = j * geo.fanout
      if (!e) {
        if (fd === undefined) {
          const end = Math.min(geo.size, (first + geo.nodeCount(1, j)) * geo.chunkSize)
          ;(out as Uint8Array).fill(0, first * geo.chunkSize, end)
        }
        continue
      }
      const idx: number[] = []
      const cids: CidBytes[] = []
      for (let s = 0; s < e.count; s++) {
        const i = first + s
        const c = childCid(e, s)
        if (!c) {
          if (fd === undefined) (out as Uint8Array).fill(0, i * geo.chunkSize, i * geo.chunkSize + geo.chunkLength(i))
          continue
        }
        idx.push(i)
        cids.push(c)
      }
      const locs = await blocks.locateMany(cids)
      for (let k = 0; k < cids.length; k++) {
        const loc = locs[k]
        if (!loc) throw new CkptError('CKPT_NOT_FOUND', `chunk ${idx[k]} (${cidToString(cids[k]!)}) is missing from the store`, { cid: cidToString(cids[k]!), index: idx[k] })
        job.chunks.push(idx[k]!)
        job.cids.push(cids[k]!)
        job.locs.push(loc)
        job.payloads.push(blocks.readAt(cids[k]!, loc))
        job.raw += loc.rawLength
        if (job.raw >= 2 << 20) await flush()
      }
    }
    await flush()
    await Promise.all(inflight)
    if (failure) throw failure
  } finally {
    if (fd !== undefined) fs.closeSync(fd)
  }
  return { bytes: written, chunks: count }
}
