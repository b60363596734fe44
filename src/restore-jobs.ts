/**
 * A restore's read jobs: which chunks go to the worker pool together, and the task each job becomes.
 * A region's chunks are grouped by CID first (workload S repeats a quarter of its RAM pages and a
 * third of its disk clusters): each distinct chunk is looked up in the index, read, decompressed and
 * re-hashed once, and its proven bytes are copied to the other places it occurs.
 */
import { cidBytes, cidToString, type CidBytes } from '../codecs/cid.js'
import { CkptError } from '../codecs/errors.js'
import type { NodeEntries } from '../codecs/tree-node.js'
import { hashMismatch, planReads, type BlockLocation, type BlockStore } from '../store/index.js'
import type { ReadTask } from './pipeline/tasks.js'
import type { WorkerPool } from './pipeline/worker-pool.js'
import type { Geometry } from './region-tree.js'

export interface Job {
  /** position among the region's jobs (a stream writes them in this order) */
  seq: number
  chunks: number[]
  cids: CidBytes[]
  locs: BlockLocation[]
  raw: number
  /** hole runs [from, to, from, to, ...] a worker zero-fills in the shared buffer it writes to */
  zeros?: number[]
}

/** a job holds about this many bytes of chunks to decompress and hash */
const JOB_BYTES = 2 << 20
/** distinct chunks whose locations one index call fetches (the next batch's call is made in advance) */
const LOOKUP_BATCH = 2048

const sameCid = (a: CidBytes, b: CidBytes) => {
  if (a === b) return true
  for (let i = 35; i >= 0; i--) if (a[i] !== b[i]) return false
  return true
}

/**
 * For each CID, the index of the first one equal to it (itself when it is the first). An open-addressing
 * table keyed by 4 bytes of the digest (uniformly random), checked against the whole CID.
 */
export function firstOccurrences(cids: readonly CidBytes[]): Int32Array {
  const n = cids.length
  const first = new Int32Array(n)
  let size = 16
  while (size < n * 2) size *= 2
  const mask = size - 1
  const table = new Int32Array(size).fill(-1)
  for (let k = 0; k < n; k++) {
    const c = cids[k]!
    let s = (c[4]! | (c[5]! << 8) | (c[6]! << 16) | (c[7]! << 24)) & mask
    for (;;) {
      const e = table[s]!
      if (e < 0) {
        table[s] = first[k] = k
        break
      }
      if (sameCid(cids[e]!, c)) {
        first[k] = e
        break
      }
      s = (s + 1) & mask
    }
  }
  return first
}

const sameLoc = (a: BlockLocation, b: BlockLocation) => a === b || (a.pack === b.pack && a.offset === b.offset && a.storedLength === b.storedLength)

/** ReadTask.same for a job: undefined when no chunk repeats an earlier one of the job. */
function sameEntries(job: Job): Int32Array | undefined {
  const n = job.cids.length
  if (n < 2) return undefined
  const first = firstOccurrences(job.cids)
  let any = false
  for (let k = 0; k < n; k++) {
    const f = first[k]!
    if (f === k) first[k] = -1
    // the same CID at another location (two copies in the packs) is read from its own
    else if (!sameLoc(job.locs[f]!, job.locs[k]!)) first[k] = -1
    else any = true
  }
  return any ? first : undefined
}

/**
 * The worker task for a job: the block store plans where its entries are read (pack files the workers
 * pread themselves, or payloads read here: store/read-plan.ts); the worker decompresses straight into
 * the destination and re-hashes, once per distinct chunk.
 */
export function readTask(blocks: BlockStore, geo: Geometry | undefined, job: Job, out: Uint8Array | string | undefined): ReadTask {
  const n = job.cids.length
  const t: ReadTask = {
    op: 'read',
    ...planReads(blocks, job.cids, job.locs),
    storedLengths: new Uint32Array(n),
    codes: new Uint8Array(n),
    rawLengths: new Uint32Array(n),
    cids: new Uint8Array(n * 36),
    outOffsets: new Float64Array(n),
  }
  for (let k = 0; k < n; k++) {
    const loc = job.locs[k]!
    t.storedLengths[k] = loc.storedLength
    t.codes[k] = loc.codec
    t.rawLengths[k] = loc.rawLength
    t.cids.set(job.cids[k]!, k * 36)
    t.outOffsets[k] = geo ? job.chunks[k]! * geo.chunkSize : 0
  }
  const same = sameEntries(job)
  if (same) t.same = same
  if (job.zeros?.length) {
    if (!(out instanceof Uint8Array) || !(out.buffer instanceof SharedArrayBuffer)) throw new TypeError('zero runs need a destination in shared memory')
    t.zeros = Float64Array.from(job.zeros)
  }
  if (typeof out === 'string') t.outFile = out
  else if (out && out.buffer instanceof SharedArrayBuffer) t.out = out
  return t
}

export function readFailure(r: { code?: string; message?: string }, cid: CidBytes, loc: BlockLocation): CkptError {
  if (r.code === 'CKPT_HASH_MISMATCH') return hashMismatch(cid, loc)
  return new CkptError((r.code as 'CKPT_BAD_PACK' | undefined) ?? 'CKPT_BAD_PACK', `block ${cidToString(cid)}: ${r.message}`, {
    cid: cidToString(cid),
    pack: loc.pack,
    offset: loc.offset,
  })
}

/** A job's chunks read and verified on the pool (a regular file or a shared buffer written by the workers themselves). */
export async function readJob(blocks: BlockStore, pool: WorkerPool, geo: Geometry, job: Job, direct: Uint8Array | string | undefined): Promise<Uint8Array | undefined> {
  for (let k = 0; k < job.chunks.length; k++) {
    const len = job.locs[k]!.rawLength
    if (len !== geo.chunkLength(job.chunks[k]!)) {
      throw new CkptError('CKPT_BAD_NODE', `chunk ${job.chunks[k]} has ${len} bytes, expected ${geo.chunkLength(job.chunks[k]!)}`, { index: job.chunks[k] })
    }
  }
  const t = readTask(blocks, geo, job, direct)
  const r = await pool.run(t)
  if (r.bad >= 0) throw readFailure(r, job.cids[r.bad]!, job.locs[r.bad]!)
  return r.data
}

/** A leaf as restore walks it: null is a hole subtree. */
export interface Leaf {
  j: number
  e: NodeEntries | null
}

/** The stored chunks of the leaves, in order, with their CIDs; holes go to `zero` as they are passed. */
async function regionChunks(geo: Geometry, leaves: Leaf[], zero: (from: number, to: number) => Promise<void>): Promise<{ idx: number[]; cids: CidBytes[] }> {
  const idx: number[] = []
  const cids: CidBytes[] = []
  for (const { j, e } of leaves) {
    const first = j * geo.fanout
    if (!e) {
      await zero(first * geo.chunkSize, Math.min(geo.size, (first + geo.nodeCount(1, j)) * geo.chunkSize))
      continue
    }
    for (let s = 0; s < e.count; s++) {
      const i = first + s
      if (!e.codecs[s]) {
        await zero(i * geo.chunkSize, i * geo.chunkSize + geo.chunkLength(i))
        continue
      }
      idx.push(i)
      cids.push(cidBytes(e.codecs[s]!, e.digests.subarray(s * 32, s * 32 + 32)))
    }
  }
  return { idx, cids }
}

function missing(i: number, cid: CidBytes): CkptError {
  return new CkptError('CKPT_NOT_FOUND', `chunk ${i} (${cidToString(cid)}) is missing from the store`, { cid: cidToString(cid), index: i })
}

/** zero runs handed to one job (a worker fills them in shared memory): about a job's worth of copying */
const ZERO_BYTES = 8 << 20

/** Coalesced hole runs [from, to), handed out ZERO_BYTES at a time. */
class HoleRuns {
  private readonly runs: number[] = []
  private at = 0

  add(from: number, to: number): void {
    if (this.runs.length && this.runs[this.runs.length - 1] === from) this.runs[this.runs.length - 1] = to
    else this.runs.push(from, to)
  }

  get empty(): boolean {
    return this.at >= this.runs.length
  }

  /** the next ZERO_BYTES of runs (a longer run is split) */
  take(): number[] {
    const out: number[] = []
    let budget = ZERO_BYTES
    while (budget > 0 && this.at < this.runs.length) {
      const from = this.runs[this.at]!
      const to = Math.min(this.runs[this.at + 1]!, from + budget)
      out.push(from, to)
      budget -= to - from
      if (to === this.runs[this.at + 1]) this.at += 2
      else this.runs[this.at] = to
    }
    return out
  }
}

/**
 * The region's read jobs for a destination written at offsets (a buffer, a file, a device): each
 * distinct chunk once, followed in its job by the other chunks with its CID. Jobs of ~JOB_BYTES of
 * distinct chunks; the index is asked a batch of distinct chunks (in order of first occurrence) at a
 * time, the next batch's lookup running while the current one's jobs are dispatched, and a batch goes
 * out in pack order (neighbouring entries are read together). With `zeroInJobs` (a buffer in shared
 * memory) the holes go out with the jobs, for the workers to fill, instead of to `zero`.
 */
export function groupedJobs(
  blocks: BlockStore,
  geo: Geometry,
  leaves: Leaf[],
  zero: (from: number, to: number) => Promise<void>,
  zeroInJobs = false,
): () => Promise<Job | undefined> {
  let chunks: { idx: number[]; cids: CidBytes[] } | undefined
  /** distinct chunks by first occurrence, and per chunk the next one with its CID (-1: none) */
  const distinct: number[] = []
  let nextSame: Int32Array = new Int32Array(0)
  const holes = new HoleRuns()
  let batchAt = 0
  let lookup: Promise<(BlockLocation | undefined)[]> | undefined
  let seq = 0
  const pending: Job[] = []
  const newJob = (): Job => ({ seq: 0, chunks: [], cids: [], locs: [], raw: 0 })
  let job = newJob()
  const queue = () => {
    job.seq = seq++
    if (zeroInJobs && !holes.empty) job.zeros = holes.take()
    pending.push(job)
    job = newJob()
  }
  const startLookup = () => {
    const part = distinct.slice(batchAt, batchAt + LOOKUP_BATCH)
    return part.length ? blocks.locateMany(part.map((k) => chunks!.cids[k]!)) : undefined
  }
  const prepare = async () => {
    chunks = await regionChunks(geo, leaves, zeroInJobs ? async (from, to) => holes.add(from, to) : zero)
    const first = firstOccurrences(chunks.cids)
    nextSame = new Int32Array(first.length).fill(-1)
    const tail = new Int32Array(first.length)
    for (let k = 0; k < first.length; k++) {
      const f = first[k]!
      if (f === k) {
        distinct.push(k)
        tail[k] = k
      } else {
        nextSame[tail[f]!] = k
        tail[f] = k
      }
    }
    lookup = startLookup()
  }
  const take = (locs: (BlockLocation | undefined)[], part: number[]) => {
    const { idx, cids } = chunks!
    for (let b = 0; b < part.length; b++) if (!locs[b]) throw missing(idx[part[b]!]!, cids[part[b]!]!)
    const order = Array.from(part.keys()).sort((a, b) => locs[a]!.pack - locs[b]!.pack || locs[a]!.offset - locs[b]!.offset)
    for (const b of order) {
      const loc = locs[b]!
      for (let k = part[b]!; k >= 0; k = nextSame[k]!) {
        job.chunks.push(idx[k]!)
        job.cids.push(cids[k]!)
        job.locs.push(loc)
      }
      job.raw += loc.rawLength
      if (job.raw >= JOB_BYTES) queue()
    }
  }
  return async () => {
    if (!chunks) await prepare()
    while (pending.length === 0 && lookup) {
      const part = distinct.slice(batchAt, batchAt + LOOKUP_BATCH)
      const locs = await lookup
      batchAt += part.length
      lookup = startLookup()
      take(locs, part)
    }
    // the last chunks; then jobs of holes alone, if more are left than the jobs took
    if (pending.length === 0 && (job.chunks.length > 0 || (zeroInJobs && !holes.empty))) queue()
    return pending.shift()
  }
}

/**
 * The region's read jobs for a stream, in order (each job's chunks follow each other): ~JOB_BYTES of
 * chunks each, a leaf's chunk locations from one index call. Holes go to `zero` as they are passed.
 */
export function orderedJobs(blocks: BlockStore, geo: Geometry, leaves: Leaf[], zero: (from: number, to: number) => Promise<void>): () => Promise<Job | undefined> {
  let leafAt = 0
  let seq = 0
  const pending: Job[] = []
  const newJob = (): Job => ({ seq: 0, chunks: [], cids: [], locs: [], raw: 0 })
  const queue = (j: Job) => {
    j.seq = seq++
    pending.push(j)
  }
  let job = newJob()
  return async () => {
    while (pending.length === 0 && leafAt < leaves.length) {
      const { idx, cids } = await regionChunks(geo, [leaves[leafAt++]!], zero)
      const locs = cids.length ? await blocks.locateMany(cids) : []
      for (let k = 0; k < cids.length; k++) {
        const loc = locs[k]
        if (!loc) throw missing(idx[k]!, cids[k]!)
        job.chunks.push(idx[k]!)
        job.cids.push(cids[k]!)
        job.locs.push(loc)
        job.raw += loc.rawLength
        if (job.raw >= JOB_BYTES) {
          queue(job)
          job = newJob()
        }
      }
    }
    if (pending.length === 0 && job.chunks.length > 0) {
      queue(job)
      job = newJob()
    }
    return pending.shift()
  }
}
