/**
 * The store at rest: lock, LevelDB (index + catalog + refs + metadata) and packs, behind one object.
 * Knows CIDs, bytes, timelines and vtimes; nothing about emulators or tree shapes.
 *
 * Directory layout (SPEC.md §Store layout): CKPT (format marker), index/ (LevelDB), packs/, lock.json.
 */
import fs from 'node:fs'
import path from 'node:path'
import { CID_LENGTH, type CidBytes } from '../codecs/cid.js'
import { CkptError } from '../codecs/errors.js'
import { BlockStore, type BlockStoreOptions } from './block-store.js'
import {
  checkpointKey,
  checkpointKeyVtime,
  checkpointRange,
  checkpointRecordKey,
  dec,
  enc,
  jsonValue,
  metaKey,
  packKey,
  parseJson,
  refKey,
  refRange,
  timelineKey,
  timelineRange,
} from './keys.js'
import type { KV, KVOp } from './kv.js'
import { LevelKV } from './level-kv.js'
import { clearHolder, readHolder, writeHolder } from './lock.js'
import { MemoryKV } from './memory-kv.js'
import { FilePackIO, MemoryPackIO, type PackIO } from './pack-io.js'

export const STORE_FORMAT = 'ckpt-store'
export const STORE_VERSION = 1

export interface RegionSpec {
  size: number
  chunkSize: number
}

export interface TimelineRecord {
  name: string
  /** 32 hex digits, random at creation; manifests carry it (see Manifest.lineage) */
  lineage: string
  regions: Record<string, RegionSpec>
  created: number
  /** set when the timeline was forked from a checkpoint of another */
  forkedFrom?: { timeline: string; vtime: string; cid: string }
  /** retention policy applied after each checkpoint (SPEC.md §14), normalised text */
  policy?: string
}

export interface CheckpointEntry {
  timeline: string
  vtime: bigint
  cid: CidBytes
}

export interface RepositoryOptions extends BlockStoreOptions {
  /** keep everything in memory (unit tests); `dir` is then only a label */
  memory?: boolean
  /** fail instead of creating a missing store */
  mustExist?: boolean
}

export class Repository {
  private closed = false

  private constructor(
    readonly dir: string,
    readonly kv: KV,
    readonly blocks: BlockStore,
    readonly memory: boolean,
  ) {}

  static async open(dir: string, opts: RepositoryOptions = {}): Promise<Repository> {
    let kv: KV
    let io: PackIO
    if (opts.memory) {
      kv = new MemoryKV()
      io = new MemoryPackIO()
    } else {
      const marker = path.join(dir, 'CKPT')
      if (fs.existsSync(dir) && !fs.statSync(dir).isDirectory()) {
        throw new CkptError('CKPT_BAD_STORE', `${dir} is not a directory`, { dir })
      }
      if (!fs.existsSync(marker)) {
        if (opts.mustExist) throw new CkptError('CKPT_BAD_STORE', `${dir} is not a ckpt store (no CKPT marker)`, { dir })
        if (fs.existsSync(dir) && fs.readdirSync(dir).length > 0) {
          throw new CkptError('CKPT_BAD_STORE', `${dir} exists, is not empty and is not a ckpt store`, { dir })
        }
        try {
          fs.mkdirSync(dir, { recursive: true })
          // written whole or not at all: a crash here must not leave an empty marker
          const tmp = `${marker}.tmp-${process.pid}`
          fs.writeFileSync(tmp, JSON.stringify({ format: STORE_FORMAT, version: STORE_VERSION }) + '\n')
          fs.renameSync(tmp, marker)
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code
          throw new CkptError(code === 'ENOSPC' ? 'CKPT_NO_SPACE' : 'CKPT_BAD_STORE', `cannot create a store in ${dir}: ${(err as Error).message}`, { dir }, err)
        }
      }
      let m: { format?: string; version?: number }
      try {
        m = JSON.parse(fs.readFileSync(marker, 'utf8'))
      } catch (err) {
        throw new CkptError('CKPT_BAD_STORE', `${marker} is unreadable`, { dir }, err)
      }
      if (m.format !== STORE_FORMAT) throw new CkptError('CKPT_BAD_STORE', `${dir} is not a ckpt store`, { dir })
      if (m.version !== STORE_VERSION) {
        throw new CkptError('CKPT_VERSION', `store format version ${m.version} is not supported (this build reads ${STORE_VERSION})`, { dir })
      }
      try {
        kv = await LevelKV.open(path.join(dir, 'index'))
      } catch (err) {
        if (err instanceof CkptError && err.code === 'CKPT_LOCKED') {
          const h = readHolder(dir)
          const who = h ? `process ${h.pid} on ${h.host} (since ${h.since})` : 'another process'
          throw new CkptError('CKPT_LOCKED', `store ${dir} is locked by ${who}`, { dir, holder: h }, err)
        }
        throw err
      }
      writeHolder(dir)
      // temporary sets of an export or import that did not end (a crash): we hold the lock now
      fs.rmSync(path.join(dir, 'tmp'), { recursive: true, force: true })
      io = new FilePackIO(path.join(dir, 'packs'))
    }
    let blocks: BlockStore
    try {
      blocks = await BlockStore.open(kv, io, opts)
    } catch (err) {
      // release the index (and its lock) so the caller may retry or repair
      io.close()
      await kv.close()
      if (!opts.memory) clearHolder(dir)
      throw err
    }
    return new Repository(dir, kv, blocks, opts.memory === true)
  }

  private check(): void {
    if (this.closed) throw new CkptError('CKPT_CLOSED', 'the store is closed')
  }

  get isClosed(): boolean {
    return this.closed
  }

  /**
   * One atomic, durable step: staged blocks are synced to their pack, then their index entries and the
   * caller's catalog operations go into one synced LevelDB batch. On failure nothing becomes visible.
   */
  async commit(catalogOps: KVOp[]): Promise<void> {
    this.check()
    try {
      const ops = await this.blocks.prepareCommit()
      await this.kv.batch([...ops, ...catalogOps], { sync: true })
    } catch (err) {
      this.blocks.abort()
      throw err
    }
    this.blocks.committed()
    await this.blocks.maybeSeal()
  }

  /**
   * commit() with index operations of the caller's own, and packs whose records go in the same
   * batch (gc: their live entries were copied into the staged transaction).
   */
  async commitWith(extra: KVOp[], opts: { dropPacks?: number[] } = {}): Promise<void> {
    this.check()
    const drop = opts.dropPacks ?? []
    try {
      const ops = await this.blocks.prepareCommit()
      for (const n of drop) ops.push({ type: 'del', key: packKey(n) })
      for (const op of extra) ops.push(op)
      await this.kv.batch(ops, { sync: true })
    } catch (err) {
      this.blocks.abort()
      throw err
    }
    this.blocks.committed()
    for (const n of drop) this.blocks.forgetPack(n)
    await this.blocks.maybeSeal()
  }

  async getTimeline(name: string): Promise<TimelineRecord | undefined> {
    this.check()
    const v = await this.kv.get(timelineKey(name))
    return v === undefined ? undefined : parseJson<TimelineRecord>(v)
  }

  putTimelineOp(rec: TimelineRecord): KVOp {
    return { type: 'put', key: timelineKey(rec.name), value: jsonValue(rec) }
  }

  async *timelines(): AsyncIterable<TimelineRecord> {
    this.check()
    for await (const [, v] of this.kv.iterate(timelineRange)) yield parseJson<TimelineRecord>(v)
  }

  putCheckpointOps(e: CheckpointEntry): KVOp[] {
    return [
      { type: 'put', key: checkpointKey(e.timeline, e.vtime), value: e.cid },
      { type: 'put', key: checkpointRecordKey(e.cid), value: jsonValue({ timeline: e.timeline, vtime: e.vtime.toString() }) },
    ]
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

  setRefOp(name: string, cid: CidBytes): KVOp {
    return { type: 'put', key: refKey(name), value: cid }
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
    if (!this.memory) clearHolder(this.dir)
  }
}
