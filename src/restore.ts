/**
 * Reading regions back. restore() walks the leaves, looks up a leaf's chunk locations in one index call,
 * reads the stored payloads, and hands batches to the worker pool, which decompresses and re-hashes each
 * chunk against its CID; a mismatch fails with CKPT_HASH_MISMATCH naming the chunk.
 */
import fs from 'node:fs'
import path from 'node:path'
import { promisify } from 'node:util'
import { cidBytes, cidCodec, cidToString, RAW, type CidBytes } from '../codecs/cid.js'
import { CkptError, fsError } from '../codecs/errors.js'
import type { NodeEntries } from '../codecs/tree-node.js'
import { prefetchChains } from './remote-mark.js'
import type { BlockLocation, BlockStore } from '../store/index.js'
import { runBatches } from './pipeline/batches.js'
import { acquireSlab, releaseSlab } from './pipeline/slabs.js'
import type { ReadResult } from './pipeline/tasks.js'
import { groupedJobs, orderedJobs, readFailure, readJob, readTask, type Job, type Leaf } from './restore-jobs.js'
import type { WorkerPool } from './pipeline/worker-pool.js'
import {
  checkDeviceSize,
  checkFreeSpace,
  commitPartial,
  dropPartial,
  inPlaceFlags,
  openInPlace,
  partialName,
  resolveOutput,
  systemError,
  trackPartial,
  writeAll,
  writeError,
  type OutputKind,
  type OutputTarget,
} from './output-file.js'
import { Geometry, offerLeaves } from './region-tree.js'
import { leafTableFor } from './scan-cache.js'
import type { StoreContext } from './context.js'

export { readJob, type Job } from './restore-jobs.js'

/** Decoded, verified tree node by CID (cached by the block store). */
export function nodeEntries(blocks: BlockStore, cid: CidBytes): NodeEntries {
  return blocks.getNode(cid)
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

/**
 * A tree a lazy pull left on a remote: its nodes' ranges are fetched a level at a time (each level
 * one coalesced prefetch, several GETs in flight) before walkLeaves reads them one by one.
 */
export async function prefetchTree(blocks: BlockStore, geo: Geometry, root: CidBytes | null): Promise<void> {
  if (!blocks.remote || !root) return
  let wave: CidBytes[] = [root]
  for (let level = geo.height; wave.length; level--) {
    await blocks.locateMany(wave)
    await prefetchChains(blocks, wave)
    if (level === 1) return
    const next: CidBytes[] = []
    for (const cid of wave) {
      const e = nodeEntries(blocks, cid)
      for (let s = 0; s < e.count; s++) {
        const c = childCid(e, s)
        if (c) next.push(c)
      }
    }
    wave = next
  }
}

/**
 * Leaf nodes by leaf index, per region root, with the locations of the chunks read so far: a chunk
 * read again costs a pack read, a decompression and a hash, no index lookup.
 */
interface CachedLeaf {
  entries: NodeEntries | null
  /** chunk locations by slot, each looked up at the slot's first read */
  locs: (BlockLocation | undefined)[]
}

const leafCache = new WeakMap<Uint8Array, Map<number, CachedLeaf>>()

function leafOf(blocks: BlockStore, geo: Geometry, root: CidBytes, j: number): CachedLeaf {
  let m = leafCache.get(root)
  if (!m) leafCache.set(root, (m = new Map()))
  let leaf = m.get(j)
  if (leaf === undefined) {
    let cid: CidBytes | null = root
    for (let level = geo.height; level > 1 && cid; level--) {
      const span = geo.fanout ** (level - 2)
      cid = childCid(nodeEntries(blocks, cid), Math.floor(j / span) % geo.fanout)
    }
    leaf = { entries: cid ? nodeEntries(blocks, cid) : null, locs: [] }
    if (m.size >= 1024) m.clear()
    m.set(j, leaf)
  }
  return leaf
}

export async function readChunk(blocks: BlockStore, geo: Geometry, root: CidBytes | null, i: number): Promise<Uint8Array> {
  const leaf = root ? leafOf(blocks, geo, root, Math.floor(i / geo.fanout)) : null
  const slot = i % geo.fanout
  const cid = leaf?.entries ? childCid(leaf.entries, slot) : null
  if (!cid) return new Uint8Array(geo.chunkLength(i))
  if (cidCodec(cid) !== RAW) throw new CkptError('CKPT_BAD_NODE', `leaf slot of chunk ${i} links a non-raw block`, { index: i })
  // one synchronous index lookup (~3-7 us) at a slot's first read: fetching a window of neighbours
  // in one getMany cost more on this thread (~3 us a key to convert) than it saved, ~80 us per window
  let loc = leaf!.locs[slot]
  if (!loc) leaf!.locs[slot] = loc = blocks.locate(cid)
  const bytes = blocks.getAt(cid, loc)
  if (bytes.length !== geo.chunkLength(i)) {
    throw new CkptError('CKPT_BAD_NODE', `chunk ${i} has ${bytes.length} bytes, expected ${geo.chunkLength(i)}`, { cid: cidToString(cid), index: i })
  }
  return bytes
}

const ZEROS = new Uint8Array(1 << 20)

/** fill(0) takes a slow byte-wise path on shared memory (~11 µs a page here); a copy is a memcpy. */
function zeroFill(out: Uint8Array, from: number, to: number): void {
  if (!(out.buffer instanceof SharedArrayBuffer)) {
    out.fill(0, from, to)
    return
  }
  for (let at = from; at < to; at += ZEROS.length) out.set(ZEROS.subarray(0, Math.min(ZEROS.length, to - at)), at)
}

/**
 * Blocks at known locations, read, decompressed and verified on the worker pool; their bytes
 * concatenated in order (the caller knows each one's raw length from its location).
 */
export async function readBlocks(blocks: BlockStore, pool: WorkerPool, cids: CidBytes[], locs: BlockLocation[]): Promise<Uint8Array> {
  const job: Job = { seq: 0, chunks: [], cids, locs, raw: 0 }
  const r = await pool.run(readTask(blocks, undefined, job, undefined))
  if (r.bad >= 0) throw readFailure(r, cids[r.bad]!, locs[r.bad]!, blocks)
  return r.data!
}

/**
 * Blocks at known locations, read, decompressed and verified on the worker pool, each placed at its
 * offset in `out` (plain memory: moved to the worker and back, never copied). Resolves to `out`'s
 * bytes, in the view the worker handed back: the caller's view is detached once a worker has it.
 */
export async function readBlocksInto(
  blocks: BlockStore,
  pool: WorkerPool,
  cids: CidBytes[],
  locs: BlockLocation[],
  out: Uint8Array,
  outOffsets: Float64Array,
  nodes?: { cids: CidBytes[]; entries: NodeEntries[]; offsets: Float64Array },
): Promise<Uint8Array> {
  const job: Job = { seq: 0, chunks: [], cids, locs, raw: 0 }
  const t = readTask(blocks, undefined, job, undefined)
  t.outOffsets = outOffsets
  t.out = out
  let columns: Uint8Array | undefined
  if (nodes && nodes.cids.length) {
    // tree nodes too: encoded into `out` by the worker and hashed there against their CIDs. Their
    // columns share one slab of reused shared memory (fresh buffers, ~1 MiB a piece, made V8 collect
    // for their external memory): digests, CIDs, counts (4-aligned: both before are), codecs
    const n = nodes.cids.length
    let slots = 0
    for (const e of nodes.entries) slots += e.count
    columns = acquireSlab(33 * slots + 40 * n)
    let at = 0
    t.nodeDigests = columns.subarray(at, (at += slots * 32))
    t.nodeCids = columns.subarray(at, (at += n * 36))
    t.nodeCounts = new Uint32Array(columns.buffer, columns.byteOffset + at, n)
    at += n * 4
    t.nodeCodecs = columns.subarray(at, at + slots)
    t.nodeOffsets = nodes.offsets
    slots = 0
    for (let k = 0; k < n; k++) {
      const e = nodes.entries[k]!
      t.nodeCounts[k] = e.count
      t.nodeCodecs.set(e.codecs, slots)
      t.nodeDigests.set(e.digests, slots * 32)
      t.nodeCids.set(nodes.cids[k]!, k * 36)
      slots += e.count
    }
  }
  // moved, not copied: `out` comes back as the result
  const transfer = out.buffer instanceof ArrayBuffer ? [out.buffer] : []
  let r: ReadResult
  try {
    r = await pool.run(t, transfer)
  } finally {
    if (columns) releaseSlab(columns)
  }
  if (r.bad >= cids.length && nodes) {
    const cid = nodes.cids[r.bad - cids.length]!
    throw new CkptError('CKPT_HASH_MISMATCH', `tree node ${cidToString(cid)} does not match its hash`, { cid: cidToString(cid) })
  }
  if (r.bad >= 0) throw readFailure(r, cids[r.bad]!, locs[r.bad]!, blocks)
  // plain memory comes back as the result; shared memory was written in place
  return r.data ?? out
}

/** A destination written front to back (stdout): restoreRegion calls write in order, awaiting each call. */
export interface RegionSink {
  write(bytes: Uint8Array): Promise<void>
}

/**
 * The bytes a restore into a file really writes: the region's non-hole chunks. A subtree is counted
 * once per CID, so a huge region of one repeated chunk costs a few node reads, not a walk of every leaf.
 */
export function regionBytesToWrite(blocks: BlockStore, geo: Geometry, root: CidBytes | null): number {
  if (!root || geo.chunks === 0) return 0
  const memo = new Map<string, number>()
  const count = (level: number, cid: CidBytes): number => {
    const key = `${level}:${Buffer.from(cid.buffer, cid.byteOffset, cid.length).toString('latin1')}`
    let n = memo.get(key)
    if (n !== undefined) return n
    const e = nodeEntries(blocks, cid)
    n = 0
    for (let s = 0; s < e.count; s++) if (e.codecs[s]) n += level === 1 ? 1 : count(level - 1, childCid(e, s)!)
    memo.set(key, n)
    return n
  }
  let bytes = count(geo.height, root) * geo.chunkSize
  // every chunk but the last has chunkSize bytes
  const last = geo.chunks - 1
  let cid: CidBytes | null = root
  for (let level = geo.height; level >= 1 && cid; level--) cid = childCid(nodeEntries(blocks, cid), Math.floor(last / geo.fanout ** (level - 1)) % geo.fanout)
  if (cid) bytes -= geo.chunkSize - geo.lastChunkSize
  return bytes
}

/** fs.writeSync until all of [off, off + len) of bytes is at pos (a block device may take less at a time). */
function writeFullySync(fd: number, bytes: Uint8Array, off: number, len: number, pos: number): void {
  while (len > 0) {
    const n = fs.writeSync(fd, bytes, off, len, pos)
    if (n <= 0) throw Object.assign(new Error('no space left on device, write'), { code: 'ENOSPC' })
    off += n
    pos += n
    len -= n
  }
}

const writeAsync = promisify(fs.write)

/** [0, len) of bytes at pos of fd, without blocking the event loop. */
async function writeFully(fd: number, bytes: Uint8Array, len: number, pos: number): Promise<void> {
  for (let off = 0; off < len; ) {
    const n = (await writeAsync(fd, bytes, off, len - off, pos + off)).bytesWritten
    if (n <= 0) throw Object.assign(new Error('no space left on device, write'), { code: 'ENOSPC' })
    off += n
  }
}

/** What a restore did: the region's size against the bytes it wrote. */
export interface RestoreResult {
  /** the region's size in bytes: what the destination holds afterwards, holes included */
  size: number
  /** bytes of the stored (non-hole) chunks written, each re-hashed against its CID on the way */
  bytesWritten: number
  /** stored (non-hole) chunks written */
  chunksWritten: number
  /**
   * all-zero chunks (holes, not stored): zero-filled in a buffer, on a block device and in a stream;
   * left unwritten in a regular file, which is written sparse
   */
  holes: number
}

/** The destination of a restore: opened after the checks, committed (renamed, synced, closed) or dropped. */
class RegionOutput {
  readonly mode: 'buffer' | OutputKind
  readonly dest: OutputTarget | undefined
  sink: RegionSink | undefined
  readonly buffer: Uint8Array | undefined
  /** file: the temporary file; block: the device */
  fd: number | undefined
  /** a FIFO or character device */
  private fh: fs.promises.FileHandle | undefined
  private temp: string | undefined

  constructor(out: Uint8Array | string | RegionSink) {
    if (out instanceof Uint8Array) {
      this.mode = 'buffer'
      this.buffer = out
    } else if (typeof out === 'string') {
      this.dest = resolveOutput(out)
      this.mode = this.dest.kind
    } else {
      this.mode = 'stream'
      this.sink = out
    }
  }

  get target(): string | undefined {
    return this.dest?.target
  }

  /** where the workers write themselves: the temporary file, or a buffer in shared memory */
  get direct(): Uint8Array | string | undefined {
    return this.mode === 'file' ? this.temp : this.buffer
  }

  /** Checks first: nothing is created or written when they fail. */
  check(blocks: BlockStore, geo: Geometry, root: CidBytes | null): void {
    if (this.mode === 'file') checkFreeSpace(path.dirname(this.target!), regionBytesToWrite(blocks, geo, root), this.target!)
    if (this.mode === 'block') checkDeviceSize(this.dest!, geo.size)
  }

  async open(size: number): Promise<void> {
    try {
      if (this.mode === 'file') {
        this.temp = partialName(this.target!)
        trackPartial(this.temp)
        this.fd = fs.openSync(this.temp, 'w')
        // the file that replaces an existing one keeps its permissions
        if (this.dest!.mode !== undefined) fs.fchmodSync(this.fd, this.dest!.mode)
        fs.ftruncateSync(this.fd, size)
      } else if (this.mode === 'block') {
        this.fd = fs.openSync(this.target!, inPlaceFlags(this.dest!))
      } else if (this.mode === 'stream' && !this.sink) {
        const handle = (this.fh = await openInPlace(this.dest!))
        this.sink = { write: (b) => writeAll(handle, b, null) }
      }
    } catch (err) {
      throw writeError(err, this.target!)
    }
  }

  /** Everything is written: a device synced, files closed, the temporary file renamed over the target. */
  async commit(): Promise<void> {
    if (this.fd !== undefined) {
      if (this.mode === 'block') fs.fdatasyncSync(this.fd)
      const f = this.fd
      this.fd = undefined
      fs.closeSync(f)
    }
    if (this.fh) {
      const h = this.fh
      this.fh = undefined
      await h.close()
    }
    if (this.temp) {
      commitPartial(this.temp, this.target!)
      this.temp = undefined
    }
  }

  /** A failure: closes what is open and removes the temporary file. */
  async drop(): Promise<void> {
    if (this.fd !== undefined) {
      try {
        fs.closeSync(this.fd)
      } catch {}
    }
    await this.fh?.close().catch(() => {})
    if (this.temp) dropPartial(this.temp)
  }
}

/**
 * Puts read jobs' bytes in place: into the buffer or file at their offsets, or (a stream) front to
 * back in job order, however the jobs finish; and the holes, in runs, where the destination needs them.
 */
class RegionWriter {
  /** stream: bytes sent so far */
  private cursor = 0
  private writeSeq = 0
  private broken: { err: unknown } | undefined
  private draining = false
  private readonly waiting = new Map<number, { run: () => Promise<void>; resolve: () => void; reject: (e: unknown) => void }>()
  private zeroFrom = -1
  private zeroTo = -1

  constructor(
    private readonly geo: Geometry,
    private readonly o: RegionOutput,
  ) {}

  /** A job's read: its bytes placed (buffer, file) or queued to go out in order (stream). */
  async finish(job: Job, read: () => Promise<Uint8Array | undefined>): Promise<void> {
    let data: Uint8Array | undefined
    try {
      data = await read()
    } catch (err) {
      if (this.o.mode === 'stream') await this.inOrder(job.seq, () => Promise.reject(err)).catch(() => {})
      throw err
    }
    if (this.o.mode === 'stream') await this.inOrder(job.seq, () => this.emitJob(job, data!))
    else if (data) this.place(job, data)
  }

  /**
   * Holes: a buffer is zero-filled and a block device overwritten with zeros, in runs (one fill per
   * run, not per chunk); a file stays sparse; a stream gets them between the chunks.
   */
  async zero(from: number, to: number): Promise<void> {
    if (this.o.mode !== 'buffer' && this.o.mode !== 'block') return
    if (from === this.zeroTo) this.zeroTo = to
    else {
      if (this.zeroFrom >= 0) await this.fillZeros(this.zeroFrom, this.zeroTo)
      this.zeroFrom = from
      this.zeroTo = to
    }
  }

  /** After the last job: the last run of holes, a stream's trailing zeros. */
  async end(): Promise<void> {
    await this.zero(-2, -2)
    if (this.o.mode === 'stream') await this.emitZeros(this.geo.size)
  }

  private async fillZeros(from: number, to: number): Promise<void> {
    if (this.o.mode === 'buffer') zeroFill(this.o.buffer!, from, to)
    // a device's holes asynchronously: a long run must not stop the event loop (signals, progress)
    else for (let at = from; at < to; at += ZEROS.length) await writeFully(this.o.fd!, ZEROS, Math.min(ZEROS.length, to - at), at)
  }

  private place(job: Job, bytes: Uint8Array): void {
    let o = 0
    for (let k = 0; k < job.chunks.length; k++) {
      const i = job.chunks[k]!
      const len = job.locs[k]!.rawLength
      if (this.o.fd !== undefined) writeFullySync(this.o.fd, bytes, o, len, i * this.geo.chunkSize)
      else this.o.buffer!.set(bytes.subarray(o, o + len), i * this.geo.chunkSize)
      o += len
    }
  }

  private async emitZeros(to: number): Promise<void> {
    while (this.cursor < to) {
      const n = Math.min(ZEROS.length, to - this.cursor)
      await this.o.sink!.write(ZEROS.subarray(0, n))
      this.cursor += n
    }
  }

  private async emitJob(job: Job, bytes: Uint8Array): Promise<void> {
    const cs = this.geo.chunkSize
    let o = 0
    for (let k = 0; k < job.chunks.length; ) {
      const start = job.chunks[k]! * cs
      await this.emitZeros(start)
      let len = 0
      for (; k < job.chunks.length && job.chunks[k]! * cs === start + len; k++) len += job.locs[k]!.rawLength
      await this.o.sink!.write(bytes.subarray(o, o + len))
      o += len
      this.cursor += len
    }
  }

  /** runs `run` after every job before `seq` has been written (or fails with the first failure) */
  private inOrder(seq: number, run: () => Promise<void>): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.waiting.set(seq, { run, resolve, reject })
      void this.drain()
    })
  }

  private async drain(): Promise<void> {
    if (this.draining) return
    this.draining = true
    try {
      for (let w = this.waiting.get(this.writeSeq); w; w = this.waiting.get(this.writeSeq)) {
        this.waiting.delete(this.writeSeq++)
        try {
          if (this.broken) throw this.broken.err
          await w.run()
          w.resolve()
        } catch (err) {
          this.broken ??= { err }
          w.reject(err)
        }
      }
    } finally {
      this.draining = false
    }
  }
}

/**
 * Materialises a region into `out`: a buffer of the region's size, a sink written front to back, or a
 * path written by the rules of src/output-file.ts (SPEC.md, "Output files"):
 *  - a regular file or nothing: written sparse (holes are not written) under TARGET.ckpt-partial-PID,
 *    renamed over TARGET when complete, after checking that the file system has room for the non-hole
 *    chunks (CKPT_NO_SPACE before anything is written); the temporary file is removed on any failure;
 *  - a symlink: its final target as above;
 *  - a block device: written in place, holes as zeros (the device holds old content); CKPT_NO_SPACE
 *    up front when it is known to be smaller than the region;
 *  - a FIFO or character device: written front to back, holes as zeros.
 * Every chunk is re-hashed against its CID on the way.
 */
export async function restoreRegion(
  blocks: BlockStore,
  pool: WorkerPool,
  geo: Geometry,
  root: CidBytes | null,
  out: Uint8Array | string | RegionSink,
): Promise<RestoreResult> {
  const o = new RegionOutput(out)
  let bytesWritten = 0
  let chunksWritten = 0
  try {
    o.check(blocks, geo, root)
    const leaves: Leaf[] = []
    await prefetchTree(blocks, geo, root)
    walkLeaves(blocks, geo, root, (j, e) => leaves.push({ j, e }))
    await o.open(geo.size)
    const writer = new RegionWriter(geo, o)
    const read = async (job: Job) => {
      const data = await readJob(blocks, pool, geo, job, o.direct)
      for (const l of job.locs) bytesWritten += l.rawLength
      chunksWritten += job.chunks.length
      return data
    }
    // a destination written at offsets takes each distinct chunk once, copied where it repeats
    const zero = (from: number, to: number) => writer.zero(from, to)
    const shared = o.mode === 'buffer' && o.buffer!.buffer instanceof SharedArrayBuffer
    const jobs = o.mode === 'stream' ? orderedJobs(blocks, geo, leaves, zero) : groupedJobs(blocks, geo, leaves, zero, shared)
    await runBatches(pool, jobs, (job) => writer.finish(job, () => read(job)))
    await writer.end()
    await o.commit()
  } catch (err) {
    await o.drop()
    const e = systemError(err)
    if (e instanceof CkptError) throw e
    const target = o.target
    throw fsError(e, target ? `cannot write ${target}` : 'restore failed', target ? { path: target } : {})
  }
  return { size: geo.size, bytesWritten, chunksWritten, holes: geo.chunks - chunksWritten }
}

/**
 * A region of a checkpoint (any reference the store resolves) into any destination restoreRegion
 * takes; the buffer must have the region's size.
 */
export async function restoreFrom(ctx: StoreContext, ref: unknown, region: string, out: Uint8Array | string | RegionSink): Promise<RestoreResult> {
  const m = await ctx.manifestOf(await ctx.resolve(ref))
  const r = m.regions[region]
  if (!r) throw new CkptError('CKPT_UNKNOWN_REGION', `checkpoint has no region ${region}`, { region })
  if (out instanceof Uint8Array && out.length !== r.size) {
    throw new CkptError('CKPT_WRONG_SIZE', `output buffer has ${out.length} bytes, region ${region} has ${r.size}`, { region })
  }
  if (!(out instanceof Uint8Array) && typeof out !== 'string' && typeof (out as RegionSink | null)?.write !== 'function') {
    throw new TypeError('out must be a Uint8Array, a file path or a sink with write(bytes)')
  }
  const geo = new Geometry(r.size, r.chunkSize, r.fanout)
  // the tree of a timeline's last full scan has a leaf file: its leaves need no delta chain rebuilt
  if (!ctx.repo.memory && !ctx.repo.blocks.remote) {
    const table = leafTableFor(ctx.repo.dir, geo, r.root)
    if (table) offerLeaves(ctx.repo.blocks, geo, r.root, table)
  }
  return restoreRegion(ctx.repo.blocks, ctx.pool, geo, r.root, out)
}

/** restoreFrom for a store (the CLI's stdout restore). */
export function restoreTo(store: { context(): StoreContext }, ref: string, region: string, out: Uint8Array | string | RegionSink): Promise<RestoreResult> {
  return restoreFrom(store.context(), ref, region, out)
}
