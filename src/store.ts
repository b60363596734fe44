/**
 * The library's entry point: openStore(dir) and the CkptStore it returns (SPEC.md, "Library API"; signatures in docs/api.md).
 */
import os from 'node:os'
import path from 'node:path'
import type { CID } from 'multiformats/cid'
import { initBlake3 } from '../codecs/blake3.js'
import { cidKey, cidToString, DAG_CBOR, toCID, type CidBytes } from '../codecs/cid.js'
import { CkptError } from '../codecs/errors.js'
import { decodeManifest, type Manifest } from '../codecs/manifest.js'
import { Repository, type OpenNote, type RepositoryOptions, type TimelineRecord } from '../store/index.js'
import type { StoreContext } from './context.js'
import { diffManifests, type DiffEntry } from './diff.js'
import { firstChange, history, type HistoryEntry, type HistoryOptions, type HistorySelector } from './history.js'
import { collectGarbage, type GcOptions, type GcSummary } from './gc.js'
import { remoteUrl } from './remote.js'
import { gcRemote, thinRemote, type RemoteGcOptions, type RemoteGcSummary } from './remote-gc.js'
import { pull, type PullOptions, type PullSummary } from './remote-pull.js'
import { push, type PushOptions, type PushSummary } from './remote-push.js'
import { verifyRemote, type RemoteFinding, type RemoteVerifyOptions, type RemoteVerifySummary } from './remote-verify.js'
import { deleteRef, forkTimeline, removeCheckpoints, setRef, setTimelinePolicy, thinTimeline, uncatalogued, type ThinResult } from './lifecycle.js'
import { Pipeline } from './pipeline/queue.js'
import { WorkerPool } from './pipeline/worker-pool.js'
import { checkName, toVtime } from './refs.js'
import { Geometry } from './region-tree.js'
import { resolveRef } from './resolve.js'
import { readChunk, restoreFrom, type RegionSink, type RestoreResult } from './restore.js'
import { storeStats, type StoreStats } from './stats.js'
import type { Timeline, RegionConfig } from './timeline.js'
import { TimelineRegistry } from './timelines.js'
import { restoreDifference, type RestoreOptions, type TravelResult } from './travel.js'
import { openCursor, type Cursor, type CursorOptions } from './cursor.js'
import type { LogEntry } from './types.js'

export type { LogEntry } from './types.js'
export type { RestoreResult, RegionSink } from './restore.js'

/**
 * A checkpoint's manifest as the API returns it: its links (parent, region roots, blob chunks) as CID
 * objects. `root` null is a region all zero; `parent` null the first checkpoint of a lineage.
 */
export interface CheckpointManifest {
  timeline: string
  /** the timeline's lineage: 32 lowercase hex digits drawn when it was created (a fork draws its own) */
  lineage: string
  vtime: bigint
  /** wall-clock time of the checkpoint, ms since the Unix epoch */
  wall: number
  parent: CID | null
  meta: Record<string, string>
  regions: Record<string, { size: number; chunkSize: number; fanout: number; root: CID | null }>
  blobs: Record<string, { size: number; chunks: { cid: CID; length: number }[] }>
}

function publicManifest(m: Manifest): CheckpointManifest {
  const regions: CheckpointManifest['regions'] = {}
  for (const [name, r] of Object.entries(m.regions)) regions[name] = { size: r.size, chunkSize: r.chunkSize, fanout: r.fanout, root: r.root && toCID(r.root) }
  const blobs: CheckpointManifest['blobs'] = {}
  for (const [name, b] of Object.entries(m.blobs)) blobs[name] = { size: b.size, chunks: b.chunks.map((c) => ({ cid: toCID(c.cid), length: c.length })) }
  return { timeline: m.timeline, lineage: m.lineage, vtime: m.vtime, wall: m.wall, parent: m.parent && toCID(m.parent), meta: { ...m.meta }, regions, blobs }
}

export interface OpenOptions extends RepositoryOptions {
  /** worker threads for hashing and compression (default: cores, at most 4; 0 = inline) */
  threads?: number
  /** copies the pipeline may hold before checkpoint() waits (default 256 MiB) */
  maxPendingBytes?: number
  /**
   * start the worker threads at open rather than after the first CKPT_INLINE_BYTES of work (a
   * long-lived process that will do large jobs: `ckpt serve`); tasks run inline until they are up
   */
  startWorkers?: boolean
}

export type { StoreStats } from './stats.js'

/** The store's default location when none is given: CKPT_STORE, else ./ckpt-store. */
export function defaultStorePath(): string {
  return process.env.CKPT_STORE ?? path.resolve('ckpt-store')
}

export async function openStore(dir: string = defaultStorePath(), opts: OpenOptions = {}): Promise<CkptStore> {
  if (typeof dir !== 'string' || dir === '') throw new TypeError('store directory must be a non-empty string')
  await initBlake3()
  const repo = await Repository.open(dir, opts)
  return new CkptStore(repo, opts)
}

export class CkptStore {
  private readonly pool: WorkerPool
  private readonly pipeline: Pipeline
  private readonly registry: TimelineRegistry
  private readonly manifests = new Map<string, Manifest>()
  private readonly ctx: StoreContext
  private closing = false

  constructor(
    private readonly repo: Repository,
    opts: OpenOptions,
  ) {
    this.pool = new WorkerPool(opts.threads ?? Math.min(4, Math.max(1, os.availableParallelism())))
    if (opts.startWorkers) this.pool.start()
    this.pipeline = new Pipeline(opts.maxPendingBytes ?? 256 << 20)
    const pipeline = this.pipeline
    const ctx: StoreContext = {
      repo,
      pool: this.pool,
      dir: repo.dir,
      checkOpen: () => this.checkOpen(),
      enqueue: (bytes, fn) => pipeline.enqueue(bytes, fn),
      hasRoom: (bytes) => pipeline.hasRoom(bytes),
      waitForRoom: (bytes) => pipeline.waitForRoom(bytes),
      exclusive: (fn) => {
        this.checkOpen()
        return pipeline.enqueue(0, fn)
      },
      resolve: (ref) => {
        this.checkOpen()
        return resolveRef(repo, ref)
      },
      manifestOf: (cid) => this.manifestOf(cid),
      timelinesChanged: (names, change) => this.registry.changed(names, change),
      protectionChanged: () => this.registry.protectionChanged(),
      openHeads: () => this.registry.heads(),
    }
    this.ctx = ctx
    this.registry = new TimelineRegistry(ctx)
  }

  get dir(): string {
    return this.repo.dir
  }

  /**
   * What opening the store found and did (SPEC.md, "The index from the packs"): an index rebuilt from the packs, a reader
   * reading from the packs alone, a format upgrade. Empty when the store opened as it was.
   */
  get openNotes(): readonly OpenNote[] {
    return this.repo.notes
  }

  /** Opened with readOnly (or reading from the packs alone): every write fails with CKPT_READ_ONLY. */
  get readOnly(): boolean {
    return this.repo.readOnly
  }

  /** @internal what the library's parts share of this store (timelines, bundles, verify, repair, adapters, gc) */
  context(): StoreContext {
    return this.ctx
  }

  private checkOpen(): void {
    if (this.closing || this.repo.isClosed) throw new CkptError('CKPT_CLOSED', 'the store is closed')
  }

  /** Drops the checkpoints a retention policy does not keep (SPEC.md, "Retention policies"); `dryRun` only says. */
  thin(timeline: string, policy: string, opts: { dryRun?: boolean } = {}): Promise<ThinResult> {
    return thinTimeline(this.ctx, timeline, policy, opts)
  }

  /**
   * Checkpoints stored that no timeline lists and whose removal no record explains (SPEC.md, "Garbage collection"):
   * gc waits until each is removed (rm of its CID) or catalogued again (repair with adopt).
   */
  uncatalogued(): AsyncIterable<LogEntry> {
    this.checkOpen()
    return uncatalogued(this.ctx)
  }

  /** Removes checkpoints from the catalog; gc reclaims the blocks nothing else reaches. */
  rm(refs: (string | CID)[]): Promise<LogEntry[]> {
    return removeCheckpoints(this.ctx, refs)
  }

  /** A new timeline branching off a checkpoint (sharing all its blocks). */
  fork(timeline: string, from: string | CID, opts: { policy?: string } = {}): Promise<LogEntry> {
    return forkTimeline(this.ctx, timeline, from, opts)
  }

  /** Sets or (null) clears the policy a timeline is thinned by after each checkpoint. */
  setPolicy(timeline: string, policy: string | null): Promise<string | null> {
    return setTimelinePolicy(this.ctx, timeline, policy)
  }

  /** A named ref (a pin: thinning keeps its checkpoint, gc its blocks); refer to it as `ref:NAME`. */
  setRef(name: string, ref: string | CID): Promise<unknown> {
    return setRef(this.ctx, name, ref)
  }

  deleteRef(name: string): Promise<boolean> {
    return deleteRef(this.ctx, name)
  }

  async *refs(): AsyncIterable<{ name: string; cid: CID }> {
    this.checkOpen()
    for await (const r of this.repo.refs()) yield { name: r.name, cid: toCID(r.cid) }
  }

  /** Reclaims blocks no checkpoint, ref or open timeline reaches (SPEC.md, "Garbage collection"). */
  gc(opts: GcOptions = {}): Promise<GcSummary> {
    return collectGarbage(this.ctx, opts)
  }

  /**
   * Sends checkpoints to a remote (a URL, or the name of one of this store's remotes): the given
   * timelines or checkpoints (and their history on their timeline), by default every timeline
   * (SPEC.md §22.4). A vtime the remote has with another checkpoint is a conflict, reported in the
   * summary; nothing of this store changes.
   */
  push(remote: string, refs?: string[], opts: PushOptions = {}): Promise<PushSummary> {
    this.checkOpen()
    return push(this.ctx, remoteUrl(this.dir, remote), refs, opts)
  }

  /** Takes checkpoints from a remote; `lazy`: only their catalog and index, blocks fetched when read (SPEC.md §22.5). */
  pull(remote: string, refs?: string[], opts: PullOptions = {}): Promise<PullSummary> {
    this.checkOpen()
    return pull(this.ctx, remoteUrl(this.dir, remote), refs, opts)
  }

  /**
   * Checks a remote (a URL, or the name of one of this store's remotes): its format object, index
   * segments, packs' sizes and catalog; with `deep` (or a `sample` of the packs) every block too. Yields
   * every finding, then returns the summary; never changes the remote (SPEC.md §22).
   */
  verifyRemote(remote: string, opts: RemoteVerifyOptions = {}): AsyncGenerator<RemoteFinding, RemoteVerifySummary> {
    this.checkOpen()
    return verifyRemote(remoteUrl(this.dir, remote), opts)
  }

  /** gc of a remote, under its lock, with this store as the cache its tree nodes are read through (SPEC.md §22.7). */
  gcRemote(remote: string, opts: RemoteGcOptions = {}): Promise<RemoteGcSummary> {
    this.checkOpen()
    return gcRemote(this.ctx, remoteUrl(this.dir, remote), opts)
  }

  /** Thins a remote's timeline by a policy: the checkpoints dropped are no longer pulled; gc reclaims them. */
  thinRemote(remote: string, timeline: string, policy: string, opts: { dryRun?: boolean; env?: Record<string, string | undefined> } = {}): Promise<{ kept: { vtime: string; cid: string }[]; dropped: { vtime: string; cid: string }[] }> {
    this.checkOpen()
    return thinRemote(remoteUrl(this.dir, remote), timeline, policy, opts)
  }

  /**
   * Opens a timeline, creating it with these regions if it does not exist. An existing timeline must
   * be opened with the same regions (or none: then its own are used).
   */
  async timeline(name: string, opts: { regions?: Record<string, RegionConfig>; policy?: string } = {}): Promise<Timeline> {
    this.checkOpen()
    if (this.repo.readOnly) throw new CkptError('CKPT_READ_ONLY', `the store ${this.dir} is open read-only: no checkpoints can be added`, { dir: this.dir })
    return this.registry.timeline(name, opts)
  }

  /** Nearest checkpoint of the timeline at or before vtime (one index seek). */
  async seek(timeline: string, vtime: bigint | number): Promise<LogEntry | undefined> {
    this.checkOpen()
    const e = await this.repo.seek(checkName('timeline', timeline), toVtime(vtime))
    return e && { timeline: e.timeline, vtime: e.vtime, cid: toCID(e.cid) }
  }

  /**
   * A checkpoint from a reference: a CID (object or text), `TIMELINE@VTIME` (nearest at or before) or
   * `TIMELINE` (its latest).
   */
  async resolve(ref: string | CID): Promise<CID> {
    return toCID(await this.resolveBytes(ref))
  }

  private resolveBytes(ref: string | CID): Promise<CidBytes> {
    return this.ctx.resolve(ref)
  }

  /** The decoded manifest of a checkpoint, its links as CID objects. */
  async manifest(ref: string | CID): Promise<CheckpointManifest> {
    return publicManifest(await this.manifestOf(await this.resolveBytes(ref)))
  }

  /** the decoded manifest of a checkpoint as the codecs give it (links as CID bytes) */
  private async manifestBytes(ref: string | CID): Promise<Manifest> {
    return this.manifestOf(await this.resolveBytes(ref))
  }

  private async manifestOf(cid: CidBytes): Promise<Manifest> {
    const key = cidKey(cid)
    const hit = this.manifests.get(key)
    if (hit) return hit
    if (cid[1] !== DAG_CBOR) throw new CkptError('CKPT_BAD_MANIFEST', `${cidToString(cid)} is not a dag-cbor block, so not a checkpoint`, { cid: cidToString(cid) })
    const m = decodeManifest(this.repo.blocks.get(cid))
    if (this.manifests.size > 1024) this.manifests.delete(this.manifests.keys().next().value!)
    this.manifests.set(key, m)
    return m
  }

  private readonly geometries = new WeakMap<object, Geometry>()

  private region(m: Manifest, name: string) {
    const r = m.regions[name]
    if (!r) throw new CkptError('CKPT_UNKNOWN_REGION', `checkpoint has no region ${name}`, { region: name })
    let geo = this.geometries.get(r)
    if (!geo) this.geometries.set(r, (geo = new Geometry(r.size, r.chunkSize, r.fanout)))
    return { root: r.root, geo }
  }

  /**
   * Materialises a region into `out`: a buffer of exactly the region's size (holes zero-filled), a file
   * path (a regular file is written sparse: holes are not written; a block device or FIFO gets them
   * as zeros), or a sink written front to back. Every stored chunk is re-hashed against its CID on the
   * way. The result tells the region's size from the bytes of stored chunks written (holes excluded).
   */
  async restore(ref: string | CID, region: string, out: Uint8Array | string | RegionSink): Promise<RestoreResult>
  /**
   * Restore by difference (SPEC.md §23.1): `out` (a buffer, or an existing file or block device of the
   * region's size) holds checkpoint `from`'s region plus the chunks listed in `dirty`; only the chunks
   * whose CIDs differ between `from` and `ref`, and the dirty ones, are written, each verified. `check`
   * hashes the destination's chunks instead and writes every one that is not `ref`'s.
   */
  async restore(ref: string | CID, region: string, out: Uint8Array | string, opts: RestoreOptions): Promise<TravelResult>
  async restore(ref: string | CID, region: string, out: Uint8Array | string | RegionSink, opts?: RestoreOptions): Promise<RestoreResult | TravelResult> {
    if (opts === undefined || (opts.from === undefined && !opts.check && opts.dirty === undefined)) return restoreFrom(this.ctx, ref, region, out)
    if (opts === null || typeof opts !== 'object') throw new CkptError('CKPT_BAD_ARGUMENT', 'restore options must be an object')
    if (!(out instanceof Uint8Array) && typeof out !== 'string') {
      throw new CkptError('CKPT_BAD_ARGUMENT', 'a restore by difference writes into a buffer or a file in place, not a stream')
    }
    return restoreDifference(this.ctx, ref, region, out, opts)
  }

  /**
   * A cursor over a timeline for a debugger (SPEC.md §23.2): a live buffer per region and the current
   * checkpoint's blobs; goto(ref | vtime) writes only what differs from where the buffers stand.
   */
  async cursor(timeline: string, opts: CursorOptions = {}): Promise<Cursor> {
    this.checkOpen()
    return openCursor(this.ctx, timeline, opts)
  }

  /** One chunk of a region, read lazily (a zero-filled buffer for a hole). */
  async readChunk(ref: string | CID, region: string, index: number): Promise<Uint8Array> {
    const m = await this.manifestBytes(ref)
    const { root, geo } = this.region(m, region)
    if (!Number.isInteger(index) || index < 0 || index >= geo.chunks) {
      throw new CkptError('CKPT_OUT_OF_RANGE', `chunk ${index} is outside region ${region} (0..${geo.chunks - 1})`, { region, index })
    }
    return readChunk(this.repo.blocks, geo, root, index)
  }

  /** A blob's bytes. */
  async readBlob(ref: string | CID, name: string): Promise<Uint8Array> {
    const m = await this.manifestBytes(ref)
    const b = m.blobs[name]
    if (!b) throw new CkptError('CKPT_NOT_FOUND', `checkpoint has no blob ${name}`, { blob: name })
    const out = new Uint8Array(b.size)
    let at = 0
    for (const c of b.chunks) {
      const bytes = this.repo.blocks.get(c.cid)
      if (bytes.length !== c.length || at + c.length > b.size) throw new CkptError('CKPT_BAD_MANIFEST', `blob ${name} chunk lengths disagree`, { blob: name })
      out.set(bytes, at)
      at += bytes.length
    }
    if (at !== b.size) throw new CkptError('CKPT_BAD_MANIFEST', `blob ${name} chunks do not add up to its size`, { blob: name })
    return out
  }

  /** Changes from a to b: changed chunk ranges per region (equal subtrees skipped), regions and blobs. */
  async *diff(a: string | CID, b: string | CID): AsyncIterable<DiffEntry> {
    const ma = await this.manifestBytes(a)
    const mb = await this.manifestBytes(b)
    yield* diffManifests(this.repo.blocks, ma, mb)
  }

  /**
   * At which checkpoints of a timeline the content of a chunk (an index) or a byte range
   * ({ offset, length }) of a region changed: the first checkpoint of the window as the baseline, then
   * each change, oldest first (newest first with `reverse`). Found by bisection: O(log n) tree reads
   * per change; `exact` compares every consecutive pair instead (SPEC.md §23.3).
   */
  history(timeline: string, region: string, sel: HistorySelector, opts: HistoryOptions = {}): AsyncIterable<HistoryEntry> {
    this.checkOpen()
    return history(this.ctx, timeline, region, sel, opts)
  }

  /** The first checkpoint after `after` (vtime) whose selected bytes differ from those at `after`, by bisection (or `exact`). */
  firstChange(timeline: string, region: string, sel: HistorySelector, opts: Omit<HistoryOptions, 'reverse' | 'limit'> = {}): Promise<HistoryEntry | undefined> {
    this.checkOpen()
    return firstChange(this.ctx, timeline, region, sel, opts)
  }

  /** Checkpoints of one timeline (or all), oldest first. */
  async *log(timeline?: string, opts: { reverse?: boolean; limit?: number } = {}): AsyncIterable<LogEntry> {
    this.checkOpen()
    const names: string[] = []
    if (timeline !== undefined) names.push(checkName('timeline', timeline))
    else for await (const t of this.repo.timelines()) names.push(t.name)
    for (const n of names) {
      for await (const e of this.repo.checkpoints(n, opts)) yield { timeline: n, vtime: e.vtime, cid: toCID(e.cid) }
    }
  }

  async listTimelines(): Promise<TimelineRecord[]> {
    this.checkOpen()
    const out: TimelineRecord[] = []
    for await (const t of this.repo.timelines()) out.push(t)
    return out
  }

  /** Which timeline and vtime a checkpoint CID belongs to, if it is in the catalog. */
  async locate(cid: CID | string): Promise<{ timeline: string; vtime: bigint } | undefined> {
    return this.repo.checkpointRecord(await this.resolveBytes(cid))
  }

  /** Counts and sizes, with the logical bytes of the catalog's checkpoints and the dedup ratio (one manifest read per checkpoint). */
  async stats(): Promise<StoreStats> {
    this.checkOpen()
    return storeStats(this.repo, (cid) => this.manifestOf(cid))
  }

  /** Waits for every queued checkpoint, then closes. */
  async close(): Promise<void> {
    if (this.closing) return
    this.closing = true
    await this.pipeline.onIdle()
    await this.pool.close()
    await this.repo.close()
  }
}
