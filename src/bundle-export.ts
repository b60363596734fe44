/**
 * Bundle export: checkpoints as a CAR v1 stream (SPEC.md, "Bundles").
 *
 * exportBundle streams a CAR whose roots are the checkpoints' manifests and whose blocks are every
 * block their DAGs reach (regions' trees and chunks, blobs' chunks, the manifests) exactly once, in
 * post-order: children before the node that links them, a checkpoint's manifest after all of its
 * blocks. `since` leaves out every block reachable from checkpoints the receiver already has. Memory
 * stays bounded: the "already in the bundle" set is a SeenSet (Bloom filter + temporary LevelDB).
 */
import type { CID } from 'multiformats/cid'
import { compressBundle, defaultBundleCompression, type BundleCompression } from '../codecs/bundle-compress.js'
import { encodeCarHeader, varintLength, writeVarint } from '../codecs/car.js'
import { cidEquals, cidKey, cidToString, type CidBytes } from '../codecs/cid.js'
import { CkptError } from '../codecs/errors.js'
import type { Manifest } from '../codecs/manifest.js'
import { encodedNodeLength, type NodeEntries } from '../codecs/tree-node.js'
import { SeenSet, type BlockLocation, type BlockStore } from '../store/index.js'
import type { StoreContext } from './context.js'
import type { WorkerPool } from './pipeline/worker-pool.js'
import { changedSlots, childCid } from './node-compare.js'
import { Geometry } from './region-tree.js'
import { readBlocksInto } from './restore.js'
import { ReadAhead } from './pipeline/read-ahead.js'
import { acquireSlab, releaseSlab } from './pipeline/slabs.js'
import { resolveOutput, writeOutput } from './output-file.js'
import type { CkptStore } from './store.js'
import { baseRoot, tmpSetDir } from './bundle-shared.js'
import { RecentNodes } from './bundle-import-util.js'

export interface ExportOptions {
  /** checkpoints the receiver already has: nothing reachable from them goes into the bundle */
  since?: (string | CID)[]
  /** compress the whole file: true = zstd when it loads, else gzip */
  compress?: boolean | BundleCompression
  /** called after every ~1 MiB of output with the running totals */
  onProgress?: (p: ExportProgress) => void
}

export interface ExportProgress {
  blocks: number
  /** block bytes written (uncompressed) */
  bytes: number
}

export interface ExportSummary extends ExportProgress {
  roots: string[]
  /** blocks left out because the receiver has them (`since`) or the bundle already had them */
  skipped: number
  /** CAR bytes before compression */
  carBytes: number
  compression: BundleCompression
}

export type BundleStream = AsyncIterable<Uint8Array> & { summary: Promise<ExportSummary> }

/**
 * Pieces of the CAR (each ~1-2 MiB) planned and being read ahead of the output. With the one being
 * planned and the one being written, five at most: as many as when the pieces were planned only
 * when pulled (four ahead, one written). 3 and 4 measured the same time here.
 */
const READ_AHEAD = 3
const JOB_BYTES = 1 << 20

/**
 * The bundle as a byte stream (pull-based: nothing is read ahead of the consumer beyond a few MiB).
 * `summary` resolves when the stream has ended.
 */
export function exportBundle(store: CkptStore, refs: (string | CID)[], opts: ExportOptions = {}): BundleStream {
  return exportStream(store, refs, opts, false)
}

/**
 * exportBundle; `consumedInTurn`: the consumer is done with each piece when it asks for the next (a
 * writer that awaits every write), so an uncompressed bundle's pieces are recycled.
 */
function exportStream(store: CkptStore, refs: (string | CID)[], opts: ExportOptions, consumedInTurn: boolean): BundleStream {
  if (!Array.isArray(refs) || refs.length === 0) throw new CkptError('CKPT_BAD_ARGUMENT', 'export needs at least one checkpoint')
  let done!: (s: ExportSummary) => void
  let fail!: (e: unknown) => void
  const summary = new Promise<ExportSummary>((resolve, reject) => ((done = resolve), (fail = reject)))
  summary.catch(() => {})
  const kind: BundleCompression = opts.compress === true ? defaultBundleCompression() : opts.compress === false || opts.compress === undefined ? 'none' : opts.compress
  // a compressor may hold on to the pieces it is given: only uncompressed bundles recycle them
  const car = carStream(store, refs, opts, kind, done, fail, consumedInTurn && kind === 'none')
  const stream = compressBundle(kind, car)
  return Object.assign(stream, { summary })
}

/**
 * exportBundle written to a file as `ckpt export --out FILE` writes it (SPEC.md §17): under a
 * temporary name beside FILE, renamed over it when complete, and on the disk when this returns (its
 * data fdatasynced as it is written, its directory after the rename). A FIFO or a character device is
 * written front to back.
 */
export async function exportBundleToFile(
  store: CkptStore,
  refs: (string | CID)[],
  file: string,
  opts: ExportOptions = {},
): Promise<ExportSummary & { fileBytes: number; target: string }> {
  resolveOutput(file)
  // writeOutput writes each piece before it asks for the next
  const stream = exportStream(store, refs, opts, true)
  const w = await writeOutput(file, stream, { durable: true })
  return { ...(await stream.summary), fileBytes: w.bytes, target: w.out.target }
}

async function* carStream(
  store: CkptStore,
  refs: (string | CID)[],
  opts: ExportOptions,
  compression: BundleCompression,
  done: (s: ExportSummary) => void,
  fail: (e: unknown) => void,
  recycle: boolean,
): AsyncIterable<Uint8Array> {
  const ctx = store.context()
  const { repo, pool } = ctx
  const blocks = repo.blocks
  let seen: SeenSet | undefined
  const stats = { blocks: 0, bytes: 0, skipped: 0, carBytes: 0 }
  try {
    const roots = await resolveRoots(ctx, refs)
    const manifests = await Promise.all(roots.map((r) => ctx.manifestOf(r)))
    seen = await SeenSet.create(tmpSetDir(ctx, 'export'), blocks.estimatedCount())
    const bases = new MarkedBases()
    for (const s of opts.since ?? []) await markReachable(ctx, blocks, seen, bases, await ctx.resolve(s))

    const header = encodeCarHeader(roots)
    stats.carBytes += header.length
    yield header
    // planned output, in order: pieces of the CAR, each ~1 MiB of chunks (read, verified and placed
    // by a worker) followed by blocks (nodes, manifests) whose own children are in it or earlier.
    // Planned ahead of the consumer: the next pieces are planned while it writes the last one.
    const planner = new ExportPlanner(blocks, pool, seen, bases, stats, recycle)
    const handled = (b: ExportBatch) => {
      b.data.catch(() => {})
      b.bytes.catch(() => {})
    }
    const ahead = new ReadAhead(planner.plan(roots, manifests), READ_AHEAD, handled)
    try {
      for (let item = await ahead.take(); item; item = await ahead.take()) {
        const piece = await item.data
        stats.blocks += item.blocks
        stats.bytes += await item.bytes
        stats.carBytes += piece.length
        opts.onProgress?.({ blocks: stats.blocks, bytes: stats.bytes })
        yield piece
        // asked for the next one: the consumer is done with this one
        if (recycle) releaseSlab(piece)
      }
    } finally {
      // an export that ends early (a failed write, a consumer that stops): the pieces planned ahead
      // are let finish (their workers, their lookups) before the caller may close the store
      for (const b of await ahead.stop()) await b.data.catch(() => {})
    }
    await seen.flush(true)
    done({ ...stats, roots: roots.map(cidToString), compression })
  } catch (err) {
    fail(err)
    throw err
  } finally {
    await seen?.close()
  }
}

/** The checkpoints' CIDs, each once, in the order given. */
async function resolveRoots(ctx: StoreContext, refs: (string | CID)[]): Promise<CidBytes[]> {
  const roots: CidBytes[] = []
  const rootKeys = new Set<string>()
  for (const r of refs) {
    const cid = await ctx.resolve(r)
    if (!rootKeys.has(cidKey(cid))) {
      rootKeys.add(cidKey(cid))
      roots.push(cid)
    }
  }
  return roots
}

/** A block placed after a piece's chunks: a manifest (its bytes) or a tree node (its entries, encoded by a worker). */
interface AfterBlock {
  cid: CidBytes
  bytes?: Uint8Array
  entries?: NodeEntries
  length?: number
}

interface ExportBatch {
  /** the piece of the CAR: its sections, whole (chunks placed by a worker once read and verified) */
  data: Promise<Uint8Array>
  /** blocks in it, and their bytes (known once the chunks are located) */
  blocks: number
  bytes: Promise<number>
}

/**
 * The export's blocks in post-order, as batches of ~2 MiB of chunks (their reads start as soon as
 * the batch is planned) each followed by the nodes and manifests completed meanwhile.
 */
class ExportPlanner {
  private cids: CidBytes[] = []
  private raw = 0
  /** blocks after the chunks: manifests (bytes) and tree nodes (entries, encoded by the worker) */
  private after: AfterBlock[] = []
  private afterBytes = 0
  private readonly recent = new RecentNodes()

  constructor(
    private readonly blocks: BlockStore,
    private readonly pool: WorkerPool,
    private readonly seen: SeenSet,
    private readonly bases: MarkedBases,
    private readonly stats: { skipped: number },
    /**
     * pieces in reused shared memory (given back once written), not in fresh buffers moved to the
     * worker and back: each ~1-2 MiB counts as V8 external memory until a collection frees it, and
     * exporting workload S's 672 MB so made V8 run 30 full collections (their concurrent marking
     * ~1 s of CPU on its threads) and 28 scavenges for it
     */
    private readonly recycle: boolean,
  ) {}

  /** a block to send: new ones are marked; false if the bundle has it or the receiver does */
  private take(cid: CidBytes): boolean {
    if (this.seen.has(cid)) {
      this.stats.skipped++
      return false
    }
    this.seen.add(cid)
    return true
  }

  private full(): boolean {
    return this.raw >= JOB_BYTES || this.afterBytes >= JOB_BYTES
  }

  private async batch(): Promise<ExportBatch> {
    const cids = this.cids
    const after = this.after
    this.cids = []
    this.raw = 0
    this.after = []
    this.afterBytes = 0
    await this.seen.flush()
    // the chunks are looked up in the index while the next pieces are planned; this piece is laid
    // out and handed to a worker once their locations are here (waiting for each lookup in turn
    // left the main thread idle ~0.5 s of a 2.2 s export of workload S)
    const located = cids.length ? this.blocks.locateMany(cids) : Promise.resolve([])
    const piece = located.then((locs) => this.layout(cids, after, locs))
    return { data: piece.then((p) => p.data), bytes: piece.then((p) => p.bytes), blocks: cids.length + after.length }
  }

  /** A piece's bytes: the sections' prefixes and manifests written here, the chunks and nodes by a worker. */
  private layout(cids: CidBytes[], after: AfterBlock[], locs: (BlockLocation | undefined)[]): { data: Promise<Uint8Array>; bytes: number } {
    for (let k = 0; k < locs.length; k++) {
      if (!locs[k]) throw new CkptError('CKPT_NOT_FOUND', `block ${cidToString(cids[k]!)} is missing from the store`, { cid: cidToString(cids[k]!) })
    }
    // the piece's layout: every section's prefix (length varint, CID) and the blocks after the chunks
    // are written here; the worker decompresses each chunk straight to its place
    let size = 0
    let bytes = 0
    for (let k = 0; k < cids.length; k++) {
      const n = cids[k]!.length + locs[k]!.rawLength
      size += varintLength(n) + n
      bytes += locs[k]!.rawLength
    }
    const lengths = after.map((b) => (b.bytes ? b.bytes.length : b.length!))
    for (let j = 0; j < after.length; j++) {
      const n = after[j]!.cid.length + lengths[j]!
      size += varintLength(n) + n
      bytes += lengths[j]!
    }
    // every byte of it is written before it is handed on (a failed read drops it)
    const piece = this.recycle ? acquireSlab(size) : new Uint8Array(Buffer.allocUnsafeSlow(size).buffer, 0, size)
    const outOffsets = new Float64Array(cids.length)
    let at = 0
    for (let k = 0; k < cids.length; k++) {
      const cid = cids[k]!
      at = writeVarint(piece, at, cid.length + locs[k]!.rawLength)
      piece.set(cid, at)
      outOffsets[k] = at += cid.length
      at += locs[k]!.rawLength
    }
    // tree nodes are encoded (and proven against their CIDs) by the worker, manifests copied here
    const nodes = { cids: [] as CidBytes[], entries: [] as NodeEntries[], offsets: new Float64Array(after.length) }
    for (let j = 0; j < after.length; j++) {
      const b = after[j]!
      at = writeVarint(piece, at, b.cid.length + lengths[j]!)
      piece.set(b.cid, at)
      at += b.cid.length
      if (b.bytes) piece.set(b.bytes, at)
      else {
        nodes.offsets[nodes.cids.length] = at
        nodes.cids.push(b.cid)
        nodes.entries.push(b.entries!)
      }
      at += lengths[j]!
    }
    nodes.offsets = nodes.offsets.subarray(0, nodes.cids.length)
    const data = cids.length || nodes.cids.length ? readBlocksInto(this.blocks, this.pool, cids, locs as BlockLocation[], piece, outOffsets, nodes) : Promise.resolve(piece)
    return { data, bytes }
  }

  /**
   * A node to export, as stored: not hashed here (the worker that encodes it into the bundle proves
   * it). The last two checkpoints' nodes stay at hand as bases; the store's node cache is offered
   * each one, so the next version's delta chain ends there.
   */
  private nodeOf(cid: CidBytes): NodeEntries {
    const r = this.recent.get(cid)
    if (r) return r
    // the versions between it and its base are thinned checkpoints' (not exported): rebuilt in one copy, not cached
    const e = this.blocks.resolveNode(cid, 0, false).entries
    this.blocks.offerNode(cid, e)
    this.recent.set(cid, e)
    return e
  }

  private chunk(cid: CidBytes, length: number): void {
    if (!this.take(cid)) return
    this.cids.push(cid)
    this.raw += length
  }

  private block(cid: CidBytes, bytes: Uint8Array): void {
    this.after.push({ cid, bytes })
    this.afterBytes += bytes.length
  }

  private node(cid: CidBytes, entries: NodeEntries): void {
    const length = encodedNodeLength(entries)
    this.after.push({ cid, entries, length })
    this.afterBytes += length
  }

  /**
   * A tree's blocks in post-order; subtrees already taken are skipped whole, and so is every slot
   * equal to the same slot of `base` (the same place in a checkpoint whose DAG is all marked).
   */
  private async *tree(cid: CidBytes | null, base: CidBytes | null, geo: Geometry, level: number): AsyncIterable<ExportBatch> {
    if (!cid || (base && cidEquals(cid, base)) || !this.take(cid)) return
    // as stored, not hashed here: the worker that encodes the node into the bundle proves it, and
    // a base is a node of a checkpoint already in the bundle (proven so) or marked from `since`
    const e = this.nodeOf(cid)
    // a base not at hand is read through the node cache (proven there, a rare case)
    const be = base ? (this.recent.get(base) ?? this.blocks.getNode(base)) : undefined
    const sameShape = be !== undefined && be.count === e.count
    for (const s of changedSlots(e, be)) {
      if (!e.codecs[s]) continue
      const c = childCid(e, s)
      if (level === 1) this.chunk(c, geo.chunkSize)
      else yield* this.tree(c, sameShape && be!.codecs[s] ? childCid(be!, s) : null, geo, level - 1)
      if (this.full()) yield await this.batch()
    }
    this.node(cid, e)
  }

  async *plan(roots: CidBytes[], manifests: Manifest[]): AsyncIterable<ExportBatch> {
    for (let r = 0; r < roots.length; r++) {
      const root = roots[r]!
      const m = manifests[r]!
      const manifestNew = !this.seen.has(root)
      const base = this.bases.pick(m)
      this.recent.rotate()
      for (const name of Object.keys(m.regions).sort()) {
        const reg = m.regions[name]!
        const geo = new Geometry(reg.size, reg.chunkSize, reg.fanout)
        yield* this.tree(reg.root, baseRoot(base, name, reg), geo, geo.height)
      }
      for (const name of Object.keys(m.blobs).sort()) {
        for (const c of m.blobs[name]!.chunks) {
          this.chunk(c.cid, c.length)
          if (this.full()) yield await this.batch()
        }
      }
      if (manifestNew && this.take(root)) this.block(root, this.blocks.get(root))
      this.bases.marked(root, m)
      if (this.full()) yield await this.batch()
    }
    if (this.cids.length || this.after.length) yield await this.batch()
  }
}

/**
 * Checkpoints whose whole DAG is marked seen (exported so far, or reachable from `since`). A tree
 * compared with the same place in one of them only needs checking where it differs: everything
 * equal there is marked already. (Any marked checkpoint would be correct; the parent, else the
 * latest marked one of the same lineage, is the one most alike.)
 */
class MarkedBases {
  private readonly byCid = new Map<string, Manifest>()
  private readonly latest = new Map<string, Manifest>()

  marked(cid: CidBytes, m: Manifest): void {
    this.byCid.set(cidKey(cid), m)
    this.latest.set(m.lineage, m)
  }

  pick(m: Manifest): Manifest | undefined {
    return (m.parent && this.byCid.get(cidKey(m.parent))) || this.latest.get(m.lineage)
  }
}

/** Marks every block reachable from a checkpoint (manifest, nodes, chunks, blob chunks); reads nodes only. */
async function markReachable(ctx: StoreContext, blocks: BlockStore, seen: SeenSet, bases: MarkedBases, root: CidBytes): Promise<void> {
  if (seen.has(root)) return
  const m = await ctx.manifestOf(root)
  const base = bases.pick(m)
  const mark = (cid: CidBytes) => {
    if (!seen.has(cid)) seen.add(cid)
  }
  mark(root)
  const visit = (cid: CidBytes | null, b: CidBytes | null, level: number) => {
    if (!cid || (b && cidEquals(cid, b)) || seen.has(cid)) return
    seen.add(cid)
    const e = blocks.getNode(cid, false)
    const be = b ? blocks.getNode(b, false) : undefined
    for (const s of changedSlots(e, be)) {
      if (!e.codecs[s]) continue
      if (level === 1) mark(childCid(e, s))
      else visit(childCid(e, s), be && be.count === e.count && be.codecs[s] ? childCid(be, s) : null, level - 1)
    }
  }
  for (const [name, reg] of Object.entries(m.regions)) {
    visit(reg.root, baseRoot(base, name, reg), new Geometry(reg.size, reg.chunkSize, reg.fanout).height)
    await seen.flush()
  }
  for (const b of Object.values(m.blobs)) for (const c of b.chunks) mark(c.cid)
  bases.marked(root, m)
  await seen.flush()
}
