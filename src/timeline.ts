/**
 * A timeline: an ordered series of checkpoints of the same regions, in virtual time.
 *
 * checkpoint() validates everything first (bad input stores nothing), then copies what it needs — the
 * dirty chunks — into shared memory before it returns, so the emulator may resume at once. Hashing,
 * compression and writes run in the store's pipeline; the promise resolves once the checkpoint is
 * durable and visible. When the pipeline holds more than `maxPendingBytes` of copies, the copy waits for
 * room (backpressure) and `copied` tells the caller when its buffers are free again.
 */
import { copyOf } from '../codecs/bytes.js'
import fs from 'node:fs'
import type { CID } from 'multiformats/cid'
import { blake3 } from '../codecs/blake3.js'
import { cidBytes, cidKey, DAG_CBOR, toCID, type CidBytes } from '../codecs/cid.js'
import { compressBlock } from '../codecs/compress.js'
import { CkptError, fsError } from '../codecs/errors.js'
import { encodeManifest, metaProblem, type BlobRoot, type Manifest, type RegionRoot } from '../codecs/manifest.js'
import { ENTRY_KIND } from '../codecs/pack-format.js'
import type { TimelineRecord } from '../store/index.js'
import { addStats, batchesOf, bufferBatches, hashNodes, markOwnedLeaves, emptyStats, fileBatches, ingestBatch, storeBlob, type ChunkBatch, type IngestStats, type SpanScan } from './ingest.js'
import { runBatches } from './pipeline/batches.js'
import { dirtyIndexes, previousOf } from './dirty-hints.js'
import { SPAN_SIZE, spanCount } from '../codecs/scan-cache.js'
import { ScanCache } from './scan-cache.js'
import type { NodeEntries } from '../codecs/tree-node.js'
import { acquireSlab, releaseSlab } from './pipeline/slabs.js'
import { checkName, REGION_RE, toVtime } from './refs.js'
import { DEFAULT_FANOUT, Geometry, RegionTree } from './region-tree.js'
import type { StoreContext } from './context.js'
import { dropOps, isProtected, thinCandidates } from './lifecycle.js'
import { parsePolicy, planKeep, type Policy } from './policy.js'

/**
 * Chunks changed since the timeline's previous checkpoint: any iterable (array, Set, typed array,
 * generator) or array-like of chunk indexes, or a bitmap (see dirtyIndexes for its bit order and length).
 */
export type DirtySpec = Iterable<number> | ArrayLike<number> | { bitmap: Uint8Array }

export interface RegionInput {
  /** the whole region: a buffer of exactly the region's size, or the path of a file of that size */
  data: Uint8Array | string
  /** chunk indexes changed since this timeline's previous checkpoint; absent: full scan */
  dirty?: DirtySpec
  /**
   * With `dirty`: the dirty chunks' bytes as they were at the previous checkpoint (what a shadow copy
   * held before it was refreshed), chunk k of the dirty list (sorted, each index once) at k × chunkSize,
   * so `previous` has as many bytes as those chunks. A changed chunk is then stored as a delta against
   * its previous version where that is smaller (SPEC.md §5.1, codec 4). Bytes that do not hash to
   * the previous checkpoint's chunk are not used (stats.deltaBaseMismatches counts them). Copied during
   * the pause like the dirty chunks.
   */
  previous?: Uint8Array
  /** full scan of a buffer only: the caller will not modify it until the checkpoint resolves, so it is not copied */
  stable?: boolean
}

export interface CheckpointInput {
  vtime: bigint | number
  regions?: Record<string, RegionInput>
  blobs?: Record<string, Uint8Array>
  meta?: Record<string, string>
  /**
   * false: full scans do not trust the scan cache (SPEC.md, "Scan cache files"): every chunk is hashed, and the
   * cache is written anew from what was hashed. Default true.
   */
  scanCache?: boolean
}

export interface Checkpoint {
  cid: CID
  timeline: string
  vtime: bigint
  stats: CheckpointStats
}

export interface CheckpointStats extends IngestStats {
  nodesWritten: number
  nodeBytes: number
  manifestBytes: number
  blobBytes: number
  /** time checkpoint() held the caller (validation and copies), ms */
  pauseMs: number
  /** from the call until durable, ms */
  commitMs: number
  /** where the pipeline spent its time, ms: waiting in the queue, chunk ingest, tree nodes, durable commit */
  phases: { queued: number; chunks: number; tree: number; commit: number }
  /** checkpoints the timeline's policy dropped in this commit */
  thinned: number
}

export type PendingCheckpoint = Promise<Checkpoint> & {
  /** resolves once the caller's buffers have been copied and may change again */
  copied: Promise<void>
}

interface PreparedRegion {
  name: string
  geo: Geometry
  /** source.data is a slab this checkpoint acquired (returned to the pool when done) */
  owned?: boolean
  source:
    | { kind: 'copied'; data: Uint8Array; indexes: Uint32Array; previous?: Uint8Array }
    | { kind: 'file'; path: string }
    /** full scan of a buffer; `copy` unless the caller promised it stays unchanged */
    | { kind: 'buffer'; data: Uint8Array; copy: boolean }
}

type Job = ReturnType<Timeline['validate']>

/** A checkpoint of a timeline that thins itself: what its policy decides on */
type LiveEntry = { vtime: bigint; cid: CidBytes; protected: boolean }

export interface RegionConfig {
  size: number
  /** power of two, 512 B to 1 MiB; default 4 KiB */
  chunkSize?: number
  /**
   * links per tree node, 2 to 65,536; default DEFAULT_FANOUT (1,024). Taken by a timeline's first
   * checkpoint and kept in its manifests: a timeline that has a head keeps the head's (another value is
   * CKPT_TIMELINE_CONFIG)
   */
  fanout?: number
}


function copyBytes(r: PreparedRegion): number {
  const s = r.source
  if (s.kind === 'copied') return s.indexes.length * r.geo.chunkSize
  return s.kind === 'buffer' && s.copy ? s.data.length : 0
}

export class Timeline {
  /** fan-outs the timeline was opened with (RegionConfig.fanout), for regions its head does not fix */
  private fanouts: Record<string, number> = {}
  /** head state, owned by the store's pipeline */
  private trees = new Map<string, RegionTree>()
  private headCid: CidBytes | null
  private headManifest: Manifest | undefined
  private latestVtime: bigint | undefined
  /** vtime of the newest checkpoint accepted (queued or done), for order checks at call time; never decreases */
  private acceptedVtime: bigint | undefined
  /**
   * Regions whose last accepted checkpoint failed in the pipeline: dirty hints against them describe
   * content that was never stored, so such checkpoints fail (CKPT_PREVIOUS_FAILED) until a full scan
   * of the region (no `dirty`) sets a new baseline.
   */
  private readonly broken = new Map<string, string>()
  /** span digests of the regions' last full scans (DESIGN.md, "Full scans"), loaded on first use */
  private scanCache: ScanCache | undefined
  /** regions whose tree was offered its leaf file (once per tree) */
  private readonly seeded = new Set<string>()

  /** @internal the timeline's catalog record */
  record: TimelineRecord

  /** vtime of the newest checkpoint committed on this timeline (undefined: none yet) */
  get lastVtime(): bigint | undefined {
    return this.latestVtime
  }

  constructor(
    private readonly ctx: StoreContext,
    record: TimelineRecord,
    head: { cid: CidBytes; vtime: bigint; manifest: Manifest } | undefined,
  ) {
    this.record = record
    this.headCid = head?.cid ?? null
    this.headManifest = head?.manifest
    this.latestVtime = head?.vtime
    this.acceptedVtime = head?.vtime
  }

  get name(): string {
    return this.record.name
  }

  /**
   * The checkpoint this handle's next checkpoint builds on (its parent, and what dirty hints are
   * relative to), or null before the first one.
   */
  head(): CID | null {
    return this.headCid && toCID(this.headCid)
  }

  /** @internal the head as CID bytes (a gc root while the handle is open) */
  headBytes(): CidBytes | null {
    return this.headCid
  }

  /** @internal the timeline's record changed (its policy) */
  recordChanged(rec: TimelineRecord): void {
    this.record = rec
    this.live = undefined
  }

  /** @internal catalog entries were removed (thin, rm): the live list forgets them; the head stays the base of dirty hints */
  checkpointsRemoved(cids: CidBytes[]): void {
    if (!this.live) return
    const gone = new Set(cids.map(cidKey))
    this.live = this.live.filter((e) => !gone.has(cidKey(e.cid)))
  }

  /**
   * The live checkpoints of a timeline that thins itself (vtime order), loaded on first use, kept up
   * to date by the pipeline.
   */
  private live: LiveEntry[] | undefined
  /** the record's policy, parsed once per spec (not at every commit) */
  private parsedPolicy: { spec: string; policy: Policy } | undefined

  private async liveList(): Promise<LiveEntry[]> {
    return (this.live ??= await thinCandidates(this.ctx, this.name))
  }

  /**
   * @internal checkpoints were added to this timeline without it (an import): when its newest is
   * newer than this handle's head, the head moves there and later dirty hints count from it.
   */
  headMoved(cid: CidBytes, vtime: bigint, manifest: Manifest): void {
    if (this.latestVtime !== undefined && vtime <= this.latestVtime) return
    this.headCid = cid
    this.headManifest = manifest
    this.latestVtime = vtime
    if (this.acceptedVtime === undefined || vtime > this.acceptedVtime) this.acceptedVtime = vtime
    this.trees.clear()
    this.seeded.clear()
    for (const r of Object.keys(this.record.regions)) this.broken.set(r, `an import moved timeline ${this.name}'s head to vtime ${vtime}`)
  }

  /**
   * A region's fan-out: the head's (its trees keep their shape: a timeline imported from a bundle, or
   * started before the default changed, may use another), else the one the timeline was opened with,
   * else the default.
   * @internal
   */
  fanoutOf(region: string): number {
    return this.headManifest?.regions[region]?.fanout ?? this.fanouts[region] ?? DEFAULT_FANOUT
  }

  /** @internal fan-outs asked for when the timeline was opened: taken where it has no head yet */
  takeFanouts(fanouts: Record<string, number>): void {
    this.fanouts = { ...this.fanouts, ...fanouts }
  }

  /** The retention policy the timeline thins itself by after each checkpoint (normalised), if any. */
  get policy(): string | undefined {
    return this.record.policy
  }

  get regions(): Record<string, { size: number; chunkSize: number }> {
    return this.record.regions
  }

  /** See the file comment. */
  checkpoint(input: CheckpointInput): PendingCheckpoint {
    const t0 = performance.now()
    let copiedResolve!: () => void
    const copied = new Promise<void>((r) => (copiedResolve = r))
    let promise: Promise<Checkpoint>
    try {
      this.ctx.checkOpen()
      const job = this.validate(input)
      const bytes = job.regions.reduce((n, r) => n + copyBytes(r), 0)
      if (this.ctx.hasRoom(bytes)) {
        this.copy(job)
        copiedResolve()
        const pauseMs = performance.now() - t0
        promise = this.ctx.enqueue(bytes, () => this.run(job, t0, pauseMs))
      } else {
        promise = this.ctx.waitForRoom(bytes).then(() => {
          this.copy(job)
          copiedResolve()
          return this.ctx.enqueue(bytes, () => this.run(job, t0, performance.now() - t0))
        })
      }
    } catch (err) {
      copiedResolve()
      promise = Promise.reject(err)
    }
    return Object.assign(promise, { copied })
  }

  private validate(input: CheckpointInput) {
    if (typeof input !== 'object' || input === null) throw new TypeError('checkpoint input must be an object')
    const vtime = toVtime(input.vtime)
    if (this.acceptedVtime !== undefined && vtime <= this.acceptedVtime) {
      throw new CkptError('CKPT_VTIME_ORDER', `vtime ${vtime} is not after the timeline's last checkpoint (${this.acceptedVtime})`, {
        timeline: this.name,
        vtime: vtime.toString(),
        last: this.acceptedVtime.toString(),
      })
    }
    const regions: PreparedRegion[] = []
    for (const [name, r] of Object.entries(input.regions ?? {})) {
      const spec = this.record.regions[name]
      if (!spec) throw new CkptError('CKPT_UNKNOWN_REGION', `timeline ${this.name} has no region ${name}`, { timeline: this.name, region: name })
      const geo = new Geometry(spec.size, spec.chunkSize, this.fanoutOf(name))
      if (typeof r !== 'object' || r === null) throw new TypeError(`region ${name} input must be an object`)
      if (typeof r.data === 'string') {
        let st: fs.Stats
        try {
          st = fs.statSync(r.data)
        } catch (err) {
          throw (err as NodeJS.ErrnoException).code === 'ENOENT' ? new CkptError('CKPT_NOT_FOUND', `cannot read ${r.data}`, { path: r.data }, err) : fsError(err, `cannot read ${r.data}`, { path: r.data })
        }
        if (st.size !== spec.size) {
          throw new CkptError('CKPT_WRONG_SIZE', `${r.data} has ${st.size} bytes, region ${name} has ${spec.size}`, { region: name, path: r.data })
        }
        if (r.dirty !== undefined) throw new CkptError('CKPT_BAD_ARGUMENT', 'dirty hints are for buffers; a file is always scanned', { region: name })
        regions.push({ name, geo, source: { kind: 'file', path: r.data } })
        continue
      }
      if (!(r.data instanceof Uint8Array)) throw new TypeError(`region ${name} data must be a Uint8Array or a file path`)
      if (r.data.length !== spec.size) {
        throw new CkptError('CKPT_WRONG_SIZE', `region ${name} data has ${r.data.length} bytes, expected ${spec.size}`, { region: name })
      }
      // dirty hints are relative to the previous checkpoint; the first one of a timeline scans everything
      const indexes = r.dirty !== undefined ? dirtyIndexes(name, r.dirty, geo) : undefined
      if (r.previous !== undefined && r.dirty === undefined) throw new CkptError('CKPT_BAD_ARGUMENT', `previous of region ${name} goes with dirty hints`, { region: name })
      const previous = indexes && r.previous !== undefined ? previousOf(name, r.previous, indexes, geo) : undefined
      if (indexes && this.acceptedVtime !== undefined) regions.push({ name, geo, source: { kind: 'copied', data: r.data, indexes, previous } })
      else regions.push({ name, geo, source: { kind: 'buffer', data: r.data, copy: r.stable !== true } })
    }
    const blobs: Record<string, Uint8Array> = {}
    for (const [name, b] of Object.entries(input.blobs ?? {})) {
      checkName('blob', name, REGION_RE)
      if (!(b instanceof Uint8Array)) throw new TypeError(`blob ${name} must be a Uint8Array`)
      blobs[name] = b
    }
    const meta: Record<string, string> = {}
    for (const [k, v] of Object.entries(input.meta ?? {})) {
      if (typeof v !== 'string') throw new TypeError(`meta ${k} must be a string`)
      meta[k] = v
    }
    // what a manifest may hold (SPEC.md, "Manifest"), checked before anything is copied
    const why = metaProblem(meta)
    if (why) throw new CkptError('CKPT_BAD_ARGUMENT', why, { timeline: this.name })
    if (input.scanCache !== undefined && typeof input.scanCache !== 'boolean') throw new TypeError('scanCache must be a boolean')
    this.acceptedVtime = vtime
    return { vtime, regions, blobs, meta, scanCache: input.scanCache !== false }
  }

  /** The synchronous copy: dirty chunks, whole buffers not marked stable, and blobs. */
  private copy(job: Job): void {
    for (const r of job.regions) {
      const s = r.source
      if (s.kind === 'copied') {
        const cs = r.geo.chunkSize
        const out = acquireSlab(s.indexes.length * cs)
        // Buffer#copy is a plain memcpy; TypedArray#set of a fresh subarray costs an object per chunk
        const from = Buffer.from(s.data.buffer, s.data.byteOffset, s.data.byteLength)
        const to = Buffer.from(out.buffer, out.byteOffset, out.byteLength)
        for (let k = 0; k < s.indexes.length; k++) {
          const i = s.indexes[k]!
          from.copy(to, k * cs, i * cs, i * cs + r.geo.chunkLength(i))
        }
        let previous: Uint8Array | undefined
        if (s.previous) {
          previous = acquireSlab(s.indexes.length * cs)
          previous.set(s.previous)
        }
        r.source = { kind: 'copied', data: out, indexes: s.indexes, previous }
        r.owned = true
      } else if (s.kind === 'buffer' && s.copy) {
        const out = acquireSlab(s.data.length)
        out.set(s.data)
        r.source = { kind: 'buffer', data: out, copy: false }
        r.owned = true
      }
    }
    for (const [k, b] of Object.entries(job.blobs)) job.blobs[k] = copyOf(b)
  }

  /** The pipeline part: runs in the store's queue, one checkpoint at a time: ingest, trees, manifest, commit. */
  private async run(job: Job, t0: number, pauseMs: number): Promise<Checkpoint> {
    const { repo } = this.ctx
    const blocks = repo.blocks
    const phases = { queued: performance.now() - t0 - pauseMs, chunks: 0, tree: 0, commit: 0 }
    this.refuseVoidHints(job)
    const isNew = this.headCid === null && this.latestVtime === undefined && !(await repo.getTimeline(this.name))
    try {
      let tp = performance.now()
      const ingested = await this.ingest(job)
      phases.chunks = performance.now() - tp
      tp = performance.now()
      // the chunks' fsync runs on the thread pool while this thread builds the tree nodes
      const early = blocks.syncEarly()
      early.catch(() => {})
      const trees = await this.commitTrees(ingested.trees)
      phases.tree = performance.now() - tp
      const made = this.writeManifest(job, trees.roots)
      const plan = await this.commitOps(job, made, isNew)
      tp = performance.now()
      await early
      await repo.commit(plan.ops)
      if (plan.liveAfter) this.live = plan.liveAfter
      phases.commit = performance.now() - tp
      this.headCid = made.cid
      this.headManifest = made.manifest
      this.latestVtime = job.vtime
      for (const r of job.regions) if (r.source.kind !== 'copied') this.broken.delete(r.name)
      // durable: the spans this scan saw now describe the committed trees
      for (const [name, sp] of ingested.spanScans) {
        const root = trees.roots[name]!.root
        if (root && sp.filled === sp.out.zero.length) (await this.spanCacheFor()).save(name, { ...sp.out, root })
      }
      // after a full scan (every leaf read), the leaf file of the committed tree
      for (const [r, tree] of ingested.trees) {
        const root = trees.roots[r.name]!.root
        const table = r.source.kind !== 'copied' && root ? tree.chunkTable() : undefined
        if (table && root) (await this.spanCacheFor()).saveLeaves(r.name, { size: r.geo.size, chunkSize: r.geo.chunkSize, fanout: r.geo.fanout, root, ...table })
      }
      return {
        cid: toCID(made.cid),
        timeline: this.name,
        vtime: job.vtime,
        stats: {
          ...ingested.stats,
          nodesWritten: trees.nodesWritten,
          nodeBytes: trees.nodeBytes,
          manifestBytes: made.manifestBytes,
          blobBytes: made.blobBytes,
          pauseMs,
          commitMs: performance.now() - t0,
          phases,
          thinned: plan.thinned,
        },
      }
    } catch (err) {
      // drop what this checkpoint staged; the head trees may hold its slots: rebuild them from the
      // last durable head; later dirty hints for its regions are void (see `broken`)
      blocks.abort()
      this.trees.clear()
      this.seeded.clear()
      for (const r of job.regions) this.broken.set(r.name, `an earlier checkpoint of region ${r.name} failed`)
      throw err
    } finally {
      for (const r of job.regions) {
        if (!r.owned || r.source.kind === 'file') continue
        releaseSlab(r.source.data)
        if (r.source.kind === 'copied' && r.source.previous) releaseSlab(r.source.previous)
      }
    }
  }

  /** Dirty hints against a region whose last checkpoint failed describe content never stored: refused. */
  private refuseVoidHints(job: Job): void {
    for (const r of job.regions) {
      if (r.source.kind === 'copied' && this.broken.has(r.name)) {
        const why = this.broken.get(r.name)!
        for (const x of job.regions) if (x.owned && x.source.kind !== 'file') releaseSlab(x.source.data)
        throw new CkptError('CKPT_PREVIOUS_FAILED', `${why}, so dirty hints relative to it are void; checkpoint the region without dirty (full scan)`, {
          timeline: this.name,
          region: r.name,
          vtime: job.vtime.toString(),
        })
      }
    }
  }

  /**
   * Phase 1, ingest: every region's chunks hashed, compressed and stored through one bounded pipeline
   * over all regions' batches (no region waits for another's tail), their tree slots set.
   */
  private async ingest(job: Job): Promise<{ trees: [PreparedRegion, RegionTree][]; stats: IngestStats; spanScans: [string, SpanScan][] }> {
    const { pool } = this.ctx
    const trees: [PreparedRegion, RegionTree][] = []
    const sources: (() => Promise<[ChunkBatch, (b: ChunkBatch) => Promise<void>] | undefined>)[] = []
    const perRegion: IngestStats[] = []
    const spanScans: [string, SpanScan][] = []
    // dirty-hint copies are already in memory: all their batches go out at once, sized across
    // regions so the workers get about two each (a region's share follows its bytes)
    const copiedBytes = job.regions.reduce((n, r) => n + (r.source.kind === 'copied' ? copyBytes(r) : 0), 0)
    const allCopied = job.regions.every((r) => r.source.kind === 'copied')
    const seededBefore = new Map<RegionTree, number>()
    for (const r of job.regions) {
      const tree = this.treeFor(r.name, r.geo)
      seededBefore.set(tree, tree.seededLeaves)
      // a full scan in a process that has not read this tree: its leaves from the leaf file (§18.1)
      if (r.source.kind !== 'copied' && job.scanCache && !this.seeded.has(r.name)) {
        this.seeded.add(r.name)
        const table = (await this.spanCacheFor()).leaves(r.name, r.geo, tree.root)
        if (table) tree.seedChunks(table)
      }
      trees.push([r, tree])
      const s = emptyStats()
      perRegion.push(s)
      const spans = await this.spanScanFor(job, r, tree)
      if (spans) spanScans.push([r.name, spans])
      sources.push(this.regionBatches(r, tree, s, spans, copiedBytes))
    }
    // the regions' batches in turn: a full scan's page region keeps the main thread busy (changed
    // pages placed one by one) while a disk region's scan is all reading and hashing on the workers,
    // so taking them in turn overlaps the two instead of running one after the other
    let turn = 0
    const tagged = new WeakMap<ChunkBatch, (b: ChunkBatch) => Promise<void>>()
    await runBatches(
      pool,
      async () => {
        while (sources.length > 0) {
          const at = turn % sources.length
          const got = await sources[at]!()
          if (got) {
            turn = at + 1
            tagged.set(got[0], got[1])
            return got[0]
          }
          sources.splice(at, 1)
        }
        return undefined
      },
      (b) => tagged.get(b)!(b),
      allCopied ? Infinity : undefined,
    )
    const stats = emptyStats()
    for (const s of perRegion) addStats(stats, s)
    for (const [, tree] of trees) stats.leavesFromFile += tree.seededLeaves - (seededBefore.get(tree) ?? 0)
    return { trees, stats, spanScans }
  }

  /**
   * A full scan of small chunks hashes 64 KiB spans too, and skips the chunks of spans the scan cache
   * holds unchanged for exactly this tree.
   */
  private async spanScanFor(job: Job, r: PreparedRegion, tree: RegionTree): Promise<SpanScan | undefined> {
    if (r.source.kind === 'copied' || r.geo.chunkSize >= SPAN_SIZE) return undefined
    const cache = await this.spanCacheFor()
    const n = spanCount(r.geo.size, SPAN_SIZE)
    return {
      per: SPAN_SIZE / r.geo.chunkSize,
      cached: job.scanCache ? cache.lookup(r.name, r.geo, tree.root) : undefined,
      out: { size: r.geo.size, chunkSize: r.geo.chunkSize, spanSize: SPAN_SIZE, root: new Uint8Array(0), zero: new Uint8Array(n), digests: new Uint8Array(n * 32) },
      filled: 0,
    }
  }

  /** One region's batches, each with the work that ingests it. */
  private regionBatches(
    r: PreparedRegion,
    tree: RegionTree,
    s: IngestStats,
    spans: SpanScan | undefined,
    copiedBytes: number,
  ): () => Promise<[ChunkBatch, (b: ChunkBatch) => Promise<void>] | undefined> {
    const { pool, repo } = this.ctx
    const src = r.source
    // per-batch copies (batches of a caller's non-shared buffer) go back to the pool
    const own = src.kind === 'buffer' && !(src.data.buffer instanceof SharedArrayBuffer)
    const speculative = src.kind === 'copied'
    const work = (b: ChunkBatch) => ingestBatch(pool, repo.blocks, tree, b, s, speculative, spans).finally(() => own && b.data && releaseSlab(b.data))
    let next: () => Promise<ChunkBatch | undefined>
    if (src.kind === 'copied') {
      const parts = Math.max(1, Math.round((pool.threads * 2 * copyBytes(r)) / Math.max(1, copiedBytes)))
      const list = batchesOf(src.data, src.indexes, (i) => r.geo.chunkLength(i), r.geo.chunkSize, parts, src.previous)
      if (pool.threads > 0) markOwnedLeaves(list, r.geo.fanout)
      let n = 0
      next = async () => list[n++]
    } else if (src.kind === 'file') {
      next = fileBatches(src.path, r.geo.size, r.geo.chunkSize, (i) => r.geo.chunkLength(i))
    } else {
      next = bufferBatches(src.data, r.geo)
    }
    return async () => {
      const b = await next()
      return b && [b, work]
    }
  }

  /** Phase 2, trees: each region's changed nodes hashed (on the pool) and written; the new roots. */
  private async commitTrees(trees: [PreparedRegion, RegionTree][]): Promise<{ roots: Record<string, RegionRoot>; nodesWritten: number; nodeBytes: number }> {
    const { pool } = this.ctx
    const roots: Record<string, RegionRoot> = {}
    for (const [name, spec] of Object.entries(this.record.regions)) {
      const prev = this.headManifest?.regions[name]
      roots[name] = { size: spec.size, chunkSize: spec.chunkSize, fanout: this.fanoutOf(name), root: prev?.root ?? null }
    }
    // regions' trees are independent: their node hashing round trips overlap
    const hash = pool.threads > 0 ? (nodes: NodeEntries[]) => hashNodes(pool, nodes) : undefined
    const results = await Promise.all(trees.map(([, tree]) => tree.commit(hash)))
    let nodesWritten = 0
    let nodeBytes = 0
    trees.forEach(([r, tree], k) => {
      nodesWritten += results[k]!.nodesWritten
      nodeBytes += results[k]!.nodeBytes
      roots[r.name]!.root = tree.root
    })
    return { roots, nodesWritten, nodeBytes }
  }

  /** Phase 3, manifest: the blobs and the manifest block, staged in the block store. */
  private writeManifest(job: Job, regions: Record<string, RegionRoot>): { cid: CidBytes; manifest: Manifest; manifestBytes: number; blobBytes: number } {
    const blocks = this.ctx.repo.blocks
    const blobRoots: Record<string, BlobRoot> = { ...(this.headManifest?.blobs ?? {}) }
    let blobBytes = 0
    for (const [name, data] of Object.entries(job.blobs)) {
      const r = storeBlob(blocks, data)
      blobRoots[name] = r.root
      blobBytes += r.stored
    }
    const manifest: Manifest = {
      timeline: this.name,
      lineage: this.record.lineage,
      vtime: job.vtime,
      wall: Date.now(),
      parent: this.headCid,
      meta: job.meta,
      regions,
      blobs: blobRoots,
    }
    const mbytes = encodeManifest(manifest)
    const cid = cidBytes(DAG_CBOR, blake3(mbytes))
    const mc = compressBlock(blocks.compressor, mbytes)
    blocks.put(cid, mc.code, mc.bytes, mbytes.length, { kind: ENTRY_KIND.manifest })
    return { cid, manifest, manifestBytes: mc.bytes.length, blobBytes }
  }

  /**
   * Phase 4's catalog ops: the checkpoint (and a new timeline's record); a timeline with a policy
   * thins itself in the same commit, so no extra sync.
   */
  private async commitOps(job: Job, made: { cid: CidBytes; manifest: Manifest }, isNew: boolean) {
    const repo = this.ctx.repo
    const ops = repo.putCheckpointOps({ timeline: this.name, vtime: job.vtime, cid: made.cid })
    if (isNew) ops.unshift(repo.putTimelineOp(this.record))
    let thinned: LiveEntry[] = []
    let liveAfter: LiveEntry[] | undefined
    if (this.record.policy) {
      const live = [...(await this.liveList()), { vtime: job.vtime, cid: made.cid, protected: isProtected(made.manifest) }]
      if (this.parsedPolicy?.spec !== this.record.policy) this.parsedPolicy = { spec: this.record.policy, policy: parsePolicy(this.record.policy) }
      const keep = planKeep(live, this.parsedPolicy.policy)
      thinned = live.filter((_, i) => !keep[i])
      liveAfter = live.filter((_, i) => keep[i])
      if (thinned.length) ops.push(...dropOps(repo, thinned.map((t) => ({ timeline: this.name, vtime: t.vtime, cid: t.cid }))))
    }
    return { ops, thinned: thinned.length, liveAfter }
  }

  private async spanCacheFor(): Promise<ScanCache> {
    if (this.scanCache) return this.scanCache
    const repo = this.ctx.repo
    const key = (await repo.scanKey()) ?? new Uint8Array(32)
    return (this.scanCache ??= new ScanCache(repo.memory ? undefined : repo.dir, this.name, key))
  }

  private treeFor(name: string, geo: Geometry): RegionTree {
    let t = this.trees.get(name)
    if (!t) {
      t = new RegionTree(this.ctx.repo.blocks, geo, this.headManifest?.regions[name]?.root ?? null)
      this.trees.set(name, t)
    }
    return t
  }
}
