/**
 * The store at rest: lock, LevelDB (index + catalog + refs + metadata) and packs, behind one object.
 * Knows CIDs, bytes, timelines and vtimes; nothing about emulators or tree shapes.
 *
 * Directory layout (SPEC.md §2): CKPT (format marker), index/ (LevelDB), packs/, lock.json.
 *
 * The packs are the truth, the index a cache of them (SPEC.md §5): every commit ends with a catalog
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
import { CID_LENGTH, cidBytes, cidToString, DAG_CBOR, parseCid as parseCidText, type CidBytes } from '../codecs/cid.js'
import { compressBlock, defaultCompressor } from '../codecs/compress.js'
import { CkptError, errnoCode, fsError, isCkptError } from '../codecs/errors.js'
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
  META_REBUILDING,
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
import { clearHolder, readHolder, writeHolder } from './lock.js'
import { MemoryKV } from './memory-kv.js'
import { FilePackIO, type PackIO } from './pack-io.js'
import { diskBackend } from './backend.js'
import type { Backend } from './interface.js'
import { adoptOps, keepFromOldCatalog, manifestOf, packHealth, rebuildFromPacks, type RebuildSummary } from './rebuild.js'
import { decodeLocation, decodePackRecord, encodeLocation, type BlockLocation, type PackRecord } from './block-store.js'
import { allCheckpointsRange, blockKey, checkpointKeyTimeline, manifestRange, packKey, packKeyNo, recordKey } from './keys.js'
import { collectPacks, type PackGcOptions, type PackGcSummary } from './pack-gc.js'
import { ENTRY_HEADER_SIZE, ENTRY_KIND } from '../codecs/pack-format.js'

export const STORE_FORMAT = 'ckpt-store'
/** the store format this build writes (2: catalog records in the packs); 1 is read, and upgraded by a writer */
export const STORE_VERSION = 2
export const STORE_VERSIONS: readonly number[] = [1, 2]

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

/** What opening the store found and did, for the caller to tell its user (SPEC.md §5.2). */
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

interface CatalogMeta {
  seq: number
  snapshot: number
}

/** Catalog ops per snapshot part: a part stays a few hundred KiB. */
const SNAPSHOT_PART_OPS = 4096

export class Repository {
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
    readonly kv: KV,
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
    const packsDir = path.join(dir, 'packs')
    // the index: open it, and find out whether it can be used as it is
    let kv: LevelKV | undefined
    let problem: CkptError | undefined
    try {
      // LevelDB writes into the directory (a LOG) even when it then finds no database there: a reader
      // asks first, and touches nothing when there is none
      if (readOnly && !fs.existsSync(path.join(indexDir, 'CURRENT'))) throw new CkptError('CKPT_BAD_INDEX', `the index ${indexDir} is missing`, { dir: indexDir, state: 'missing' })
      kv = await LevelKV.open(indexDir, { create: created })
    } catch (err) {
      if (!isCkptError(err)) throw err
      if (err.code === 'CKPT_LOCKED') {
        const h = readHolder(dir)
        const who = h ? `process ${h.pid} on ${h.host} (since ${h.since})` : 'another process'
        throw new CkptError('CKPT_LOCKED', `store ${dir} is locked by ${who}`, { dir, holder: h }, err)
      }
      problem = err
    }
    if (kv && !created) {
      try {
        problem = await indexProblem(kv, version, packsDir)
      } catch (err) {
        await kv.close()
        kv = undefined
        if (!isCkptError(err)) throw err
        // the index opened but does not read as an index (malformed values, LevelDB finding damage)
        problem = err.details.state === undefined ? new CkptError(err.code === 'CKPT_BAD_INDEX' ? 'CKPT_BAD_INDEX' : err.code, err.message, { ...err.details, state: err.code === 'CKPT_BAD_INDEX' ? 'corrupt' : 'unavailable' }, err) : err
      }
    }
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
        rebuilt = await rebuildInPlace(kv, packsDir, version, { old })
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
   * `repair --rebuild-index` (SPEC.md §12.2): the index rebuilt from the packs, explicitly. Packs an
   * older version set aside (packs/orphaned) come back first. An index LevelDB says is damaged is
   * repaired by LevelDB, else set aside (index.broken-<ms>) and recreated; one the OS will not let us
   * open (full disk, permissions, read-only) is an error, never set aside. `adopt`: checkpoints whose
   * manifests no catalog record covers are catalogued from their manifests.
   */
  static async rebuild(
    dir: string,
    opts: { adopt?: boolean; onProgress?: (done: number, total: number) => void } = {},
  ): Promise<RebuildSummary & { recovered: number; setAside?: string; adoptedNow: number }> {
    const { version } = openMarker(dir, true)
    const indexDir = path.join(dir, 'index')
    const packsDir = path.join(dir, 'packs')
    const recovered = bringBackSetAside(packsDir)
    let setAside: string | undefined
    const tryOpen = async (create: boolean): Promise<{ kv?: LevelKV; old?: CatalogOp[]; error?: CkptError }> => {
      let kv: LevelKV
      try {
        kv = await LevelKV.open(indexDir, { create })
      } catch (err) {
        if (!isCkptError(err)) throw err
        return { error: err }
      }
      // usable: every entry reads (LevelDB finds damaged blocks only when it reads them)
      try {
        for await (const _ of kv.iterate({})) {
          // reading is the test
        }
        return { kv, old: (await catalogSnapshotOps(kv)).ops }
      } catch (err) {
        await kv.close()
        if (!isCkptError(err)) throw err
        return { error: err }
      }
    }
    let got = await tryOpen(false)
    const stateOf = (e?: CkptError) => e?.details.state as string | undefined
    if (stateOf(got.error) === 'locked') {
      const h = readHolder(dir)
      throw new CkptError('CKPT_LOCKED', `store ${dir} is locked by ${h ? `process ${h.pid} on ${h.host}` : 'another process'}`, { dir, holder: h }, got.error)
    }
    // a full disk, a permission, a read-only medium: said as such, the index never set aside for it
    if (stateOf(got.error) === 'unavailable') throw got.error
    if (stateOf(got.error) === 'missing') got = await tryOpen(true)
    else if (got.error) {
      // damaged: LevelDB's own repair first, then a new index (the damaged one kept aside)
      try {
        await LevelKV.repair(indexDir)
      } catch {}
      got = await tryOpen(false)
      const st = stateOf(got.error)
      if (got.error && st !== 'unavailable' && st !== 'locked') {
        setAside = `${indexDir}.broken-${Date.now()}`
        try {
          fs.renameSync(indexDir, setAside)
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw fsError(err, 'cannot set the damaged index aside', { dir })
          setAside = undefined
        }
        got = await tryOpen(true)
      }
    }
    if (got.error) throw got.error
    const kv = got.kv!
    try {
      const summary = await rebuildInPlace(kv, packsDir, version, { old: got.old, onProgress: opts.onProgress })
      let adoptedNow = 0
      if (opts.adopt && summary.uncovered.length > 0) {
        adoptedNow = await adoptUncovered(kv, packsDir, summary)
        if (adoptedNow > 0) summary.needsSnapshot = true
      }
      if (summary.needsSnapshot) await kv.batch([{ type: 'put', key: metaKey(META_NEEDS_SNAPSHOT), value: jsonValue(true) }], { sync: true })
      return { ...summary, recovered, setAside, adoptedNow }
    } finally {
      await kv.close()
    }
  }

  /** A read-only repository over an index built in memory from the packs (SPEC.md §5.2). */
  private static async fromPacks(dir: string, opts: RepositoryOptions, version: number, why: CkptError): Promise<Repository> {
    const packsDir = path.join(dir, 'packs')
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
    if (source === 'index' && version >= 2 && io instanceof FilePackIO) {
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
    writeMarker(this.dir, STORE_VERSION)
    this.formatVersion = STORE_VERSION
    this.notes.push({ kind: 'upgraded', message: `the store was upgraded to format ${STORE_VERSION}: its catalog is now also written in the packs` })
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
   * §5.1) are synced to their pack, then their index entries and the ops' index operations go into
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
    const c = compressBlock(defaultCompressor(), bytes)
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

  async *timelines(): AsyncIterable<TimelineRecord> {
    this.check()
    for await (const [, v] of this.kv.iterate(timelineRange)) yield parseJson<TimelineRecord>(v)
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
   * The store's scan key (SPEC.md §2.1): 32 random bytes in the index ('m' scan-key) that key the
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

  /**
   * Pack files gc cannot judge (SPEC.md §15): set aside by an older version (packs/orphaned), or not
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

  /** The pack side of gc once the caller marked what is live (SPEC.md §15; store/pack-gc.ts). */
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

// ------------------------------------------------------------------------------------ open helpers

/** Reads (or, unless mustExist, creates) the CKPT marker; its format version must be one this build reads. */
function openMarker(dir: string, mustExist: boolean): { version: number; created: boolean } {
  const marker = path.join(dir, 'CKPT')
  let created = false
  if (fs.existsSync(dir) && !fs.statSync(dir).isDirectory()) {
    throw new CkptError('CKPT_BAD_STORE', `${dir} is not a directory`, { dir })
  }
  if (!fs.existsSync(marker)) {
    if (mustExist) throw new CkptError('CKPT_BAD_STORE', `${dir} is not a ckpt store (no CKPT marker)`, { dir })
    if (fs.existsSync(dir) && fs.readdirSync(dir).length > 0) {
      throw new CkptError('CKPT_BAD_STORE', `${dir} exists, is not empty and is not a ckpt store`, { dir })
    }
    try {
      fs.mkdirSync(dir, { recursive: true })
      writeMarker(dir, STORE_VERSION)
    } catch (err) {
      throw fsError(err, `cannot create a store in ${dir}`, { dir })
    }
    created = true
  }
  let m: { format?: string; version?: number }
  try {
    m = JSON.parse(fs.readFileSync(marker, 'utf8'))
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code && code !== 'ENOENT' && errnoCode(err) !== 'CKPT_IO') throw fsError(err, `cannot read ${marker}`, { dir })
    throw new CkptError('CKPT_BAD_STORE', `${marker} is unreadable`, { dir }, err)
  }
  if (m.format !== STORE_FORMAT) throw new CkptError('CKPT_BAD_STORE', `${dir} is not a ckpt store`, { dir })
  if (typeof m.version !== 'number' || !STORE_VERSIONS.includes(m.version)) {
    throw new CkptError('CKPT_VERSION', `store format version ${m.version} is not supported (this build reads ${STORE_VERSIONS.join(' and ')})`, { dir })
  }
  return { version: m.version, created }
}

/** The marker, written whole or not at all (a crash must not leave an empty one). */
function writeMarker(dir: string, version: number): void {
  const marker = path.join(dir, 'CKPT')
  const tmp = `${marker}.tmp-${process.pid}`
  fs.writeFileSync(tmp, JSON.stringify({ format: STORE_FORMAT, version }) + '\n')
  fs.renameSync(tmp, marker)
}

async function readCatalogMeta(kv: KV): Promise<CatalogMeta | undefined> {
  const v = await kv.get(metaKey(META_CATALOG))
  if (!v) return undefined
  const m = parseJson<{ seq?: unknown; snapshot?: unknown }>(v)
  if (typeof m.seq !== 'number' || typeof m.snapshot !== 'number') throw new CkptError('CKPT_BAD_INDEX', 'the index\'s catalog position is malformed', { state: 'corrupt' })
  return { seq: m.seq, snapshot: m.snapshot }
}

/**
 * Why an index that opened should not be used as it is (undefined: it is fine): a rebuild that did
 * not finish, no pack records while pack files exist (emptied or replaced), or packs holding
 * commits past the index's (restored from an old copy, a lost write).
 */
async function indexProblem(kv: LevelKV, version: number, packsDir: string): Promise<CkptError | undefined> {
  if ((await kv.get(metaKey(META_REBUILDING))) !== undefined) return new CkptError('CKPT_BAD_INDEX', 'a rebuild of the index did not finish', { state: 'rebuilding' })
  const records = new Map<number, PackRecord>()
  for await (const [k, v] of kv.iterate(packRange)) records.set(packKeyNo(k), decodePackRecord(v))
  const io = new FilePackIO(packsDir, true)
  try {
    const files = io.list()
    if (version < 2) {
      if (records.size === 0 && files.length > 0) return new CkptError('CKPT_BAD_INDEX', `the index lists no pack, but ${files.length} pack file${files.length === 1 ? ' is' : 's are'} there`, { state: 'empty' })
      return undefined
    }
    const meta = await readCatalogMeta(kv)
    const h = packHealth(io, records, meta?.seq ?? 0)
    if (h.stale) return new CkptError('CKPT_BAD_INDEX', `the index is behind the packs: ${h.stale}`, { state: 'stale' })
    // no catalog position or no pack record (a new store's index has both after its first commit):
    // fine while the pack files hold at most that first commit, which a crash interrupted
    const unknown = files.filter((n) => !records.has(n) && !h.leftovers.includes(n))
    if ((!meta && records.size > 0) || ((!meta || records.size === 0) && unknown.length > 0)) {
      return new CkptError('CKPT_BAD_INDEX', `the index ${!meta ? 'has no catalog position' : 'lists no pack'}, but ${files.length} pack file${files.length === 1 ? ' is' : 's are'} there`, { state: 'empty' })
    }
    return undefined
  } finally {
    io.close()
  }
}

function describeState(state: string | undefined, problem: CkptError): string {
  switch (state) {
    case 'missing':
      return 'missing'
    case 'empty':
      return `empty (${problem.message})`
    case 'stale':
      return `behind the packs (${problem.message.replace(/^the index is behind the packs: /, '')})`
    case 'rebuilding':
      return 'half rebuilt'
    default:
      return problem.message
  }
}

/** A KV whose get() is the synchronous lookup where there is one (the commit path reads a few keys). */
function syncReader(kv: KV): Pick<KV, 'get'> {
  return { get: async (key) => kv.getSync(key) }
}

/**
 * Rebuilds the index in place from the packs, under the index's own lock: a marker says a rebuild is
 * under way (a crash leaves it, and the next writer rebuilds again), everything else is cleared, the
 * packs are scanned and their catalog records replayed, the marker goes. `old` is the catalog the
 * index held before, when it could still be read: entries the records lack are kept from it (a store
 * of format 1 has no records at all: its catalog is then the old one, or else the manifests found in
 * the packs). Says in `needsSnapshot` whether the catalog now holds what no record does.
 */
export async function rebuildInPlace(
  kv: KV,
  packsDir: string,
  version: number,
  opts: { onProgress?: (done: number, total: number) => void; old?: CatalogOp[] } = {},
): Promise<RebuildSummary & { needsSnapshot: boolean }> {
  await kv.batch([{ type: 'put', key: metaKey(META_REBUILDING), value: jsonValue({ pid: process.pid, since: new Date().toISOString() }) }], { sync: true })
  let ops: KVOp[] = []
  for await (const [k] of kv.iterate({})) {
    if (k[0] === 0x6d && dec.decode(k.subarray(1)) === META_REBUILDING) continue
    ops.push({ type: 'del', key: Uint8Array.prototype.slice.call(k) })
    if (ops.length >= 10_000) {
      await kv.batch(ops)
      ops = []
    }
  }
  await kv.batch(ops)
  const io = new FilePackIO(packsDir, true)
  let summary: RebuildSummary
  let needsSnapshot = false
  try {
    summary = await rebuildFromPacks(io, kv, opts)
    if (summary.legacy) {
      if (opts.old && opts.old.some((o) => o.op === 'add')) {
        await kv.batch(await catalogKvOps(kv, opts.old))
        summary.keptFromIndex = opts.old.length
      } else summary.adopted = await adoptManifests(kv, io)
      // the catalog starts its record stream here (a format-1 store is upgraded after the open)
      if (version >= 2) await kv.batch([{ type: 'put', key: metaKey(META_CATALOG), value: jsonValue({ seq: 0, snapshot: 0 }) }])
      needsSnapshot = version >= 2
    } else if (opts.old) {
      needsSnapshot = (await keepFromOldCatalog(kv, summary, opts.old)) > 0
    }
  } finally {
    io.close()
  }
  const done: KVOp[] = [{ type: 'del', key: metaKey(META_REBUILDING) }]
  if (needsSnapshot) done.push({ type: 'put', key: metaKey(META_NEEDS_SNAPSHOT), value: jsonValue(true) })
  await kv.batch(done, { sync: true })
  return { ...summary, needsSnapshot }
}

/** Pack files an older version set aside at open (packs/orphaned) go back where their number is free. */
function bringBackSetAside(packsDir: string): number {
  const orphanDir = path.join(packsDir, 'orphaned')
  let recovered = 0
  if (!fs.existsSync(orphanDir)) return 0
  for (const f of fs.readdirSync(orphanDir).sort()) {
    const m = /^(\d{8})\.pack\.\d+$/.exec(f)
    if (!m) continue
    const target = path.join(packsDir, `${m[1]}.pack`)
    if (fs.existsSync(target)) continue
    fs.renameSync(path.join(orphanDir, f), target)
    recovered++
  }
  if (fs.readdirSync(orphanDir).length === 0) fs.rmdirSync(orphanDir)
  return recovered
}

/** `repair --adopt`: the manifests no record covers, catalogued from their own fields. */
async function adoptUncovered(kv: KV, packsDir: string, summary: RebuildSummary): Promise<number> {
  const io = new FilePackIO(packsDir, true)
  try {
    const adopted = await adoptCids(kv, io, summary.uncovered.map((u) => parseCidText(u.cid)))
    const done = new Set(adopted.map(cidToString))
    summary.adopted += adopted.length
    summary.uncovered = summary.uncovered.filter((u) => !done.has(u.cid))
    return adopted.length
  } finally {
    io.close()
  }
}

/**
 * A store without catalog records (format 1): its catalog from the manifests in the packs, each in
 * the timeline it names (two histories of one name: the second becomes NAME~LINEAGE8). Returns the
 * checkpoints catalogued.
 */
export async function adoptManifests(kv: KV, io: PackIO): Promise<number> {
  const cids: CidBytes[] = []
  for await (const [k] of kv.iterate(manifestRange)) cids.push(Uint8Array.prototype.slice.call(k, 1) as CidBytes)
  return (await adoptCids(kv, io, cids)).length
}

/** Catalogues these manifests (the ones that read back) by their own fields; returns their CIDs. */
async function adoptCids(kv: KV, io: PackIO, cids: CidBytes[]): Promise<CidBytes[]> {
  const list: { cid: CidBytes; m: import('../codecs/manifest.js').Manifest }[] = []
  for (const cid of cids) {
    const v = kv.getSync(blockKey(cid))
    if (!v) continue
    const loc = decodeLocation(v)
    try {
      const m = manifestOf({ cid, codec: loc.codec, rawLength: loc.rawLength, payload: io.read(loc.pack, loc.offset + ENTRY_HEADER_SIZE, loc.storedLength) })
      if (m) list.push({ cid, m })
    } catch {}
  }
  // oldest first within a timeline, so a CID's checkpoint record names where it first was
  list.sort((a, b) => (a.m.timeline < b.m.timeline ? -1 : a.m.timeline > b.m.timeline ? 1 : a.m.vtime < b.m.vtime ? -1 : a.m.vtime > b.m.vtime ? 1 : 0))
  const existing = new Map<string, { lineage: string }>()
  for await (const [, v] of kv.iterate(timelineRange)) {
    try {
      const t = parseJson<TimelineRecord>(v)
      existing.set(t.name, { lineage: t.lineage })
    } catch {}
  }
  await kv.batch(await catalogKvOps(kv, adoptOps(list, (name) => existing.get(name))))
  return list.map((x) => x.cid)
}
