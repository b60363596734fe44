/**
 * Time travel (SPEC.md §23): restore by difference into a buffer or file that holds another
 * checkpoint's content, and the cursor a debugger keeps over all regions and blobs of a timeline.
 *
 * Going from checkpoint A to B writes the chunks whose CIDs differ between A's and B's trees (a walk
 * that stops at equal CIDs: O(changed subtrees)) plus the chunks the caller says it wrote since A
 * (`dirty`), each read from B and re-hashed against its CID. In checked mode the destination's chunks
 * are hashed instead and every chunk that is not B's is written: B exactly, whatever it held.
 */
import fs from 'node:fs'
import type { CID } from 'multiformats/cid'
import { cidCodec, cidEquals, cidToString, RAW, type CidBytes } from '../codecs/cid.js'
import { CkptError, fsError } from '../codecs/errors.js'
import type { Manifest } from '../codecs/manifest.js'
import type { NodeEntries } from '../codecs/tree-node.js'
import type { BlockLocation, BlockStore } from '../store/index.js'
import type { StoreContext } from './context.js'
import type { HashTask } from './pipeline/tasks.js'
import type { WorkerPool } from './pipeline/worker-pool.js'
import { sameCid as same, sameDigest, slotCid } from './node-compare.js'
import { Geometry } from './region-tree.js'
import { nodeEntries, prefetchTree, readJob, walkLeaves, type Job, type RestoreResult } from './restore.js'
import type { LogEntry } from './types.js'

/** Options of restore(): without `from` or `check`, a whole restore. */
export interface RestoreOptions {
  /** the checkpoint the destination holds (a buffer, or an existing regular file / block device of the region's size): only the chunks that differ are written */
  from?: string | CID
  /** chunks of the region written since `from` was restored (the same dirty hints checkpoint() takes) */
  dirty?: Iterable<number>
  /** hash every chunk of the destination and write each one that is not B's: B exactly whatever the destination held */
  check?: boolean
}

/** restore() by difference: what it wrote. */
export interface TravelResult extends RestoreResult {
  /** 'difference': only changed chunks written; 'checked': the destination was hashed */
  mode: 'difference' | 'checked'
  /** the written chunks, as runs of chunk indexes [start, end) */
  written: { start: number; end: number }[]
  /** checked mode: chunks that were not B's although neither A and B differ there nor the caller said it wrote them (with `from`; else every chunk that was not B's) */
  mismatched?: number
}

/** What a jump wrote, per region. */
export interface JumpRegion {
  /** chunks written: stored chunks (read and verified) and holes (zero-filled) */
  chunksWritten: number
  bytesWritten: number
  /** checked mode: chunks that held neither the checkpoint's content nor were in the diff or the dirty set */
  mismatched?: number
}

export interface JumpResult {
  from: LogEntry | undefined
  to: LogEntry
  regions: Record<string, JumpRegion>
  /** blobs whose content changed (read again) */
  blobsChanged: string[]
  ms: number
}

/** chunk indexes to write (increasing), with B's CID for each (null: a hole) */
interface Changes {
  idx: number[]
  cids: (CidBytes | null)[]
}

/**
 * The chunks where trees A and B differ, plus the `forced` ones (sorted, unique), with B's CIDs: a
 * walk that descends only where the CIDs differ or a forced chunk lies below. `afterLeaf`, when given,
 * is called after each leaf with what was found so far; a promise it returns is awaited (the caller
 * starts reading found chunks while the walk goes on).
 */
export async function changedChunks(
  blocks: BlockStore,
  geo: Geometry,
  rootA: CidBytes | null,
  rootB: CidBytes | null,
  forced: readonly number[],
  afterLeaf?: (found: Changes) => Promise<void> | undefined,
): Promise<Changes> {
  const out: Changes = { idx: [], cids: [] }
  let f = 0
  /** the leaf's slots to write: those whose digests differ (compared as words, no CIDs built) and the forced ones */
  const leaf = (first: number, ea: NodeEntries | null, eb: NodeEntries | null, n: number) => {
    for (let s = 0; s < n; s++) {
      const i = first + s
      let take = f < forced.length && forced[f] === i
      if (take) f++
      else if (ea !== eb) take = ea === null || eb === null ? slotCid(ea, s) !== null || slotCid(eb, s) !== null : ea.codecs[s] !== eb.codecs[s] || (eb.codecs[s] !== 0 && !sameDigest(ea.digests, eb.digests, s))
      if (take) {
        out.idx.push(i)
        out.cids.push(slotCid(eb, s))
      }
    }
  }
  const walk = async (level: number, index: number, ca: CidBytes | null, cb: CidBytes | null, span: number): Promise<void> => {
    const first = index * span
    const hasForced = f < forced.length && forced[f]! < first + span
    if (!hasForced && same(ca, cb)) return
    const eb = cb ? nodeEntries(blocks, cb) : null
    const ea = same(ca, cb) ? eb : ca ? nodeEntries(blocks, ca) : null
    const n = geo.nodeCount(level, index)
    if (level === 1) {
      leaf(first, ea, eb, n)
      const p = afterLeaf?.(out)
      if (p) await p
      return
    }
    const child = span / geo.fanout
    for (let s = 0; s < n; s++) {
      const cFirst = first + s * child
      const forcedBelow = f < forced.length && forced[f]! < cFirst + child
      // children with nothing to do are skipped without building their CIDs
      if (!forcedBelow && (ea === eb || (ea !== null && eb !== null && ea.codecs[s] === eb.codecs[s] && (eb.codecs[s] === 0 || sameDigest(ea.digests, eb.digests, s))))) continue
      await walk(level - 1, index * geo.fanout + s, slotCid(ea, s), slotCid(eb, s), child)
    }
  }
  await walk(geo.height, 0, rootA, rootB, geo.fanout ** geo.height)
  return out
}

/** The dirty chunk indexes, checked against the region, sorted and without repeats. */
export function dirtyList(dirty: Iterable<number> | undefined, geo: Geometry, region: string): number[] {
  if (dirty === undefined) return []
  if (dirty === null || typeof (dirty as Iterable<number>)[Symbol.iterator] !== 'function') {
    throw new CkptError('CKPT_BAD_ARGUMENT', `dirty chunks of region ${region} must be an iterable of chunk indexes`, { region })
  }
  const seen = new Uint8Array(geo.chunks)
  let n = 0
  for (const i of dirty) {
    if (!Number.isInteger(i) || i < 0 || i >= geo.chunks) {
      throw new CkptError('CKPT_OUT_OF_RANGE', `dirty chunk ${String(i)} is outside region ${region} (0..${geo.chunks - 1})`, { region, index: String(i) })
    }
    if (!seen[i]) {
      seen[i] = 1
      n++
    }
  }
  const out = new Array<number>(n)
  for (let i = 0, k = 0; k < n; i++) if (seen[i]) out[k++] = i
  return out
}

const ZEROS = new Uint8Array(1 << 16)

/** Where a restore by difference writes: a buffer, or a file (or device) opened in place. */
export interface Dest {
  buffer?: Uint8Array
  path?: string
  fd?: number
}

function writeZeros(d: Dest, geo: Geometry, i: number): void {
  const at = i * geo.chunkSize
  const len = geo.chunkLength(i)
  if (d.buffer) {
    for (let o = 0; o < len; o += ZEROS.length) d.buffer.set(ZEROS.subarray(0, Math.min(ZEROS.length, len - o)), at + o)
    return
  }
  for (let o = 0; o < len; ) {
    const n = fs.writeSync(d.fd!, ZEROS, 0, Math.min(ZEROS.length, len - o), at + o)
    if (n <= 0) throw Object.assign(new Error('no space left on device, write'), { code: 'ENOSPC' })
    o += n
  }
}

/** Chunks found by a walk that are sent to be read while it goes on. */
const STREAM_BATCH = 256

/** Jobs of about `target` raw bytes: small jumps still use both workers, large ones keep jobs ~1 MiB. */
function splitJobs(idx: number[], cids: CidBytes[], locs: BlockLocation[], threads: number): Job[] {
  let total = 0
  for (const l of locs) total += l.rawLength
  const target = Math.min(1 << 20, Math.max(64 << 10, Math.ceil(total / (threads * 2))))
  const jobs: Job[] = []
  let job: Job = { seq: 0, chunks: [], cids: [], locs: [], raw: 0 }
  for (let k = 0; k < idx.length; k++) {
    job.chunks.push(idx[k]!)
    job.cids.push(cids[k]!)
    job.locs.push(locs[k]!)
    job.raw += locs[k]!.rawLength
    if (job.raw >= target) {
      jobs.push(job)
      job = { seq: jobs.length, chunks: [], cids: [], locs: [], raw: 0 }
    }
  }
  if (job.chunks.length) jobs.push(job)
  return jobs
}

/**
 * Writes B's content of the listed chunks into the destination: holes zero-filled, stored chunks
 * read, decompressed and re-hashed on the workers (which write into a shared buffer or the file
 * themselves). Returns the bytes of stored chunks written.
 */
async function writeChunks(blocks: BlockStore, pool: WorkerPool, geo: Geometry, ch: Changes, d: Dest): Promise<{ stored: number; holes: number; bytes: number }> {
  const idx: number[] = []
  const cids: CidBytes[] = []
  let holes = 0
  for (let k = 0; k < ch.idx.length; k++) {
    const c = ch.cids[k]!
    if (c === null) {
      writeZeros(d, geo, ch.idx[k]!)
      holes++
      continue
    }
    if (cidCodec(c) !== RAW) throw new CkptError('CKPT_BAD_NODE', `leaf slot of chunk ${ch.idx[k]} links a non-raw block`, { index: ch.idx[k] })
    idx.push(ch.idx[k]!)
    cids.push(c)
  }
  if (idx.length === 0) return { stored: 0, holes, bytes: 0 }
  const locs = await blocks.locateMany(cids)
  for (let k = 0; k < cids.length; k++) {
    if (!locs[k]) throw new CkptError('CKPT_NOT_FOUND', `chunk ${idx[k]} (${cidToString(cids[k]!)}) is missing from the store`, { cid: cidToString(cids[k]!), index: idx[k] })
  }
  const shared = d.buffer && d.buffer.buffer instanceof SharedArrayBuffer ? d.buffer : undefined
  const direct = shared ?? d.path
  const jobs = splitJobs(idx, cids, locs as BlockLocation[], pool.threads)
  let bytes = 0
  await Promise.all(
    jobs.map(async (job) => {
      const data = await readJob(blocks, pool, geo, job, direct)
      let o = 0
      for (let k = 0; k < job.chunks.length; k++) {
        const len = job.locs[k]!.rawLength
        if (!direct) d.buffer!.set(data!.subarray(o, o + len), job.chunks[k]! * geo.chunkSize)
        o += len
        bytes += len
      }
    }),
  )
  return { stored: idx.length, holes, bytes }
}

/** Every chunk of B's tree, with its CID (null: a hole). */
function allChunks(blocks: BlockStore, geo: Geometry, root: CidBytes | null): (CidBytes | null)[] {
  const out = new Array<CidBytes | null>(geo.chunks).fill(null)
  walkLeaves(blocks, geo, root, (j, e) => {
    if (!e) return
    for (let s = 0; s < e.count; s++) out[j * geo.fanout + s] = slotCid(e, s)
  })
  return out
}

/**
 * Checked mode: the destination's chunks hashed on the workers and compared with B's; the chunks
 * that differ (a stored chunk with another hash, a hole that is not all zero, a chunk that is zero
 * where B stores one).
 */
async function differingChunks(blocks: BlockStore, pool: WorkerPool, geo: Geometry, root: CidBytes | null, d: Dest): Promise<Changes> {
  const want = allChunks(blocks, geo, root)
  const out: Changes = { idx: [], cids: [] }
  const per = Math.max(1, Math.floor((2 << 20) / geo.chunkSize))
  const tasks: Promise<void>[] = []
  const inflight = new Set<Promise<void>>()
  for (let first = 0; first < geo.chunks; first += per) {
    const n = Math.min(per, geo.chunks - first)
    const offsets = new Uint32Array(n)
    const lengths = new Uint32Array(n)
    for (let k = 0; k < n; k++) {
      offsets[k] = k * geo.chunkSize
      lengths[k] = geo.chunkLength(first + k)
    }
    const from = first * geo.chunkSize
    const to = from + (n - 1) * geo.chunkSize + lengths[n - 1]!
    const task: HashTask = d.buffer ? { op: 'hash', data: d.buffer.subarray(from, to), offsets, lengths } : { op: 'hash', file: d.path!, fileOffset: from, offsets, lengths }
    const p = pool.run(task).then((r) => {
      for (let k = 0; k < n; k++) {
        const i = first + k
        const c = want[i]!
        const ok = c === null ? r.zero[k] === 1 : r.zero[k] !== 1 && cidEquals(r.digests.subarray(k * 32, k * 32 + 32), c.subarray(4))
        if (!ok) {
          out.idx.push(i)
          out.cids.push(c)
        }
      }
    })
    tasks.push(p)
    inflight.add(p)
    void p.finally(() => inflight.delete(p)).catch(() => {})
    if (inflight.size >= pool.threads * 2) await Promise.race(inflight).catch(() => {})
  }
  await Promise.all(tasks)
  const order = out.idx.map((_, k) => k).sort((a, b) => out.idx[a]! - out.idx[b]!)
  return { idx: order.map((k) => out.idx[k]!), cids: order.map((k) => out.cids[k]!) }
}

function runsOf(idx: number[]): { start: number; end: number }[] {
  const runs: { start: number; end: number }[] = []
  for (const i of idx) {
    const last = runs[runs.length - 1]
    if (last && last.end === i) last.end++
    else runs.push({ start: i, end: i + 1 })
  }
  return runs
}

/** The destination of a restore by difference, opened in place (a path) or as given (a buffer). */
function openDest(out: Uint8Array | string, size: number, region: string): Dest {
  if (out instanceof Uint8Array) {
    if (out.length !== size) throw new CkptError('CKPT_WRONG_SIZE', `output buffer has ${out.length} bytes, region ${region} has ${size}`, { region })
    return { buffer: out }
  }
  let st: fs.Stats
  try {
    st = fs.statSync(out)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new CkptError('CKPT_NOT_FOUND', `${out} does not exist: a restore by difference rewrites a file that holds the \`from\` checkpoint's region`, { path: out })
    }
    throw fsError(err, `cannot open ${out}`, { path: out })
  }
  if (!st.isFile() && !st.isBlockDevice()) {
    throw new CkptError('CKPT_BAD_ARGUMENT', `${out} is neither a regular file nor a block device: a restore by difference writes in place`, { path: out })
  }
  if (st.isFile() && st.size !== size) {
    throw new CkptError('CKPT_WRONG_SIZE', `${out} has ${st.size} bytes, region ${region} has ${size}`, { path: out, region })
  }
  try {
    return { path: out, fd: fs.openSync(out, 'r+') }
  } catch (err) {
    throw fsError(err, `cannot open ${out}`, { path: out })
  }
}

/** A region's geometry and root in a manifest, or undefined when it lacks the region. */
function regionOf(m: Manifest, name: string): { geo: Geometry; root: CidBytes | null } | undefined {
  const r = m.regions[name]
  return r && { geo: new Geometry(r.size, r.chunkSize, r.fanout), root: r.root }
}

function sameShape(a: Geometry, b: Geometry): boolean {
  return a.size === b.size && a.chunkSize === b.chunkSize && a.fanout === b.fanout
}

/**
 * A region of checkpoint B into a destination that holds checkpoint A's region (`from`) plus the
 * chunks listed in `dirty`: writes only what differs, each stored chunk verified. `check` hashes the
 * destination instead of trusting it. A `from` checkpoint that lacks the region or holds it in another
 * shape cannot be compared: CKPT_BAD_ARGUMENT.
 */
export async function restoreDifference(ctx: StoreContext, ref: unknown, region: string, out: Uint8Array | string, opts: RestoreOptions): Promise<TravelResult> {
  const mb = await ctx.manifestOf(await ctx.resolve(ref))
  const b = regionOf(mb, region)
  if (!b) throw new CkptError('CKPT_UNKNOWN_REGION', `checkpoint has no region ${region}`, { region })
  let rootA: CidBytes | null | undefined
  if (opts.from !== undefined) {
    const a = regionOf(await ctx.manifestOf(await ctx.resolve(opts.from)), region)
    if (!a) throw new CkptError('CKPT_BAD_ARGUMENT', `the \`from\` checkpoint has no region ${region}: restore without from`, { region })
    if (!sameShape(a.geo, b.geo)) throw new CkptError('CKPT_BAD_ARGUMENT', `region ${region} has another shape in the \`from\` checkpoint: restore without from`, { region })
    rootA = a.root
  } else if (opts.dirty !== undefined) {
    throw new CkptError('CKPT_BAD_ARGUMENT', 'dirty chunks are relative to a `from` checkpoint: give from too', { region })
  }
  const forced = dirtyList(opts.dirty, b.geo, region)
  const d = openDest(out, b.geo.size, region)
  try {
    return await travelRegion(ctx.repo.blocks, ctx.pool, b.geo, rootA, b.root, forced, d, opts.check === true)
  } catch (err) {
    if (err instanceof CkptError) throw err
    throw fsError(err, d.path ? `cannot write ${d.path}` : 'restore failed', d.path ? { path: d.path } : {})
  } finally {
    if (d.fd !== undefined) fs.closeSync(d.fd)
  }
}

/**
 * One region from A (root `rootA`; undefined: unknown, checked mode required or the whole region
 * written) to B: the chunks written and how many the check found beyond diff and dirty set.
 */
export async function travelRegion(
  blocks: BlockStore,
  pool: WorkerPool,
  geo: Geometry,
  rootA: CidBytes | null | undefined,
  rootB: CidBytes | null,
  forced: readonly number[],
  d: Dest,
  check: boolean,
): Promise<TravelResult> {
  await prefetchTree(blocks, geo, rootB)
  let ch: Changes = { idx: [], cids: [] }
  let mismatched: number | undefined
  if (check) {
    ch = await differingChunks(blocks, pool, geo, rootB, d)
    if (rootA !== undefined) {
      const expected = new Set((await changedChunks(blocks, geo, rootA, rootB, forced)).idx)
      mismatched = ch.idx.filter((i) => !expected.has(i)).length
    } else mismatched = ch.idx.length
  } else {
    if (rootA === undefined) throw new CkptError('CKPT_BAD_ARGUMENT', 'a restore by difference needs `from` or `check`')
  }
  // the chunks found are read while the walk goes on, a batch at a time (the walk yields to the
  // event loop after each batch, so index lookups and the workers start on it)
  const w = { stored: 0, holes: 0, bytes: 0 }
  const writes: Promise<void>[] = []
  let sent = 0
  const send = (found: Changes) => {
    const part = { idx: found.idx.slice(sent), cids: found.cids.slice(sent) }
    sent = found.idx.length
    const p = writeChunks(blocks, pool, geo, part, d).then((r) => {
      w.stored += r.stored
      w.holes += r.holes
      w.bytes += r.bytes
    })
    p.catch(() => {})
    writes.push(p)
  }
  if (check) send(ch)
  else {
    ch = await changedChunks(blocks, geo, rootA!, rootB, forced, (found) => {
      if (found.idx.length - sent < STREAM_BATCH) return undefined
      send(found)
      return new Promise<void>((resolve) => setImmediate(resolve))
    })
    send(ch)
  }
  // every batch settles before a failure is reported: no worker writes into the destination afterwards
  const failed = (await Promise.allSettled(writes)).find((r) => r.status === 'rejected')
  if (failed) throw (failed as PromiseRejectedResult).reason
  if (d.fd !== undefined && (w.stored || w.holes)) fs.fdatasyncSync(d.fd)
  return {
    mode: check ? 'checked' : 'difference',
    size: geo.size,
    bytesWritten: w.bytes,
    chunksWritten: w.stored,
    holes: w.holes,
    written: runsOf(ch.idx),
    ...(mismatched !== undefined ? { mismatched } : {}),
  }
}

