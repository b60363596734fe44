/**
 * The store at rest: lock, LevelDB (index + catalog + refs + metadata) and packs, behind one object.
 * Knows CIDs, bytes, timelines and vtimes; nothing about emulators or tree shapes.
 *
 * Directory layout (SPEC.md §4): CKPT (format marker), index/ (LevelDB), packs/, lock.json.
 *
 * The packs are the truth, the index a cache of them (SPEC.md §7): every commit ends with a catalog
 * record in the packs, so an index that is missing, empty or behind the packs is rebuilt from them by
 * the next writer, and a reader that cannot use the index (a read-only medium, a full disk, another
 * user's store, damage) builds one in memory instead. Opening never moves a pack, nor deletes one
 * that may hold anything acknowledged (a writer cuts torn tails and deletes leftover packs: at most
 * the commit a crash interrupted).
 */
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { blake3 } from '../codecs/blake3.js'
import { encodeRecord, type CatalogOp, type TimelineRecord, type RegionSpec } from '../codecs/catalog-record.js'
import { CID_LENGTH, cidBytes, DAG_CBOR, type CidBytes } from '../codecs/cid.js'
import { compressBlock } from '../codecs/compress.js'
import { CkptError, fsError } from '../codecs/errors.js'
import { RemoteBlocks } from './remote/remote-blocks.js'
import { BlockStore, type BlockStoreOptions } from './block-store.js'
import { catalogKvOps, catalogSnapshotOps } from './catalog.js'
import {
  blockRange,
  checkpointKey,
  checkpointKeyVtime,
  checkpointRange,
  checkpointRecordKey,
  dec,
  enc,
  jsonValue,
  manifestKey,
  META_CATALOG,
  META_NEEDS_SNAPSHOT,
  META_SCAN_KEY,
  metaKey,
  packRange,
  parseJson,
  refKey,
  refRange,
  removedKey,
  timelineKey,
  timelineRange,
} from './keys.js'
import type { KV, KVOp } from './kv.js'
import { LevelKV } from './level-kv.js'
import { clearHolder, writeHolder } from './lock.js'
import { MemoryKV } from './memory-kv.js'
import type { PackIO } from './pack-io.js'
import { diskBackend } from './backend.js'
import type { Backend, Catalog, IndexEntry } from './interface.js'
import { manifestOf, packHealth, rebuildFromPacks, type RebuildSummary } from './rebuild.js'
import { adoptManifests, describeState, openIndex, openMarker, readCatalogMeta, rebuildIndex, rebuildInPlace, STORE_VERSION, writeMarker } from './open.js'
import { decodeLocation, decodePackRecord, encodeLocation, encodePackRecord, type BlockLocation, type PackRecord } from './block-store.js'
import { allCheckpointsRange, blockKeyCid, checkpointKeyTimeline, manifestRange, packKey, packKeyNo, recordKey } from './keys.js'
import { collectPacks, type PackGcOptions, type PackGcSummary } from './pack-gc.js'
import { ENTRY_HEADER_SIZE, ENTRY_KIND } from '../codecs/pack-format.js'

export { STORE_FORMAT, STORE_VERSION, STORE_VERSIONS } from './open.js'

export type { TimelineRecord, RegionSpec, CatalogOp }

export interface CheckpointEntry {
  timeline: string
  vtime: bigint
  cid: CidBytes
}

export interface RepositoryOptions extends BlockStoreOptions {
  /** where packs and index live: diskBackend() (the default) or memoryBackend() (tests: `dir` is then only a label) */
  backend?: Backend
  /** fail instead of creating a missing store */
  mustExist?: boolean
}

/** What opening the store found and did, for the caller to tell its user (SPEC.md §7.2). */
export interface OpenNote {
  /**
   * index-rebuilt: a writer rebuilt a missing, empty or stale index from the packs;
   * packs-alone: a reader could not use the index and reads from the packs alone (an index built in memory);
   * upgraded: a format-1 store was upgraded to format 2 (its catalog written to the packs)
   */
  kind: 'index-rebuilt' | 'packs-alone' | 'upgraded'
  message: string
  /** why the index was not used: missing, empty, stale, rebuilding, corrupt, unavailable */
  reason?: string
  /** the CKPT_* code of the failure that made a reader read from the packs alone */
  code?: string
  rebuild?: RebuildSummary
}


/** Catalog ops per snapshot part: a part stays a few hundred KiB. */
const SNAPSHOT_PART_OPS = 4096

export class Repository implements Catalog {
  private closed = false
  /** the last commit's seq in the record stream (0: none yet; undefined: a format-1 store) */
  private catalogSeq: number | undefined
  private snapshotSeq = 0
  /** what the open found and did */
  readonly notes: OpenNote[] = []
  /** pack files no index record names that hold nothing the index lacks (crash leftovers) */
  leftovers: number[] = []
  /** pack bytes of the catalog records this process wrote (entries, headers included) */
  recordBytesWritten = 0

  private constructor(
    readonly dir: string,
    private readonly kv: KV,
    readonly blocks: BlockStore,
    readonly memory: boolean,
    /** 'index': the LevelDB index; 'packs': an index built in memory from the packs (read-only) */
    readonly source: 'index' | 'packs',
    readonly readOnly: boolean,
    private formatVersion: number,
    private readonly ownsLock: boolean,
  ) {}

  /** The store format of the directory (1 or 2). */
  get format(): number {
    return this.formatVersion
  }

  /** The catalog's position in the record stream: the last commit's seq, and the newest snapshot's. */
  get catalogPosition(): { seq: number; snapshot: number } | undefined {
    return this.catalogSeq === undefined ? undefined : { seq: this.catalogSeq, snapshot: this.snapshotSeq }
  }

  static async open(dir: string, opts: RepositoryOptions = {}): Promise<Repository> {
    const backend = opts.backend ?? diskBackend()
    if (!backend.durable) {
      const kv = await backend.index(dir, { create: true })
      const blocks = await BlockStore.open(kv, backend.packs(dir, { readOnly: false }), opts)
      const repo = new Repository(dir, kv, blocks, true, 'index', false, STORE_VERSION, false)
      repo.catalogSeq = 0
      return repo
    }
    const readOnly = opts.readOnly === true
    const { version, created } = openMarker(dir, opts.mustExist === true || readOnly)
    const indexDir = path.join(dir, 'index')
    const openPacks = () => backend.packs(dir, { readOnly: true })
    let { kv, problem } = await openIndex(dir, version, created, readOnly, openPacks)
    const state = problem?.details.state as string | undefined
    if (problem && readOnly) {
      // a reader never writes: whatever kept it from the index, it reads the packs themselves
      await kv?.close()
      return Repository.fromPacks(dir, opts, version, problem)
    }
    if (problem && (state === 'corrupt' || state === 'unavailable')) {
      await kv?.close()
      if (state === 'corrupt') {
        throw new CkptError('CKPT_BAD_INDEX', `${problem.message}; rebuild it from the packs: ckpt repair --store ${dir} --rebuild-index`, { dir, state, advice: `ckpt repair --store ${dir} --rebuild-index` }, problem)
      }
      const advice = problem.code === 'CKPT_NO_SPACE' ? 'free space on the disk, then retry' : problem.code === 'CKPT_PERMISSION' ? 'run as a user who may write the store (read-only commands work as any user who may read it)' : problem.code === 'CKPT_READ_ONLY' ? 'the store is on a read-only medium: only read-only commands work' : 'check the disk, then retry'
      throw new CkptError(problem.code, `${problem.message}; ${advice}`, { ...problem.details, advice }, problem)
    }
    let rebuilt: RebuildSummary | undefined
    if (problem) {
      // missing, empty, stale or half-rebuilt: a writer rebuilds it from the packs, in place, keeping
      // what the old catalog knows that the records do not (a stale index is still a readable one)
      if (!kv) kv = await LevelKV.open(indexDir, { create: true })
      try {
        const old = state === 'stale' || state === 'empty' ? (await catalogSnapshotOps(kv)).ops : undefined
        rebuilt = await rebuildInPlace(kv, openPacks, version, { old })
      } catch (err) {
        await kv.close()
        throw err
      }
    }
    if (!readOnly) {
      try {
        writeHolder(dir)
      } catch (err) {
        await kv!.close()
        throw fsError(err, `cannot write ${path.join(dir, 'lock.json')}`, { dir })
      }
      // temporary sets of an export or import that did not end (a crash): we hold the lock now
      fs.rmSync(path.join(dir, 'tmp'), { recursive: true, force: true })
    }
    const repo = await Repository.assemble(dir, kv!, backend.packs(dir, { readOnly }), opts, 'index', version, !readOnly)
    if (rebuilt) {
      repo.notes.push({
        kind: 'index-rebuilt',
        reason: state,
        message: `the index was ${describeState(state, problem!)}: rebuilt from ${rebuilt.packs} pack${rebuilt.packs === 1 ? '' : 's'} (${rebuilt.checkpoints} checkpoint${rebuilt.checkpoints === 1 ? '' : 's'}, ${rebuilt.timelines} timeline${rebuilt.timelines === 1 ? '' : 's'}, ${rebuilt.refs} ref${rebuilt.refs === 1 ? '' : 's'})${rebuilt.uncovered.length ? `; ${rebuilt.uncovered.length} checkpoint${rebuilt.uncovered.length === 1 ? '' : 's'} found in the packs that no catalog record covers (ckpt verify lists them)` : ''}`,
        rebuild: rebuilt,
      })
    }
    if (readOnly) return repo
    try {
      if (repo.formatVersion < STORE_VERSION) await repo.upgrade()
      // a rebuild put into the catalog what no record holds (kept from the old index, adopted): the
      // packs get it now, as a snapshot
      if ((await kv!.get(metaKey(META_NEEDS_SNAPSHOT))) !== undefined) {
        await repo.writeSnapshot()
        await kv!.batch([{ type: 'del', key: metaKey(META_NEEDS_SNAPSHOT) }], { sync: true })
      }
    } catch (err) {
      await repo.close()
      throw err
    }
    return repo
  }

  /**
   * `repair --rebuild-index` (SPEC.md §16.2): the index rebuilt from the packs, explicitly (see
   * rebuildIndex in open.ts).
   */
  static rebuild(dir: string, opts: { adopt?: boolean; onProgress?: (done: number, total: number) => void } = {}): ReturnType<typeof rebuildIndex> {
    return rebuildIndex(dir, opts)
  }

  /** A read-only repository over an index built in memory from the packs (SPEC.md §7.2). */
  private static async fromPacks(dir: string, opts: RepositoryOptions, version: number, why: CkptError): Promise<Repository> {
    const io = (opts.backend ?? diskBackend()).packs(dir, { readOnly: true })
    const kv = new MemoryKV()
    const summary = await rebuildFromPacks(io, kv)
    if (summary.legacy) await adoptManifests(kv, io)
    const repo = await Repository.assemble(dir, kv, io, { ...opts, readOnly: true }, 'packs', version, false)
    const reason = why.details.state as string | undefined
    repo.notes.push({
      kind: 'packs-alone',
      reason,
      code: why.code,
      message: `the index could not be used (${why.code}: ${why.message}); read from the ${summary.packs} pack${summary.packs === 1 ? '' : 's'} alone${
        reason === 'unavailable' ? '' : reason === 'corrupt' ? `; rebuild the index: ckpt repair --store ${dir} --rebuild-index` : '; the next command that writes to the store rebuilds the index (or: ckpt repair --rebuild-index)'
      }`,
      rebuild: summary,
    })
    return repo
  }

  private static async assemble(dir: string, kv: KV, io: PackIO, opts: RepositoryOptions, source: 'index' | 'packs', version: number, ownsLock: boolean): Promise<Repository> {
    let blocks: BlockStore
    try {
      blocks = await BlockStore.open(kv, io, opts)
      blocks.remote = RemoteBlocks.load(dir, { readOnly: opts.readOnly === true })
    } catch (err) {
      // release the index (and its lock) so the caller may retry or repair
      io.close()
      await kv.close()
      if (ownsLock) clearHolder(dir)
      throw err
    }
    const repo = new Repository(dir, kv, blocks, false, source, opts.readOnly === true || source === 'packs', version, ownsLock)
    const meta = await readCatalogMeta(kv)
    if (meta) {
      repo.catalogSeq = meta.seq
      repo.snapshotSeq = meta.snapshot
    } else if (version >= 2) repo.catalogSeq = 0 // a new store: no commit yet
    if (source === 'index' && version >= 2) {
      repo.leftovers = packHealth(io, blocks.packRecords(), meta?.seq ?? 0).leftovers
      // a writer deletes them before it commits anything, as it cuts torn tails: each holds at most the
      // commit a crash interrupted (never acknowledged), and that commit's seq is the next one's
      if (ownsLock) {
        for (const n of repo.leftovers) blocks.io.remove(n)
        repo.leftovers = []
      }
    }
    return repo
  }

  /**
   * Format 1 → 2: the open pack of format 1 is sealed (entries of kinds go to new packs only), every
   * manifest in the index is listed ('M'), and the whole catalog is written to the packs as a
   * snapshot. Manifests no catalog entry names are *not* taken for removed ones: a format-1 store
   * cannot tell a thinned checkpoint from one a damaged index lost, so verify names them and gc
   * waits until they are catalogued again (repair --rebuild-index --adopt) or removed (ckpt rm
   * --uncatalogued). Only then does the marker say 2; a crash before leaves a store that upgrades
   * again.
   */
  private async upgrade(): Promise<void> {
    if (this.catalogSeq === undefined) {
      await this.blocks.maybeSeal(true)
      const ops: KVOp[] = []
      for await (const [k] of this.kv.iterate(blockRange)) {
        const cid = Uint8Array.prototype.slice.call(k, 1) as CidBytes
        if (cid[1] !== DAG_CBOR) continue
        const loc = this.blocks.locate(cid)
        if (!loc) continue
        let m
        try {
          m = manifestOf({ cid, codec: loc.codec, rawLength: loc.rawLength, payload: this.blocks.readAt(cid, loc) })
        } catch {
          continue // damage: verify reports it
        }
        if (!m) continue
        ops.push({ type: 'put', key: manifestKey(cid), value: new Uint8Array(0) })
      }
      await this.kv.batch(ops)
      this.catalogSeq = 0
      await this.writeSnapshot()
    }
    const from = this.formatVersion
    writeMarker(this.dir, STORE_VERSION)
    this.formatVersion = STORE_VERSION
    // 2 -> 3 -> 4 change nothing stored: they tell builds that read only form-1 node deltas, or no
    // chunk deltas, to keep out
    const what = [from < 2 ? 'its catalog is now also written in the packs' : '', from < 3 ? 'tree node deltas may be written in form 2' : '', 'chunks may be stored as deltas of their previous version'].filter(Boolean).join(', ')
    this.notes.push({ kind: 'upgraded', message: `the store was upgraded from format ${from} to ${STORE_VERSION}: ${what} (builds before format ${STORE_VERSION} refuse to open it)` })
  }

  /**
   * Writes the whole catalog to the packs as a snapshot (parts of one seq), so that older records
   * are no longer needed to rebuild it (gc drops them when it rewrites their packs).
   */
  async writeSnapshot(): Promise<number> {
    this.check()
    const { ops } = await catalogSnapshotOps(this.kv)
    const seq = this.nextSeq()
    const parts = Math.max(1, Math.ceil(ops.length / SNAPSHOT_PART_OPS))
    const at = Date.now()
    try {
      const placed: KVOp[] = []
      for (let p = 0; p < parts; p++) {
        const loc = this.stageRecord(encodeRecord({ seq, at, ops: ops.slice(p * SNAPSHOT_PART_OPS, (p + 1) * SNAPSHOT_PART_OPS), snapshot: { part: p, parts } }))
        placed.push({ type: 'put', key: recordKey(seq, p), value: encodeLocation(loc) })
      }
      const blockOps = await this.blocks.prepareCommit()
      await this.kv.batch([...blockOps, ...placed, this.catalogMetaOp(seq, seq)], { sync: true })
    } catch (err) {
      this.blocks.abort()
      throw err
    }
    this.blocks.committed()
    this.catalogSeq = seq
    this.snapshotSeq = seq
    await this.blocks.maybeSeal()
    return seq
  }
  private check(): void {
    if (this.closed) throw new CkptError('CKPT_CLOSED', 'the store is closed')
  }

  get isClosed(): boolean {
    return this.closed
  }

  /**
   * One atomic, durable step: staged blocks and the commit's catalog record (its catalog ops, SPEC.md
   * §7.1) are synced to their pack, then their index entries and the ops' index operations go into
   * one synced LevelDB batch. On failure nothing becomes visible.
   */
  async commit(catalogOps: readonly CatalogOp[] = []): Promise<void> {
    return this.commitWith([], { catalogOps })
  }

  /**
   * commit() with index operations of the caller's own (gc: deletions), and packs whose records go
   * in the same batch (gc: their live entries were copied into the staged transaction).
   */
  async commitWith(extra: KVOp[], opts: { dropPacks?: number[]; catalogOps?: readonly CatalogOp[] } = {}): Promise<void> {
    this.check()
    if (this.readOnly) throw new CkptError('CKPT_READ_ONLY', `the store ${this.dir} is open read-only`, { dir: this.dir })
    const drop = opts.dropPacks ?? []
    const catalogOps = opts.catalogOps ?? []
    const nothing = this.blocks.stagedEntryCount === 0 && catalogOps.length === 0 && extra.length === 0 && drop.length === 0
    if (nothing) return
    let seq: number | undefined
    try {
      const kvOps = await catalogKvOps(syncReader(this.kv), catalogOps)
      // every commit ends with its record (the commit marker: blocks alone get one with no ops)
      seq = this.nextSeq()
      const loc = this.stageRecord(encodeRecord({ seq, at: Date.now(), ops: [...catalogOps] }))
      const ops = await this.blocks.prepareCommit()
      ops.push({ type: 'put', key: recordKey(seq), value: encodeLocation(loc) })
      for (const n of drop) ops.push({ type: 'del', key: packKey(n) })
      for (const op of kvOps) ops.push(op)
      for (const op of extra) ops.push(op)
      ops.push(this.catalogMetaOp(seq, this.snapshotSeq))
      await this.kv.batch(ops, { sync: true })
    } catch (err) {
      this.blocks.abort()
      throw err
    }
    this.catalogSeq = seq
    this.blocks.committed()
    for (const n of drop) this.blocks.forgetPack(n)
    await this.blocks.maybeSeal()
  }

  private nextSeq(): number {
    if (this.catalogSeq === undefined) throw new CkptError('CKPT_VERSION', 'a format-1 store must be upgraded before it is written (open it for writing)')
    return this.catalogSeq + 1
  }

  private stageRecord(bytes: Uint8Array): BlockLocation {
    const c = compressBlock(this.blocks.compressor, bytes)
    this.recordBytesWritten += ENTRY_HEADER_SIZE + c.bytes.length
    this.blocks.put(cidBytes(DAG_CBOR, blake3(bytes)), c.code, c.bytes, bytes.length, { kind: ENTRY_KIND.record })
    return this.blocks.lastStaged!
  }

  private catalogMetaOp(seq: number, snapshot: number): KVOp {
    return { type: 'put', key: metaKey(META_CATALOG), value: jsonValue({ seq, snapshot }) }
  }

  async getTimeline(name: string): Promise<TimelineRecord | undefined> {
    this.check()
    const v = await this.kv.get(timelineKey(name))
    return v === undefined ? undefined : parseJson<TimelineRecord>(v)
  }

  /** The catalog op that creates or updates a timeline record. */
  putTimelineOp(rec: TimelineRecord): CatalogOp {
    return { op: 'timeline', record: rec }
  }

  /** Every timeline record, by name; `skipMalformed`: records that do not parse are passed over (verify reports them). */
  async *timelines(opts: { skipMalformed?: boolean } = {}): AsyncIterable<TimelineRecord> {
    this.check()
    for await (const [, v] of this.kv.iterate(timelineRange)) {
      let rec: TimelineRecord
      try {
        rec = parseJson<TimelineRecord>(v)
      } catch (err) {
        if (opts.skipMalformed) continue
        throw err
      }
      yield rec
    }
  }

  /** The catalog op that makes a checkpoint visible (its record is kept if it has one elsewhere). */
  putCheckpointOps(e: CheckpointEntry): CatalogOp[] {
    return [{ op: 'add', timeline: e.timeline, vtime: e.vtime, cid: e.cid }]
  }

  /** The catalog op that removes a checkpoint entry (its manifest is recorded as removed until gc collects it). */
  dropCheckpointOp(e: CheckpointEntry): CatalogOp {
    return { op: 'drop', timeline: e.timeline, vtime: e.vtime, cid: e.cid }
  }

  /** Nearest checkpoint at or before vtime: one LevelDB seek, O(log n). */
  async seek(timeline: string, vtime: bigint): Promise<CheckpointEntry | undefined> {
    this.check()
    for await (const e of this.checkpoints(timeline, { lte: vtime, reverse: true, limit: 1 })) return e
    return undefined
  }

  async latest(timeline: string): Promise<CheckpointEntry | undefined> {
    return this.seek(timeline, 0xffffffffffffffffn)
  }

  async *checkpoints(
    timeline: string,
    opts: { gte?: bigint; lte?: bigint; reverse?: boolean; limit?: number } = {},
  ): AsyncIterable<CheckpointEntry> {
    this.check()
    const r = checkpointRange(timeline)
    const range = {
      gte: opts.gte === undefined ? r.gte : checkpointKey(timeline, opts.gte),
      lte: opts.lte === undefined ? r.lte : checkpointKey(timeline, opts.lte),
      reverse: opts.reverse,
      limit: opts.limit,
    }
    for await (const [k, v] of this.kv.iterate(range)) {
      if (v.length !== CID_LENGTH) throw new CkptError('CKPT_BAD_INDEX', `catalog entry of ${timeline} holds no CID`, { timeline })
      yield { timeline, vtime: checkpointKeyVtime(k), cid: v }
    }
  }

  async checkpointRecord(cid: CidBytes): Promise<{ timeline: string; vtime: bigint } | undefined> {
    this.check()
    const v = await this.kv.get(checkpointRecordKey(cid))
    if (v === undefined) return undefined
    const r = parseJson<{ timeline: string; vtime: string }>(v)
    return { timeline: r.timeline, vtime: BigInt(r.vtime) }
  }

  async getRef(name: string): Promise<CidBytes | undefined> {
    this.check()
    return this.kv.get(refKey(name))
  }

  /** The catalog op that sets (or, with null, deletes) a named ref. */
  setRefOp(name: string, cid: CidBytes | null): CatalogOp {
    return { op: 'ref', name, cid }
  }

  private scanKeyValue: Uint8Array | undefined

  /**
   * The store's scan key (SPEC.md §18): 32 random bytes in the index ('m' scan-key) that key the
   * scan cache files' checksums. Made by the first writer that needs one; undefined for a reader of
   * a store that has none (it then trusts no cache file). A rebuilt index gets a new one: the old
   * files are then ignored (they only cost the hashing they would have saved).
   */
  async scanKey(opts: { create?: boolean } = {}): Promise<Uint8Array | undefined> {
    if (this.scanKeyValue) return this.scanKeyValue
    const v = await this.kv.get(metaKey(META_SCAN_KEY))
    if (v) {
      try {
        const hex = parseJson<{ key?: unknown }>(v).key
        if (typeof hex === 'string' && /^[0-9a-f]{64}$/.test(hex)) return (this.scanKeyValue = Buffer.from(hex, 'hex'))
      } catch {}
    }
    if (this.readOnly || opts.create === false) return undefined
    const key = randomBytes(32)
    await this.kv.batch([{ type: 'put', key: metaKey(META_SCAN_KEY), value: jsonValue({ key: key.toString('hex') }) }])
    return (this.scanKeyValue = key)
  }

  // ------------------------------------------------------------------------ gc's questions

  /**
   * Every catalog entry (in key order), for the walks that start from the roots (gc, verify): a key
   * or value that does not read as an entry comes with `malformed` (its key in hex) instead.
   */
  async *catalogEntries(): AsyncIterable<CheckpointEntry | { malformed: string }> {
    this.check()
    for await (const [k, v] of this.kv.iterate(allCheckpointsRange)) {
      const timeline = checkpointKeyTimeline(k)
      if (timeline === undefined || v.length !== CID_LENGTH) yield { malformed: Buffer.from(k).toString('hex') }
      else yield { timeline, vtime: checkpointKeyVtime(k), cid: Uint8Array.prototype.slice.call(v) as CidBytes }
    }
  }

  /** Every well-formed checkpoint of every timeline, in index order (catalogEntries() shows the malformed ones too). */
  async *iterateCheckpoints(): AsyncIterable<CheckpointEntry> {
    for await (const e of this.catalogEntries()) if (!('malformed' in e)) yield e
  }

  /** Removes checkpoint entries in one commit (their manifests are recorded as removed until gc collects them). */
  async dropCheckpoints(entries: readonly CheckpointEntry[]): Promise<void> {
    await this.commit(entries.map((e) => this.dropCheckpointOp(e)))
  }

  /** Points a ref at a CID, in one commit. */
  async setRef(name: string, cid: CidBytes): Promise<void> {
    await this.commit([this.setRefOp(name, cid)])
  }

  /** Deletes a ref, in one commit (nothing when it does not exist). */
  async deleteRef(name: string): Promise<void> {
    if ((await this.getRef(name)) === undefined) return
    await this.commit([this.setRefOp(name, null)])
  }

  /** Every block of the index with its location, in index order (entries that do not decode are skipped: verify reports them). */
  async *iterateIndex(): AsyncIterable<IndexEntry> {
    this.check()
    for await (const [k, v] of this.kv.iterate(blockRange)) {
      if (k.length !== 1 + CID_LENGTH || v.length !== 22) continue
      yield { cid: blockKeyCid(Uint8Array.prototype.slice.call(k)) as CidBytes, loc: decodeLocation(v) }
    }
  }

  /**
   * Pack files gc cannot judge (SPEC.md §14): set aside by an older version (packs/orphaned), or not
   * listed by the index and not a proven leftover. Paths.
   */
  unlistedPacks(): string[] {
    const io = this.blocks.io
    const records = this.blocks.packRecords()
    const unknown = io.list().filter((n) => !records.has(n) && !this.leftovers.includes(n))
    return [...unknown.map((n) => io.describe(n)), ...io.quarantined()]
  }

  /** Manifests nothing reaches (by `isLive`) whose removal no record explains: how many, and the first few. */
  async unexplainedManifests(isLive: (cid: CidBytes) => boolean): Promise<{ count: number; first: CidBytes[] }> {
    const first: CidBytes[] = []
    let count = 0
    for await (const cid of this.manifests()) {
      if (isLive(cid) || (await this.isRemoved(cid))) continue
      count++
      if (first.length < 5) first.push(cid)
    }
    return { count, first }
  }

  /** The pack side of gc once the caller marked what is live (SPEC.md §14; store/pack-gc.ts). */
  async collectPacks(opts: PackGcOptions): Promise<PackGcSummary> {
    this.check()
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const repo = this
    return collectPacks(
      {
        kv: this.kv,
        blocks: this.blocks,
        get catalogPosition() {
          return repo.catalogPosition
        },
        get recordBytesWritten() {
          return repo.recordBytesWritten
        },
        get leftovers() {
          return repo.leftovers
        },
        set leftovers(v: number[]) {
          repo.leftovers = v
        },
        writeSnapshot: () => this.writeSnapshot(),
        commitWith: (extra, o) => this.commitWith(extra, o),
      },
      opts,
    )
  }

  /** Every block the index lists as a checkpoint manifest ('M'), streamed. */
  async *manifests(): AsyncIterable<CidBytes> {
    this.check()
    for await (const [k] of this.kv.iterate(manifestRange)) yield Uint8Array.prototype.slice.call(k, 1) as CidBytes
  }

  /** Whether a checkpoint is in the catalog where its checkpoint record says (an entry there holds it). */
  async isCatalogued(cid: CidBytes): Promise<boolean> {
    const rec = await this.checkpointRecord(cid).catch(() => undefined)
    if (!rec) return false
    const at = await this.kv.get(checkpointKey(rec.timeline, rec.vtime))
    return at !== undefined && Buffer.from(at).equals(Buffer.from(cid))
  }

  /** Whether a block is a checkpoint manifest (listed under 'M'). */
  async isManifest(cid: CidBytes): Promise<boolean> {
    return (await this.kv.get(manifestKey(cid))) !== undefined
  }

  /** Whether a checkpoint was removed from the catalog (and its manifest not yet collected by gc). */
  async isRemoved(cid: CidBytes): Promise<boolean> {
    return (await this.kv.get(removedKey(cid))) !== undefined
  }

  async *refs(): AsyncIterable<{ name: string; cid: CidBytes }> {
    this.check()
    for await (const [k, v] of this.kv.iterate(refRange)) yield { name: dec.decode(k.subarray(1)), cid: v }
  }

  /**
   * repair: packs with damage are retired (sealed as they are; gc rewrites what they still hold),
   * and packs whose file is gone lose their record, with the index entries still placing blocks in
   * them (blocks a copy had are indexed elsewhere by then; the others are lost either way). One
   * synced batch; returns the index operations it took (0: nothing to do).
   */
  async retirePacks(packs: Iterable<number>): Promise<number> {
    this.check()
    const io = this.blocks.io
    const records = this.blocks.packRecords()
    const ops: KVOp[] = []
    const gone = new Set<number>()
    for (const [n] of records) if (!io.exists(n)) gone.add(n)
    for (const n of packs) {
      const rec = records.get(n)
      if (!rec || rec.retired || gone.has(n)) continue
      ops.push({ type: 'put', key: packKey(n), value: encodePackRecord({ ...rec, sealed: true, retired: true, committedLength: io.size(n) }) })
    }
    if (gone.size > 0) {
      for (const n of gone) ops.push({ type: 'del', key: packKey(n) })
      for await (const [k, v] of this.kv.iterate(blockRange)) {
        if (v.length === 22 && gone.has(decodeLocation(v).pack)) ops.push({ type: 'del', key: Uint8Array.prototype.slice.call(k) })
      }
    }
    if (ops.length === 0) return 0
    await this.kv.batch(ops, { sync: true })
    const fresh = new Map<number, PackRecord>()
    for await (const [k, v] of this.kv.iterate(packRange)) fresh.set(packKeyNo(k), decodePackRecord(v))
    this.blocks.reloadPackRecords(fresh)
    return ops.length
  }

  /**
   * The raw keys and values of one key range of the index (SPEC.md §6), for checkers that must see
   * entries that do not decode (verify). Everything else reads through the typed methods.
   */
  rawRange(range: { gte: Uint8Array; lt: Uint8Array }): AsyncIterable<[Uint8Array, Uint8Array]> {
    return this.kv.iterate(range)
  }

  /** The raw value of one index key (see rawRange). */
  rawGet(key: Uint8Array): Promise<Uint8Array | undefined> {
    return this.kv.get(key)
  }

  async getMeta<T>(name: string): Promise<T | undefined> {
    const v = await this.kv.get(metaKey(name))
    return v === undefined ? undefined : parseJson<T>(v)
  }

  putMetaOp(name: string, value: unknown): KVOp {
    return { type: 'put', key: metaKey(name), value: enc.encode(JSON.stringify(value)) }
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.blocks.close()
    await this.kv.close()
    if (this.ownsLock) clearHolder(this.dir)
  }
}

/** A KV whose get() is the synchronous lookup where there is one (the commit path reads a few keys). */
function syncReader(kv: KV): Pick<KV, 'get'> {
  return { get: async (key) => kv.getSync(key) }
}
