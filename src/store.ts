/**
 * The library's entry point: openStore(dir) and the CkptStore it returns (SPEC.md §Library API).
 */
import { randomBytes } from 'node:crypto'
import os from 'node:os'
import path from 'node:path'
import PQueue from 'p-queue'
import { CID } from 'multiformats/cid'
import { initBlake3 } from '../codecs/blake3.js'
import { cidKey, cidToString, DAG_CBOR, fromCID, parseCid, toCID, type CidBytes } from '../codecs/cid.js'
import { CkptError } from '../codecs/errors.js'
import { decodeManifest, type Manifest } from '../codecs/manifest.js'
import { Repository, type OpenNote, type RepositoryOptions, type TimelineRecord } from '../store/repository.js'
import { WorkerPool } from './pipeline/worker-pool.js'
import { checkName, REGION_RE, toVtime } from './refs.js'
import { Geometry } from './region-tree.js'
import { readChunk, restoreRegion } from './restore.js'
import { diffManifests, type DiffEntry } from './diff.js'
import { Timeline, type RegionConfig } from './timeline.js'
import { uncatalogued } from './lifecycle.js'

export interface OpenOptions extends RepositoryOptions {
  /** worker threads for hashing and compression (default: cores, at most 4; 0 = inline) */
  threads?: number
  /** copies the pipeline may hold before checkpoint() waits (default 256 MiB) */
  maxPendingBytes?: number
}

export interface LogEntry {
  timeline: string
  vtime: bigint
  cid: CID
}

export interface StoreStats {
  timelines: number
  checkpoints: number
  blocks: number
  packs: number
  /** bytes in pack files (entries, headers, footers) */
  packBytes: number
  /** bytes of the LevelDB index directory */
  indexBytes: number
  /** in-memory fingerprint filter */
  filterBytes: number
}

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
  private readonly queue = new PQueue({ concurrency: 1 })
  private readonly timelines = new Map<string, Promise<Timeline>>()
  private readonly manifests = new Map<string, Manifest>()
  private pendingBytes = 0
  private readonly maxPending: number
  private roomWaiters: (() => void)[] = []
  private closing = false

  constructor(
    private readonly repo: Repository,
    opts: OpenOptions,
  ) {
    this.pool = new WorkerPool(opts.threads ?? Math.min(4, Math.max(1, os.availableParallelism())))
    this.maxPending = opts.maxPendingBytes ?? 256 << 20
  }

  get dir(): string {
    return this.repo.dir
  }

  /**
   * What opening the store found and did (SPEC.md §5.2): an index rebuilt from the packs, a reader
   * reading from the packs alone, a format upgrade. Empty when the store opened as it was.
   */
  get openNotes(): readonly OpenNote[] {
    return this.repo.notes
  }

  /** Opened with readOnly (or reading from the packs alone): every write fails with CKPT_READ_ONLY. */
  get readOnly(): boolean {
    return this.repo.readOnly
  }

  /** @internal the pipeline's parts, for Timeline */
  internals(): { repo: Repository; pool: WorkerPool } {
    return { repo: this.repo, pool: this.pool }
  }

  /** @internal */
  checkOpen(): void {
    if (this.closing || this.repo.isClosed) throw new CkptError('CKPT_CLOSED', 'the store is closed')
  }

  /** @internal */
  hasRoom(bytes: number): boolean {
    return this.pendingBytes === 0 || this.pendingBytes + bytes <= this.maxPending
  }

  /** @internal */
  waitForRoom(bytes: number): Promise<void> {
    return new Promise((resolve) => {
      const check = () => {
        if (this.hasRoom(bytes)) resolve()
        else this.roomWaiters.push(check)
      }
      check()
    })
  }

  /** @internal runs fn in the one-at-a-time pipeline, counting its copies as pending until done */
  enqueue<T>(bytes: number, fn: () => Promise<T>): Promise<T> {
    this.pendingBytes += bytes
    return this.queue.add(fn, { throwOnTimeout: true }).finally(() => {
      this.pendingBytes -= bytes
      const w = this.roomWaiters
      this.roomWaiters = []
      for (const f of w) f()
    }) as Promise<T>
  }

  /** @internal runs fn alone in the pipeline (no checkpoint commits meanwhile): imports, repairs */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    this.checkOpen()
    return this.enqueue(0, fn)
  }

  /** @internal a reference as CID bytes */
  resolveCid(ref: string | CID): Promise<CidBytes> {
    return this.resolveBytes(ref)
  }

  /** @internal open timeline handles learn about checkpoints added behind their back (imports) */
  async timelinesChanged(names: Iterable<string>, change: { forget?: CidBytes[]; record?: TimelineRecord } = {}): Promise<void> {
    for (const name of new Set(names)) {
      const pending = this.timelines.get(name)
      if (!pending) continue
      const tl = await pending.catch(() => undefined)
      if (!tl) continue
      if (change.record) tl.recordChanged(change.record)
      if (change.forget) tl.checkpointsRemoved(change.forget)
      else {
        const head = await this.repo.latest(name)
        if (head) tl.headMoved(head.cid, head.vtime, await this.manifestOf(head.cid))
      }
    }
  }

  /** @internal refs changed: open timelines that thin themselves re-read which checkpoints are protected */
  async protectionChanged(): Promise<void> {
    for (const p of this.timelines.values()) {
      const tl = await p.catch(() => undefined)
      tl?.recordChanged(tl.record)
    }
  }

  /** @internal heads of open timeline handles: their trees are what the next dirty hints build on (gc roots) */
  async openHeads(): Promise<CidBytes[]> {
    const out: CidBytes[] = []
    for (const p of this.timelines.values()) {
      const tl = await p.catch(() => undefined)
      const h = tl?.head()
      if (h) out.push(h)
    }
    return out
  }

  /** Drops the checkpoints a retention policy does not keep (SPEC.md §14); `dryRun` only says. */
  thin(timeline: string, policy: string, opts: { dryRun?: boolean } = {}): Promise<import('./lifecycle.js').ThinResult> {
    return import('./lifecycle.js').then((l) => l.thinTimeline(this, timeline, policy, opts))
  }

  /**
   * Checkpoints stored that no timeline lists and whose removal no record explains (SPEC.md §15):
   * gc waits until each is removed (rm of its CID) or catalogued again (repair with adopt).
   */
  uncatalogued(): AsyncIterable<LogEntry> {
    this.checkOpen()
    return uncatalogued(this)
  }

  /** Removes checkpoints from the catalog; gc reclaims the blocks nothing else reaches. */
  rm(refs: (string | CID)[]): Promise<LogEntry[]> {
    return import('./lifecycle.js').then((l) => l.removeCheckpoints(this, refs))
  }

  /** A new timeline branching off a checkpoint (sharing all its blocks). */
  fork(timeline: string, from: string | CID, opts: { policy?: string } = {}): Promise<LogEntry> {
    return import('./lifecycle.js').then((l) => l.forkTimeline(this, timeline, from, opts))
  }

  /** Sets or (null) clears the policy a timeline is thinned by after each checkpoint. */
  setPolicy(timeline: string, policy: string | null): Promise<string | null> {
    return import('./lifecycle.js').then((l) => l.setTimelinePolicy(this, timeline, policy))
  }

  /** A named ref (a pin: thinning keeps its checkpoint, gc its blocks); refer to it as `ref:NAME`. */
  setRef(name: string, ref: string | CID): Promise<unknown> {
    return import('./lifecycle.js').then((l) => l.setRef(this, name, ref))
  }

  deleteRef(name: string): Promise<boolean> {
    return import('./lifecycle.js').then((l) => l.deleteRef(this, name))
  }

  async *refs(): AsyncIterable<{ name: string; cid: CID }> {
    this.checkOpen()
    for await (const r of this.repo.refs()) yield { name: r.name, cid: toCID(r.cid) }
  }

  /** Reclaims blocks no checkpoint, ref or open timeline reaches (SPEC.md §15). */
  gc(opts: import('./gc.js').GcOptions = {}): Promise<import('./gc.js').GcSummary> {
    return import('./gc.js').then((g) => g.collectGarbage(this, opts))
  }

  /**
   * Opens a timeline, creating it with these regions if it does not exist. An existing timeline must
   * be opened with the same regions (or none: then its own are used).
   */
  async timeline(name: string, opts: { regions?: Record<string, RegionConfig>; policy?: string } = {}): Promise<Timeline> {
    this.checkOpen()
    if (this.repo.readOnly) throw new CkptError('CKPT_READ_ONLY', `the store ${this.dir} is open read-only: no checkpoints can be added`, { dir: this.dir })
    checkName('timeline', name)
    const regions = this.regionConfigs(opts.regions)
    // one handle per timeline, even for overlapping calls: the handle holds the vtime order check
    const policy = opts.policy === undefined ? undefined : (await import('./policy.js')).parsePolicy(opts.policy).text
    let pending = this.timelines.get(name)
    let fresh = false
    if (!pending) {
      pending = this.openTimeline(name, opts.regions ? regions : undefined)
      this.timelines.set(name, pending)
      pending.catch(() => this.timelines.delete(name))
      fresh = true
    }
    const tl = await pending
    if (!fresh && opts.regions && JSON.stringify(sortKeys(regions)) !== JSON.stringify(sortKeys(tl.record.regions))) {
      throw new CkptError('CKPT_TIMELINE_CONFIG', `timeline ${name} exists with other regions`, { timeline: name, regions: tl.record.regions })
    }
    if (policy !== undefined && policy !== tl.record.policy) {
      // a timeline not yet stored takes the policy with its record (written with its first checkpoint)
      if (await this.repo.getTimeline(name)) await this.setPolicy(name, policy)
      else tl.recordChanged({ ...tl.record, policy })
    }
    return tl
  }

  private regionConfigs(input: Record<string, RegionConfig> | undefined): Record<string, { size: number; chunkSize: number }> {
    const regions: Record<string, { size: number; chunkSize: number }> = {}
    for (const [r, c] of Object.entries(input ?? {})) {
      checkName('region', r, REGION_RE)
      if (typeof c !== 'object' || c === null) throw new TypeError(`region ${r} config must be an object`)
      const chunkSize = c.chunkSize ?? 4096
      if (!Number.isInteger(chunkSize) || chunkSize < 512 || chunkSize > 1 << 20 || (chunkSize & (chunkSize - 1)) !== 0) {
        throw new CkptError('CKPT_BAD_ARGUMENT', `chunk size of region ${r} must be a power of two from 512 B to 1 MiB`, { region: r, chunkSize })
      }
      if (!Number.isSafeInteger(c.size) || c.size <= 0) throw new CkptError('CKPT_BAD_ARGUMENT', `size of region ${r} must be a positive integer`, { region: r })
      regions[r] = { size: c.size, chunkSize }
    }
    return regions
  }

  private async openTimeline(name: string, regions: Record<string, { size: number; chunkSize: number }> | undefined): Promise<Timeline> {
    const existing = await this.repo.getTimeline(name)
    if (existing) {
      if (regions && JSON.stringify(sortKeys(regions)) !== JSON.stringify(sortKeys(existing.regions))) {
        throw new CkptError('CKPT_TIMELINE_CONFIG', `timeline ${name} exists with other regions`, { timeline: name, regions: existing.regions })
      }
      const head = await this.repo.latest(name)
      return new Timeline(this, existing, head ? { cid: head.cid, vtime: head.vtime, manifest: await this.manifestOf(head.cid) } : undefined)
    }
    if (!regions || Object.keys(regions).length === 0) {
      throw new CkptError('CKPT_NOT_FOUND', `timeline ${name} does not exist (give its regions to create it)`, { timeline: name })
    }
    return new Timeline(this, { name, lineage: newLineage(), regions, created: Date.now() }, undefined)
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

  private async resolveBytes(ref: string | CID): Promise<CidBytes> {
    this.checkOpen()
    const asCid = CID.asCID(ref)
    if (asCid) return fromCID(asCid)
    if (typeof ref !== 'string') throw new TypeError('a reference is a CID or a string')
    // text that parses as a CID is a CID; anything else (even base32-looking) is a timeline name
    if (/^b[a-z2-7]{20,}$/.test(ref)) {
      try {
        return parseCid(ref)
      } catch {}
    }
    if (ref.startsWith('ref:')) {
      const cid = await this.repo.getRef(ref.slice(4))
      if (!cid) throw new CkptError('CKPT_NOT_FOUND', `no ref named ${ref.slice(4)}`, { ref })
      return cid
    }
    const at = ref.lastIndexOf('@')
    const tl = at < 0 ? ref : ref.slice(0, at)
    checkName('timeline', tl)
    const e = at < 0 ? await this.repo.latest(tl) : await this.repo.seek(tl, toVtime(ref.slice(at + 1)))
    if (!e) throw new CkptError('CKPT_NOT_FOUND', `no checkpoint matches ${ref}`, { ref })
    return e.cid
  }

  /** The decoded manifest of a checkpoint. */
  async manifest(ref: string | CID): Promise<Manifest> {
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
   * Materialises a region into `out`: a buffer of the region's size, or a file path (written sparse:
   * holes are not written). Every chunk is re-hashed against its CID on the way.
   */
  async restore(ref: string | CID, region: string, out: Uint8Array | string): Promise<{ bytes: number; chunks: number }> {
    const m = await this.manifest(ref)
    const { root, geo } = this.region(m, region)
    if (out instanceof Uint8Array && out.length !== geo.size) {
      throw new CkptError('CKPT_WRONG_SIZE', `output buffer has ${out.length} bytes, region ${region} has ${geo.size}`, { region })
    }
    if (!(out instanceof Uint8Array) && typeof out !== 'string') throw new TypeError('out must be a Uint8Array or a file path')
    return restoreRegion(this.repo.blocks, this.pool, geo, root, out)
  }

  /** One chunk of a region, read lazily (a zero-filled buffer for a hole). */
  async readChunk(ref: string | CID, region: string, index: number): Promise<Uint8Array> {
    const m = await this.manifest(ref)
    const { root, geo } = this.region(m, region)
    if (!Number.isInteger(index) || index < 0 || index >= geo.chunks) {
      throw new CkptError('CKPT_OUT_OF_RANGE', `chunk ${index} is outside region ${region} (0..${geo.chunks - 1})`, { region, index })
    }
    return readChunk(this.repo.blocks, geo, root, index)
  }

  /** A blob's bytes. */
  async readBlob(ref: string | CID, name: string): Promise<Uint8Array> {
    const m = await this.manifest(ref)
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
    const ma = await this.manifest(a)
    const mb = await this.manifest(b)
    yield* diffManifests(this.repo.blocks, ma, mb)
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

  async stats(): Promise<StoreStats> {
    this.checkOpen()
    const { packStats, dirBytes } = await import('./stats.js')
    let timelines = 0
    let checkpoints = 0
    for await (const t of this.repo.timelines()) {
      timelines++
      for await (const _ of this.repo.checkpoints(t.name)) checkpoints++
    }
    const p = packStats(this.repo.blocks)
    return {
      timelines,
      checkpoints,
      blocks: await this.repo.blocks.count(),
      packs: p.packs,
      packBytes: p.bytes,
      indexBytes: dirBytes(path.join(this.repo.dir, 'index')),
      filterBytes: this.repo.blocks.filterBytes,
    }
  }

  /** Waits for every queued checkpoint, then closes. */
  async close(): Promise<void> {
    if (this.closing) return
    this.closing = true
    await this.queue.onIdle()
    await this.pool.close()
    await this.repo.close()
  }
}

/** A fresh timeline lineage: 128 random bits as 32 hex digits. */
export function newLineage(): string {
  return randomBytes(16).toString('hex')
}

function sortKeys(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : 1)))
}

