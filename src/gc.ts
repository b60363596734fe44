/**
 * Garbage collection (SPEC.md §14): reclaim the blocks no live checkpoint, ref or open timeline
 * reaches, with memory bounded whatever the store's size.
 *
 *   check   nothing is deleted while the catalog looks incomplete (CKPT_CATALOG_SUSPECT): a pack
 *           file no index record names that may hold what the index lost, or (after the mark) a
 *           manifest nothing reaches whose removal no record explains;
 *   mark    from the roots (every catalog entry, every ref, the heads of open timeline handles) the
 *           DAG is walked into a SeenSet (exact in memory up to a cap, then a temporary LevelDB), each
 *           checkpoint against the previous one of its timeline so shared subtrees are not walked
 *           again. A live node stored as a delta of a dead base is staged anew (not in a dry run),
 *           and its chain of bases is marked apart: pack gc keeps the one or the other, whichever
 *           reclaims more;
 *   packs   the store's pack gc (store/pack-gc.ts): sweep the index, snapshot the catalog, rewrite
 *           or delete the packs due.
 *
 * gc takes the store's pipeline for its duration (checkpoint() calls queue behind it and apply
 * backpressure): nothing writes while it marks and moves, so nothing it marks goes stale. A crash at
 * any point leaves a store that opens with nothing live lost.
 */
import os from 'node:os'
import path from 'node:path'
import { cidEquals, cidToString, type CidBytes } from '../codecs/cid.js'
import { AT_REST, compressBlock } from '../codecs/compress.js'
import { CkptError } from '../codecs/errors.js'
import type { Manifest } from '../codecs/manifest.js'
import { deltaBaseCid, encodeNodeDelta } from '../codecs/node-delta.js'
import { encodedNodeLength, encodeNode, type NodeEntries } from '../codecs/tree-node.js'
import { ENTRY_HEADER_SIZE, fullCollection, SeenSet, Slices, type BlockStore, type PackGcSummary } from '../store/index.js'
import type { StoreContext } from './context.js'
import { changedSlots, childCid } from './node-compare.js'
import { Geometry, MAX_DELTA_DEPTH } from './region-tree.js'

export interface GcOptions {
  /** rewrite packs whose live share is below this (0..1, default 0.5); 0 rewrites none, 1 all but full ones */
  threshold?: number
  /**
   * at most this share of dead bytes (of the live bytes) left in packs kept: past it, the packs with
   * the most dead bytes are rewritten too (default 0.02; restic's prune keeps 5%; 1 turns this off)
   */
  maxUnused?: number
  /** only report what would be reclaimed */
  dryRun?: boolean
  onProgress?: (p: { phase: 'mark' | 'sweep'; done: number; total: number }) => void
}

export interface GcSummary extends Omit<PackGcSummary, 'rewriteMs' | 'rewriteCpuMs'> {
  roots: number
  /** live nodes whose delta base was dead, stored anew (against a live base, or whole) */
  nodesReencoded: number
  reencodedBytes: number
  dryRun: boolean
  /** mark; sweep (all of it); of which rewrite: reading, copying and committing the packs that go (rewriteCpu: its CPU time, every thread's) */
  ms: { mark: number; sweep: number; rewrite: number; rewriteCpu: number }
}

/** a node stored anew by gc stays this far under the delta depth ingest allows (25..32) */
const REENCODE_DEPTH = MAX_DELTA_DEPTH - 12
/** decoded nodes gc keeps cached while it walks, in units of 256 slots (768 nodes of 256 links, 192 of 1,024) */
const GC_NODE_CACHE = 768
/**
 * Checkpoints marked between two full V8 collections. 4, not 16: on the store the lifecycle bench's
 * second gc finds, peak RSS 211–230 MiB against 255–257 (8: 238–251), for a mark up to ~15% slower
 */
const COLLECT_EVERY_ROOTS = 4
/**
 * The mark walks trees with synchronous reads; it hands the event loop back every time slice (Slices)
 * and at least every MARK_YIELD_ROOTS roots, so that an emulator sharing the process keeps running (its
 * checkpoints wait for the gc, its timers and I/O do not): without it, the lifecycle bench's 8th gc
 * held the event loop for 7.5 s in one piece.
 */
const MARK_YIELD_ROOTS = 64

function fraction(v: number | undefined, dflt: number, name: string): number {
  const x = v ?? dflt
  if (typeof x !== 'number' || !(x >= 0 && x <= 1)) throw new CkptError('CKPT_BAD_ARGUMENT', `gc ${name} must be between 0 and 1`, { [name]: x })
  return x
}

export async function collectGarbage(ctx: StoreContext, opts: GcOptions = {}): Promise<GcSummary> {
  const threshold = fraction(opts.threshold, 0.5, 'threshold')
  const maxUnused = fraction(opts.maxUnused, 0.02, 'maxUnused')
  const dryRun = opts.dryRun === true
  return ctx.exclusive(async () => {
    const { repo } = ctx
    const t0 = performance.now()
    const unlisted = repo.unlistedPacks()
    if (unlisted.length) {
      throw suspect(ctx, `${unlisted.length} pack file${unlisted.length === 1 ? '' : 's'} the index does not list (${unlisted.slice(0, 3).join(', ')}${unlisted.length > 3 ? ', …' : ''}) may hold checkpoints the catalog lost`, { packs: unlisted })
    }
    const marker = await Marker.create(ctx, dryRun)
    try {
      const roots = await marker.markAll(opts.onProgress)
      // nothing is deleted while a manifest nothing reaches is not explained by a removal record
      const lost = await repo.unexplainedManifests(marker.isLive)
      if (lost.count > 0) {
        const names = lost.first.map(cidToString)
        throw suspect(ctx, `${lost.count} checkpoint${lost.count === 1 ? '' : 's'} stored in the packs (${names.join(', ')}${lost.count > names.length ? ', …' : ''}) ${lost.count === 1 ? 'is' : 'are'} in no timeline and no removal record explains ${lost.count === 1 ? 'it' : 'them'}`, { checkpoints: names, count: lost.count })
      }
      const tMark = performance.now() - t0
      // the nodes stored anew are staged, not committed: pack gc commits them (durable, indexed) before
      // it deletes anything, or drops them when keeping their delta bases reclaims more
      const onStagedDropped = () => {
        marker.reencoded = 0
        marker.reencodedBytes = 0
      }
      const packs = await repo.collectPacks({ isLive: marker.isLive, isBaseOnly: marker.isBaseOnly, keepBase: marker.keepBase, threshold, maxUnused, dryRun, onProgress: opts.onProgress, onStagedDropped })
      const { rewriteMs, rewriteCpuMs, ...rest } = packs
      return {
        roots,
        ...rest,
        nodesReencoded: marker.reencoded,
        reencodedBytes: marker.reencodedBytes,
        dryRun,
        ms: { mark: tMark, sweep: performance.now() - t0 - tMark, rewrite: rewriteMs, rewriteCpu: rewriteCpuMs },
      }
    } finally {
      // a gc that failed leaves nothing staged behind for the next commit to take along
      if (repo.blocks.stagedEntryCount > 0) repo.blocks.abort()
      await marker.close()
    }
  })
}

function suspect(ctx: StoreContext, what: string, details: Record<string, unknown>): CkptError {
  const advice = `ckpt repair --store ${ctx.dir} --rebuild-index`
  return new CkptError(
    'CKPT_CATALOG_SUSPECT',
    `gc deletes nothing: ${what}. Rebuild the catalog from the packs first (${advice}); checkpoints that are really unwanted can then be removed with ckpt rm CID`,
    { ...details, advice },
  )
}

/**
 * The mark: a SeenSet of live blocks, and apart from it the bases live deltas need (a node in `live`
 * has had its whole subtree marked, a base alone has not: a later tree holding that node must still
 * walk it).
 */
class Marker {
  reencoded = 0
  reencodedBytes = 0
  private readonly blocks: BlockStore
  private cacheWas = 0
  /** the clock read before each node: a node's walk may take milliseconds */
  private readonly slices = new Slices(1)

  private constructor(
    private readonly ctx: StoreContext,
    private readonly dryRun: boolean,
    private readonly live: SeenSet,
    private readonly bases: SeenSet,
  ) {
    this.blocks = ctx.repo.blocks
    // the walk needs the previous checkpoint's nodes at hand (a few hundred per region), no more
    this.cacheWas = this.blocks.setNodeCacheSize(GC_NODE_CACHE)
  }

  static async create(ctx: StoreContext, dryRun: boolean): Promise<Marker> {
    const { repo } = ctx
    // a store opened read-only (a dry run) is never written to: the sets spill to the system's temporary directory
    const name = `gc-${process.pid}-${Date.now().toString(36)}`
    const tmp = repo.memory ? undefined : repo.readOnly ? path.join(os.tmpdir(), `ckpt-${name}`) : path.join(repo.dir, 'tmp', name)
    // sized for half the indexed blocks (an estimate; no pass over the index): the exact table grows
    // up to 32 MiB, then a larger live set spills to disk (still exact)
    const live = await SeenSet.create(tmp, repo.blocks.estimatedCount() >> 1, { grow: true })
    // the delta bases of nodes stored anew: the table grows as they come
    const bases = await SeenSet.create(tmp && `${tmp}-bases`, 1024, { grow: true })
    return new Marker(ctx, dryRun, live, bases)
  }

  readonly isLive = (cid: Uint8Array, at = 0): boolean => this.live.has(cid, at) || this.bases.has(cid, at)
  readonly isBaseOnly = (cid: Uint8Array, at = 0): boolean => !this.live.has(cid, at)
  readonly keepBase = (cid: CidBytes): void => {
    if (!this.bases.has(cid)) this.bases.add(cid)
  }

  async close(): Promise<void> {
    this.blocks.setNodeCacheSize(this.cacheWas)
    await this.live.close()
    await this.bases.close()
  }

  /** Marks from every root, in catalog order; returns how many roots there were. */
  async markAll(onProgress: GcOptions['onProgress']): Promise<number> {
    const roots: { timeline: string; cid: CidBytes }[] = []
    for await (const e of this.ctx.repo.iterateCheckpoints()) roots.push({ timeline: e.timeline, cid: e.cid })
    for await (const r of this.ctx.repo.refs()) roots.push({ timeline: '', cid: r.cid })
    for (const h of await this.ctx.openHeads()) roots.push({ timeline: '', cid: h })
    const prevOf = new Map<string, Manifest>()
    let done = 0
    for (const r of roots) {
      if (!this.live.has(r.cid)) {
        this.live.add(r.cid)
        const m = await this.ctx.manifestOf(r.cid)
        await this.markCheckpoint(m, r.timeline ? prevOf.get(r.timeline) : undefined)
        if (r.timeline) prevOf.set(r.timeline, m)
        await this.live.flush()
        await this.bases.flush()
      }
      if (++done % COLLECT_EVERY_ROOTS === 0) fullCollection()
      onProgress?.({ phase: 'mark', done, total: roots.length })
      if (this.slices.due() || done % MARK_YIELD_ROOTS === 0) await this.slices.next()
    }
    await this.live.flush(true)
    await this.bases.flush(true)
    // what the walk left behind goes before the sweep makes its own garbage (peak RSS)
    fullCollection()
    return roots.length
  }

  /** A checkpoint's trees, each against the same region of the previous live checkpoint of its timeline. */
  private async markCheckpoint(m: Manifest, prev: Manifest | undefined): Promise<void> {
    for (const [name, reg] of Object.entries(m.regions)) {
      const b = prev?.regions[name]
      const same = b && b.size === reg.size && b.chunkSize === reg.chunkSize && b.fanout === reg.fanout
      await this.walk(reg.root, same ? b.root : null, new Geometry(reg.size, reg.chunkSize, reg.fanout).height)
    }
    for (const b of Object.values(m.blobs)) for (const c of b.chunks) this.mark(c.cid)
  }

  private mark(cid: CidBytes): void {
    if (!this.live.has(cid)) this.live.add(cid)
  }

  private async walk(cid: CidBytes | null, base: CidBytes | null, level: number): Promise<void> {
    if (!cid || (base && cidEquals(cid, base)) || this.live.has(cid)) return
    // the event loop may have its turn before each node is read and walked
    if (this.slices.due()) await this.slices.next()
    this.live.add(cid)
    const blocks = this.blocks
    const loc = blocks.locate(cid)
    const deadBase = loc !== undefined && loc.codec === AT_REST.nodeDelta && !this.live.has(deltaBaseCid(blocks.readAt(cid, loc, true)))
    // its chain of bases is marked (live until pack gc knows whether the node stored anew is kept),
    // before it is stored anew: then it is located at its new copy
    if (deadBase) this.markChain(cid)
    // the versions between a live node and its base are thinned checkpoints' (or older): not cached
    const e = blocks.getNode(cid, false)
    const be = base ? blocks.getNode(base, false) : undefined
    if (deadBase && !this.dryRun) this.reencode(cid, e, base, be)
    for (const s of changedSlots(e, be)) {
      if (!e.codecs[s]) continue
      const child = childCid(e, s)
      if (level === 1) this.mark(child)
      else await this.walk(child, be && be.count === e.count && be.codecs[s] ? childCid(be, s) : null, level - 1)
    }
  }

  /** A node kept alive keeps its delta chain's bases alive, unless it is stored anew (and that kept). */
  private markChain(cid: CidBytes): void {
    let c: CidBytes | undefined = cid
    for (let hops = 0; c && hops < 300; hops++) {
      const loc = this.blocks.locate(c)
      if (!loc || loc.codec !== AT_REST.nodeDelta) return
      // read into reused memory (no allocation per base): the base's CID is copied out of it
      const base = Uint8Array.prototype.slice.call(deltaBaseCid(this.blocks.readAt(c, loc, true))) as CidBytes
      if (this.isLive(base)) return
      this.bases.add(base)
      c = base
    }
  }

  /**
   * A live node stored as a delta whose base is not live (a thinned checkpoint's node) would keep its
   * chain of dead bases alive: it is stored anew instead, as a delta against the node at its place in
   * the previous live checkpoint (live, its own chain live: it was walked first) or whole.
   */
  private reencode(cid: CidBytes, e: NodeEntries, base: CidBytes | null, be: NodeEntries | undefined): void {
    const blocks = this.blocks
    const size = encodedNodeLength(e)
    if (base && be && this.live.has(base)) {
      const bl = blocks.locate(base)
      const depth = bl ? (bl.codec === AT_REST.nodeDelta ? bl.depth : 0) : MAX_DELTA_DEPTH
      if (depth < REENCODE_DEPTH) {
        const delta = encodeNodeDelta(base, be, e, size >> 1)
        if (delta) {
          blocks.put(cid, AT_REST.nodeDelta, delta, size, { depth: depth + 1, replace: true })
          this.reencoded++
          this.reencodedBytes += ENTRY_HEADER_SIZE + delta.length
          return
        }
      }
    }
    const bytes = encodeNode(e)
    const c = compressBlock(blocks.compressor, bytes)
    blocks.put(cid, c.code, c.bytes, bytes.length, { replace: true })
    this.reencoded++
    this.reencodedBytes += ENTRY_HEADER_SIZE + c.bytes.length
  }
}
