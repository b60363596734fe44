/**
 * A restore's read jobs: which chunks go to the worker pool together, and the task each job becomes.
 * A region's chunks are grouped by CID first (workload S repeats a quarter of its RAM pages and a
 * third of its disk clusters): each distinct chunk is looked up in the index, read, decompressed and
 * re-hashed once, and its proven bytes are copied to the other places it occurs.
 */
import { cidBytes, cidToString, type CidBytes } from '../codecs/cid.js'
import { CkptError } from '../codecs/errors.js'
import { AT_REST } from '../codecs/compress.js'
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
const LOOKUP_FIRST = 256
/** copies of a repeated chunk that weigh in a job as much as decompressing and hashing it once */
const COPY_SHARE = 8

/**
 * For each of the n CIDs packed 36 bytes apart, the index of the first one equal to it (itself when it
 * is the first). An open-addressing table keyed by 4 bytes of the digest (uniformly random), checked
 * against the whole CID.
 */
export function firstOccurrences(packed: Uint8Array, n: number): Int32Array {
  const first = new Int32Array(n)
  let size = 16
  while (size < n * 2) size *= 2
  const mask = size - 1
  const table = new Int32Array(size).fill(-1)
  for (let k = 0; k < n; k++) {
    const c = k * 36
    let s = (packed[c + 4]! | (packed[c + 5]! << 8) | (packed[c + 6]! << 16) | (packed[c + 7]! << 24)) & mask
    for (;;) {
      const e = table[s]!
      if (e < 0) {
        table[s] = first[k] = k
        break
      }
      let j = 35
      for (const d = e * 36; j >= 0 && packed[d + j] === packed[c + j]; ) j--
      if (j < 0) {
        first[k] = e
        break
      }
      s = (s + 1) & mask
    }
  }
  return first
}

const sameLoc = (a: BlockLocation, b: BlockLocation) => a === b || (a.pack === b.pack && a.offset === b.offset && a.storedLength === b.storedLength)

/** ReadTask.same for a job whose CIDs are packed in `cids`: undefined when no chunk repeats an earlier one. */
function sameEntries(job: Job, cids: Uint8Array): Int32Array | undefined {
  const n = job.cids.length
  if (n < 2) return undefined
  const first = firstOccurrences(cids, n)
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
  const same = sameEntries(job, t.cids)
  if (same) t.same = same
  if (job.zeros?.length) {
    if (!(out instanceof Uint8Array) || !(out.buffer instanceof SharedArrayBuffer)) throw new TypeError('zero runs need a destination in shared memory')
    t.zeros = Float64Array.from(job.zeros)
  }
  if (typeof out === 'string') t.outFile = out
  else if (out && out.buffer instanceof SharedArrayBuffer) t.out = out
  return t
}

export function readFailure(r: { code?: string; message?: string }, cid: CidBytes, loc: BlockLocation, blocks?: BlockStore): CkptError {
  if (blocks && loc.codec === AT_REST.chunkDelta) {
    // resolved here unproven (read-plan.ts): resolved again with every version proven, the error names the damaged one
    try {
      blocks.getAt(cid, loc)
    } catch (err) {
      if (err instanceof CkptError) return err
      throw err
    }
  }
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
  if (r.bad >= 0) throw readFailure(r, job.cids[r.bad]!, job.locs[r.bad]!, blocks)
  return r.data
}

/** A leaf as restore walks it: null is a hole subtree. */
export interface Leaf {
  j: number
  e: NodeEntries | null
}

/** A region's stored chunks: their indexes, and their CIDs packed 36 bytes apart. */
interface Chunks {
  n: number
  idx: Int32Array
  packed: Uint8Array
}

/**
 * The stored chunks of the leaves, in order; holes go to `zero` as they are passed. The CIDs are
 * packed, not one array each (39,000 of them cost ~20 ms to allocate and fill one by one).
 */
async function regionChunks(geo: Geometry, leaves: Leaf[], zero: (from: number, to: number) => Promise<void> | void): Promise<Chunks> {
  let max = 0
  for (const { e } of leaves) if (e) max += e.count
  const idx = new Int32Array(max)
  const packed = new Uint8Array(max * 36)
  let n = 0
  // holes go to `zero` in runs (a call, and an await, per hole chunk cost ~8 ms for workload S's RAM)
  let holeFrom = -1
  let holeTo = -1
  const hole = async (from: number, to: number) => {
    if (from === holeTo) holeTo = to
    else {
      if (holeFrom >= 0) await zero(holeFrom, holeTo)
      holeFrom = from
      holeTo = to
    }
  }
  for (const { j, e } of leaves) {
    const first = j * geo.fanout
    if (!e) {
      await hole(first * geo.chunkSize, Math.min(geo.size, (first + geo.nodeCount(1, j)) * geo.chunkSize))
      continue
    }
    const d = e.digests
    for (let s = 0; s < e.count; s++) {
      const i = first + s
      if (!e.codecs[s]) {
        const from = i * geo.chunkSize
        if (from === holeTo) holeTo = from + geo.chunkLength(i)
        else await hole(from, from + geo.chunkLength(i))
        continue
      }
      idx[n] = i
      const c = n * 36
      packed[c] = 0x01
      packed[c + 1] = e.codecs[s]!
      packed[c + 2] = CID_PREFIX[2]!
      packed[c + 3] = CID_PREFIX[3]!
      for (let b = 0, from = s * 32; b < 32; b++) packed[c + 4 + b] = d[from + b]!
      n++
    }
  }
  if (holeFrom >= 0) await zero(holeFrom, holeTo)
  return { n, idx, packed }
}

/** the multihash bytes every CID here carries (BLAKE3, 32 bytes): taken from cidBytes itself */
const CID_PREFIX = cidBytes(0x55, new Uint8Array(32))

const cidAt = (c: Chunks, k: number): CidBytes => c.packed.subarray(k * 36, k * 36 + 36)

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
  let chunks: Chunks | undefined
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
  // the first batch small: the workers start sooner
  const batchSize = () => (batchAt === 0 ? LOOKUP_FIRST : LOOKUP_BATCH)
  const startLookup = () => {
    const part = distinct.slice(batchAt, batchAt + batchSize())
    return part.length ? blocks.locateMany(part.map((k) => cidAt(chunks!, k))) : undefined
  }
  const prepare = async () => {
    chunks = await regionChunks(geo, leaves, zeroInJobs ? (from, to) => holes.add(from, to) : zero)
    const first = firstOccurrences(chunks.packed, chunks.n)
    nextSame = new Int32Array(chunks.n).fill(-1)
    const tail = new Int32Array(chunks.n)
    for (let k = 0; k < chunks.n; k++) {
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
    const c = chunks!
    for (let b = 0; b < part.length; b++) if (!locs[b]) throw missing(c.idx[part[b]!]!, cidAt(c, part[b]!))
    const order = Array.from(part.keys()).sort((a, b) => locs[a]!.pack - locs[b]!.pack || locs[a]!.offset - locs[b]!.offset)
    for (const b of order) {
      const loc = locs[b]!
      // the chunks with one CID share its bytes (a view of the packed CIDs)
      const cid = cidAt(c, part[b]!)
      // a job counts the bytes it decompresses and a share for its copies; a chunk repeated very
      // often (a region filled with one pattern) is spread over several jobs, each decoding it once
      let copies = 0
      job.raw += loc.rawLength
      for (let k = part[b]!; k >= 0; k = nextSame[k]!) {
        job.chunks.push(c.idx[k]!)
        job.cids.push(cid)
        job.locs.push(loc)
        if (++copies % COPY_SHARE === 0) {
          job.raw += loc.rawLength
          if (job.raw >= JOB_BYTES && nextSame[k]! >= 0) {
            queue()
            job.raw += loc.rawLength
          }
        }
      }
      if (job.raw >= JOB_BYTES) queue()
    }
  }
  return async () => {
    if (!chunks) await prepare()
    while (pending.length === 0 && lookup) {
      const part = distinct.slice(batchAt, batchAt + batchSize())
      const locs = await lookup
      const firstBatch = batchAt === 0
      batchAt += part.length
      lookup = startLookup()
      take(locs, part)
      // the first batch goes out at once, whatever its size
      if (firstBatch && job.chunks.length > 0) queue()
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
      const c = await regionChunks(geo, [leaves[leafAt++]!], zero)
      const idx = c.idx
      const cids = Array.from({ length: c.n }, (_, k) => cidAt(c, k))
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
