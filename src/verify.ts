/**
 * verifyStore: every problem of a store, as typed findings, in phases cheap first (SPEC.md §12).
 *
 *   1. structure: the index and the packs agree. Every pack is scanned front to back (headers,
 *      entries with their checksums, footers); every index entry must point at an intact entry of its
 *      CID, and every intact entry should be indexed.
 *   2. dag: every checkpoint of the catalog (or of the given refs) is walked from its manifest: every
 *      node decodes and verifies, every link resolves to an intact block of the right size, catalog
 *      entries and refs point at manifests. A checkpoint is compared with the previous one of its
 *      timeline, so only what changed is looked at; damage in a shared subtree is still charged to
 *      every checkpoint that reaches it.
 *   3. data (deep, or a sample): every block is read, decompressed and re-hashed on the workers.
 *
 * Findings about blocks name the checkpoints they damage. Memory: ~70 bytes per indexed block (the
 * index is held as a table while the phases run), plus two checkpoints' worth of tree nodes.
 */
import { copyOf } from '../codecs/bytes.js'
import type { CID } from 'multiformats/cid'
import { cidEquals, cidKey, cidToString, DAG_CBOR, RAW, type CidBytes } from '../codecs/cid.js'
import { CkptError, isCkptError } from '../codecs/errors.js'
import { decodeManifest, type Manifest } from '../codecs/manifest.js'
import type { NodeEntries } from '../codecs/tree-node.js'
import { decodeLocation } from '../store/block-store.js'
import { allCheckpointsRange, blockKeyCid, blockRange, checkpointKeyTimeline, checkpointKeyVtime, dec, refRange, timelineRange } from '../store/keys.js'
import type { TimelineRecord } from '../store/repository.js'
import { AT_REST, decompressBlock } from '../codecs/compress.js'
import { applyNodeDelta, deltaBaseCid, readNodePatch, type NodePatch } from '../codecs/node-delta.js'
import { decodeNode } from '../codecs/tree-node.js'
import { scanPack } from '../store/pack-scan.js'
import type { Repository } from '../store/repository.js'
import { ENTRY_KIND } from '../codecs/pack-format.js'
import { recordOf, replayPlan } from '../store/rebuild.js'
import { catalogKvOps } from '../store/catalog.js'
import { MemoryKV } from '../store/memory-kv.js'
import type { CatalogRecord } from '../codecs/catalog-record.js'
import { manifestKey, manifestRange, removedKey, removedRange } from '../store/keys.js'
import { SeenSet } from '../store/seen-set.js'
import type { WorkerPool } from './pipeline/worker-pool.js'
import { changedSlots, childCid, sameDigest } from './node-compare.js'
import { Geometry } from './region-tree.js'
import fs from 'node:fs'
import { blake3 } from '../codecs/blake3.js'
import { decodeSpanTable, SPAN_SIZE, type SpanTable } from '../codecs/scan-cache.js'
import type { BlockLocation } from '../store/block-store.js'
import { readBlocks, walkLeaves } from './restore.js'
import { scanCachePath } from './scan-cache.js'
import type { CkptStore } from './store.js'

export type FindingKind =
  | 'missing-pack'
  | 'truncated-pack'
  | 'bad-pack-header'
  | 'bad-pack-footer'
  | 'damaged-entry'
  | 'unindexed-entry'
  | 'dangling-index-entry'
  | 'bad-index-value'
  | 'orphan-pack'
  | 'missing-block'
  | 'hash-mismatch'
  | 'undecodable-block'
  | 'bad-node'
  | 'bad-manifest'
  | 'dangling-ref'
  | 'dangling-catalog-entry'
  | 'bad-catalog-entry'
  | 'uncatalogued-checkpoint'
  | 'bad-pack-record'
  | 'corrupt-index'
  | 'bad-record'
  | 'catalog-mismatch'
  | 'missing-record'
  | 'unlisted-pack'
  | 'leftover-pack'
  | 'index-unavailable'
  | 'bad-scan-cache'
  | 'bad-checksum'

export type Severity = 'error' | 'warning' | 'info'

export interface CheckpointRef {
  timeline: string
  vtime: string
  cid: string
}

export interface Finding {
  phase: 'structure' | 'dag' | 'data'
  kind: FindingKind
  severity: Severity
  message: string
  cid?: string
  pack?: number
  offset?: number
  length?: number
  path?: string
  /** checkpoints that reach the damaged block (dag and data phases) */
  checkpoints?: CheckpointRef[]
}

export interface VerifyOptions {
  /** only these checkpoints (and the blocks they reach) */
  refs?: (string | CID)[]
  /** phase 3: read, decompress and re-hash every block */
  deep?: boolean
  /** phase 3 on a random sample of this percentage of the blocks (0 < PCT <= 100) */
  sample?: number
  onProgress?: (p: VerifyProgress) => void
}

export interface VerifyProgress {
  phase: 'structure' | 'dag' | 'data'
  done: number
  total: number
  /** what done and total count */
  unit: 'bytes' | 'checkpoints'
}

export interface VerifySummary {
  clean: boolean
  errors: number
  warnings: number
  infos: number
  packs: number
  blocks: number
  checkpoints: number
  damagedCheckpoints: CheckpointRef[]
  /** blocks read and re-hashed in phase 3 */
  dataBlocks: number
  dataBytes: number
  ms: { structure: number; dag: number; data: number }
  /** what to do next */
  advice: string[]
  /** CIDs of damaged or missing blocks (for repair) */
  damagedBlocks: string[]
  /** CIDs of blocks whose entry fails its checksum while their content is intact (repair stores them anew) */
  badChecksums: string[]
}

// ------------------------------------------------------------------------- the index as a table

/** dag-cbor payloads kept from the structure scan for the walk (beyond: read again) */
/** unindexed pack entries remembered for the judgement after the walk (36 bytes and a map slot each) */
const MAX_UNINDEXED = 1 << 20
const KEEP_NODE_BYTES = 64 << 20
const ENTRY_OK = 1
const ENTRY_BAD = 2

/** Every index entry: CID, location, state; looked up by CID. */
class IndexTable {
  n = 0
  cids = new Uint8Array(36 * 1024)
  pack = new Uint32Array(1024)
  offset = new Float64Array(1024)
  stored = new Uint32Array(1024)
  raw = new Uint32Array(1024)
  codec = new Uint8Array(1024)
  depth = new Uint8Array(1024)
  /** 0 not seen in a pack yet, ENTRY_OK matched an intact entry, ENTRY_BAD damaged or dangling */
  state = new Uint8Array(1024)
  private slots = new Int32Array(2048).fill(-1)

  private hash(c: Uint8Array, at: number): number {
    return (c[at + 4]! | (c[at + 5]! << 8) | (c[at + 6]! << 16) | (c[at + 7]! << 24)) >>> 0
  }

  private grow(): void {
    const cap = this.pack.length * 2
    const g = <T extends Uint8Array | Uint32Array | Float64Array>(a: T, n: number): T => {
      const b = new (a.constructor as new (n: number) => T)(n)
      b.set(a)
      return b
    }
    this.cids = g(this.cids, cap * 36)
    this.pack = g(this.pack, cap)
    this.offset = g(this.offset, cap)
    this.stored = g(this.stored, cap)
    this.raw = g(this.raw, cap)
    this.codec = g(this.codec, cap)
    this.depth = g(this.depth, cap)
    this.state = g(this.state, cap)
    this.slots = new Int32Array(cap * 2).fill(-1)
    for (let i = 0; i < this.n; i++) this.place(i)
  }

  private place(i: number): void {
    const mask = this.slots.length - 1
    for (let s = this.hash(this.cids, i * 36) & mask; ; s = (s + 1) & mask) {
      if (this.slots[s] === -1) {
        this.slots[s] = i
        return
      }
    }
  }

  add(cid: Uint8Array, l: { pack: number; offset: number; storedLength: number; rawLength: number; codec: number; depth: number }): void {
    if (this.n === this.pack.length) this.grow()
    const i = this.n++
    this.cids.set(cid, i * 36)
    this.pack[i] = l.pack
    this.offset[i] = l.offset
    this.stored[i] = l.storedLength
    this.raw[i] = l.rawLength
    this.codec[i] = l.codec
    this.depth[i] = l.depth
    this.place(i)
  }

  find(cid: Uint8Array): number {
    const mask = this.slots.length - 1
    for (let s = this.hash(cid, 0) & mask; ; s = (s + 1) & mask) {
      const i = this.slots[s]!
      if (i === -1) return -1
      let same = true
      for (let k = 0; k < 36; k++) {
        if (this.cids[i * 36 + k] !== cid[k]) {
          same = false
          break
        }
      }
      if (same) return i
    }
  }

  cid(i: number): CidBytes {
    return this.cids.slice(i * 36, i * 36 + 36)
  }
}

// ------------------------------------------------------------------------- the generator

export async function* verifyStore(store: CkptStore, opts: VerifyOptions = {}): AsyncGenerator<Finding, VerifySummary> {
  if (opts.sample !== undefined && !(typeof opts.sample === 'number' && opts.sample > 0 && opts.sample <= 100)) {
    throw new CkptError('CKPT_BAD_ARGUMENT', 'sample must be a percentage above 0 and at most 100', { sample: opts.sample })
  }
  const { repo, pool } = store.internals()
  const v = new Verifier(store, repo, pool, opts)
  try {
    return yield* v.run()
  } finally {
    await v.close()
  }
}

class Verifier {
  private readonly table = new IndexTable()
  /** damaged or missing blocks -> the checkpoints found to reach them */
  private readonly damaged = new Map<string, { cid: CidBytes; kind: FindingKind; message: string; pack?: number; offset?: number; checkpoints: CheckpointRef[] }>()
  /** nodes proven clean, and nodes under which there is damage (keyed by CID) */
  private clean: SeenSet | undefined
  private readonly dirtyNodes = new Set<string>()
  private readonly damagedCheckpoints: CheckpointRef[] = []
  private counts = { errors: 0, warnings: 0, infos: 0 }
  private checkpoints = 0
  private dataBlocks = 0
  private dataBytes = 0

  constructor(
    private readonly store: CkptStore,
    private readonly repo: Repository,
    private readonly pool: WorkerPool,
    private readonly opts: VerifyOptions,
  ) {}

  async close(): Promise<void> {
    await this.clean?.close()
  }

  private finding(f: Finding): Finding {
    if (f.severity === 'error') this.counts.errors++
    else if (f.severity === 'warning') this.counts.warnings++
    else this.counts.infos++
    return f
  }

  async *run(): AsyncGenerator<Finding, VerifySummary> {
    const ms = { structure: 0, dag: 0, data: 0 }
    try {
      yield* this.phases(ms)
    } catch (err) {
      // LevelDB itself found its files damaged: what is left cannot be read reliably
      if (!isCkptError(err, 'CKPT_BAD_INDEX')) throw err
      yield this.emit({ phase: 'structure', kind: 'corrupt-index', severity: 'error', message: `${err.message}; verification stopped here` })
      this.indexFixable = true
    }
    return this.summary(ms)
  }

  private async *phases(ms: VerifySummary['ms']): AsyncGenerator<Finding> {
    let t = performance.now()
    for (const note of this.repo.notes) {
      if (note.kind !== 'packs-alone') continue
      // the index could not be used: what follows was checked against an index built from the packs
      const damage = note.reason !== 'unavailable'
      if (damage) this.indexFixable = true
      yield this.emit({ phase: 'structure', kind: 'index-unavailable', severity: damage ? 'warning' : 'info', message: note.message })
    }
    yield* this.structure()
    ms.structure = performance.now() - t
    t = performance.now()
    this.clean = await SeenSet.create(undefined, 1 << 16)
    yield* this.dag()
    yield* this.unindexedEntries()
    ms.dag = performance.now() - t
    if (this.opts.deep || this.opts.sample !== undefined) {
      t = performance.now()
      const before = this.damaged.size
      yield* this.data()
      // blocks found damaged only now: which checkpoints do they hurt? walk again, charging them
      if (this.damaged.size > before) {
        this.dirtyNodes.clear()
        await this.clean.close()
        this.clean = await SeenSet.create(undefined, 1 << 16)
        this.damagedCheckpoints.length = 0
        for (const d of this.damaged.values()) d.checkpoints = []
        for await (const _ of this.dag(true)) {
          // the first walk reported its findings already
        }
      }
      if (this.opts.deep && !(this.opts.refs && this.opts.refs.length)) yield* this.scanCaches()
      ms.data = performance.now() - t
    }
    for (const d of this.damaged.values()) {
      yield this.finding({
        phase: d.kind === 'hash-mismatch' || d.kind === 'undecodable-block' ? 'data' : 'dag',
        kind: d.kind,
        severity: d.checkpoints.length ? 'error' : 'warning',
        message: d.checkpoints.length ? `${d.message}; it damages ${d.checkpoints.length} checkpoint${d.checkpoints.length === 1 ? '' : 's'}` : `${d.message} (no checkpoint checked reaches it)`,
        cid: cidToString(d.cid),
        pack: d.pack,
        offset: d.offset,
        checkpoints: d.checkpoints,
      })
    }
  }

  private summary(ms: VerifySummary['ms']): VerifySummary {
    const advice: string[] = []
    const dir = this.repo.dir
    const indexProblems = this.indexFixable || this.warnedKinds.has('unindexed-entry') || this.kinds.has('bad-index-value') || this.kinds.has('orphan-pack')
    if (this.damaged.size > 0) {
      advice.push(`restore the ${this.damaged.size} damaged block${this.damaged.size === 1 ? '' : 's'} from a copy: ckpt repair --store ${dir} --from BUNDLE_OR_STORE (a bundle exported earlier, or another store holding these checkpoints)`)
    }
    if (indexProblems) advice.push(`rebuild the index from the packs: ckpt repair --store ${dir} --rebuild-index`)
    if (this.badChecksums.length > 0 && this.damaged.size === 0 && !indexProblems) advice.push(`store the ${this.badChecksums.length} block${this.badChecksums.length === 1 ? '' : 's'} whose checksum is damaged anew (their content is intact): ckpt repair --store ${dir} --rebuild-index`)
    if (this.damagedCheckpoints.length > 0) advice.push(`if no copy exists, remove what cannot be healed (${this.damagedCheckpoints.length} checkpoint${this.damagedCheckpoints.length === 1 ? '' : 's'}): ckpt repair --store ${dir} --drop-damaged`)
    return {
      clean: this.counts.errors === 0 && this.counts.warnings === 0,
      ...this.counts,
      packs: this.repo.blocks.packRecords().size,
      blocks: this.table.n,
      checkpoints: this.checkpoints,
      damagedCheckpoints: this.damagedCheckpoints,
      dataBlocks: this.dataBlocks,
      dataBytes: this.dataBytes,
      ms,
      advice,
      damagedBlocks: [...this.damaged.values()].map((d) => cidToString(d.cid)),
      badChecksums: [...this.badChecksums],
    }
  }

  private readonly kinds = new Set<FindingKind>()
  /** kinds of findings above info */
  private readonly warnedKinds = new Set<FindingKind>()
  private indexFixable = false

  private emit(f: Finding): Finding {
    this.kinds.add(f.kind)
    if (f.severity !== 'info') this.warnedKinds.add(f.kind)
    return this.finding(f)
  }

  private markDamaged(cid: CidBytes, kind: FindingKind, message: string, where: { pack?: number; offset?: number } = {}): void {
    const k = cidKey(cid)
    if (!this.damaged.has(k)) this.damaged.set(k, { cid: copyOf(cid), kind, message, ...where, checkpoints: [] })
  }

  // ----------------------------------------------------------------------- phase 1: structure

  private async *structure(): AsyncGenerator<Finding> {
    const blocks = this.repo.blocks
    for await (const [k, v] of this.repo.kv.iterate(blockRange)) {
      const cid = blockKeyCid(k)
      try {
        if (k.length !== 37 || cid[0] !== 0x01 || (cid[1] !== RAW && cid[1] !== DAG_CBOR) || cid[2] !== 0x1e || cid[3] !== 0x20) throw new Error('not a block key')
        this.table.add(cid, decodeLocation(v))
      } catch {
        let name: string | undefined
        try {
          name = k.length === 37 ? cidToString(copyOf(cid)) : undefined
        } catch {}
        yield this.emit({ phase: 'structure', kind: 'bad-index-value', severity: 'error', message: `index entry ${name ?? Buffer.from(k).toString('hex').slice(0, 80)} holds no valid block location`, cid: name })
      }
    }
    const records = [...blocks.packRecords()].sort((a, b) => a[0] - b[0])
    const total = records.reduce((n, [, r]) => n + r.committedLength, 0)
    let done = 0
    /** damaged byte ranges per pack: an index entry in one is damage, otherwise they are garbage */
    const damage = new Map<number, { offset: number; length: number; truncated: boolean; cids: string[] }[]>()
    for (const [n, rec] of records) {
      if (!blocks.io.exists(n)) {
        yield this.emit({ phase: 'structure', kind: 'missing-pack', severity: 'error', message: `pack ${n} (${blocks.io.describe(n)}) is missing; its blocks are lost`, pack: n, path: blocks.io.describe(n) })
        done += rec.committedLength
        continue
      }
      const sealed = rec.sealed && !rec.retired
      const ranges: { offset: number; length: number; truncated: boolean; cids: string[] }[] = []
      damage.set(n, ranges)
      let intact = 0
      let footerCount: number | undefined
      for (const ev of scanPack(blocks.io.reader(n), n, { end: sealed || rec.retired ? undefined : rec.committedLength, sealed, footerOptional: rec.retired })) {
        if (ev.kind === 'entry') {
          const e = ev.entry
          intact++
          if (e.kind === ENTRY_KIND.record) {
            // a catalog record: not a block; kept for the comparison with the catalog (phase 2)
            const r = recordOf(e)
            if (r) this.records.push(r)
            else yield this.emit({ phase: 'structure', kind: 'bad-record', severity: 'warning', message: `the catalog record in pack ${n} at offset ${e.offset} does not decode or does not match its hash: the packs alone can no longer rebuild that commit's catalog change`, pack: n, offset: e.offset })
            continue
          }
          const i = this.table.find(e.cid)
          if (i < 0) {
            // garbage (gc took it out of the index) unless a checkpoint needs it: judged after the walk
            this.unindexedCount++
            if (this.unindexed.size < MAX_UNINDEXED) this.unindexed.set(cidKey(e.cid), { cid: copyOf(e.cid), pack: n, offset: e.offset })
          } else if (this.table.pack[i] === n && this.table.offset[i] === e.offset) {
            if (this.table.depth[i] !== e.depth && this.table.stored[i] === e.storedLength && this.table.raw[i] === e.rawLength && this.table.codec[i] === e.codec) {
              // only the delta depth is off: reads do not use it (writers bound chains by it)
              this.table.state[i] = ENTRY_OK
              this.indexFixable = true
              yield this.emit({ phase: 'structure', kind: 'bad-index-value', severity: 'warning', message: `the index entry of ${cidToString(e.cid)} records delta depth ${this.table.depth[i]}, its pack entry ${e.depth}`, cid: cidToString(e.cid), pack: n, offset: e.offset })
            } else if (this.table.stored[i] !== e.storedLength || this.table.raw[i] !== e.rawLength || this.table.codec[i] !== e.codec) {
              this.table.state[i] = ENTRY_BAD
              yield this.emit({ phase: 'structure', kind: 'dangling-index-entry', severity: 'error', message: `the index entry of ${cidToString(e.cid)} disagrees with its pack entry (lengths or codec)`, cid: cidToString(e.cid), pack: n, offset: e.offset })
            } else {
              this.table.state[i] = ENTRY_OK
              // tree nodes and manifests are kept as read (small: mostly deltas), for the walk
              if (e.cid[1] === DAG_CBOR && this.keptBytes + e.storedLength <= KEEP_NODE_BYTES) {
                this.kept.set(i, copyOf(e.payload))
                this.keptBytes += e.storedLength
              }
            }
          }
          // an intact copy elsewhere than the index says is a duplicate: harmless garbage
        } else if (ev.kind === 'damage') {
          ranges.push({ offset: ev.offset, length: ev.length, truncated: ev.reason.startsWith('the file ends'), cids: [] })
        } else if (ev.kind === 'bad-header') {
          yield this.emit({
            phase: 'structure',
            kind: 'bad-pack-header',
            severity: rec.retired ? 'info' : 'error',
            message: `pack ${n} has a bad header: ${ev.reason}${rec.retired ? ' (a retired pack: gc rewrites it)' : ''}`,
            pack: n,
          })
        } else if (ev.kind === 'bad-footer') {
          yield this.emit({ phase: 'structure', kind: 'bad-pack-footer', severity: 'error', message: `sealed pack ${n} has a bad footer: ${ev.reason}`, pack: n })
        } else if (ev.kind === 'footer') {
          footerCount = ev.entryCount
        } else if (ev.kind === 'end') {
          done += rec.committedLength
          const bad: string[] = []
          if (sealed && rec.committedLength !== ev.fileSize) bad.push(`says ${rec.committedLength} bytes, the sealed file has ${ev.fileSize}`)
          if (!rec.retired && ranges.length === 0 && rec.entries !== intact) bad.push(`counts ${rec.entries} entries, the pack holds ${intact}`)
          if (footerCount !== undefined && ranges.length === 0 && footerCount !== intact) bad.push(`the footer counts ${footerCount} entries, the pack holds ${intact}`)
          if (bad.length) {
            this.indexFixable = true
            yield this.emit({ phase: 'structure', kind: 'bad-pack-record', severity: 'warning', message: `the index record of pack ${n} ${bad.join('; ')}`, pack: n })
          }
        }
        this.opts.onProgress?.({ phase: 'structure', done, total, unit: 'bytes' })
      }
    }
    for (const q of blocks.io.quarantined()) {
      this.indexFixable = true
      yield this.emit({ phase: 'structure', kind: 'orphan-pack', severity: 'warning', message: `${q} was set aside by an older version of ckpt: it may hold checkpoints the index lost (ckpt repair --rebuild-index takes it back)`, path: q })
    }
    // pack files no index record names: a crash's leftover (nothing acknowledged in it), or what a
    // lost or stale index no longer lists
    for (const n of blocks.io.list()) {
      if (blocks.packRecords().has(n)) continue
      if (this.repo.leftovers.includes(n)) {
        yield this.emit({ phase: 'structure', kind: 'leftover-pack', severity: 'info', message: `pack file ${blocks.io.describe(n)} is not in the index: a crash's leftover holding nothing that was acknowledged (the next writer deletes it)`, pack: n, path: blocks.io.describe(n) })
      } else {
        this.indexFixable = true
        yield this.emit({ phase: 'structure', kind: 'unlisted-pack', severity: 'warning', message: `pack file ${blocks.io.describe(n)} is not in the index and may hold checkpoints the index lost`, pack: n, path: blocks.io.describe(n) })
      }
    }
    // index entries no intact pack entry matched
    for (let i = 0; i < this.table.n; i++) {
      if (this.table.state[i] === ENTRY_OK) continue
      const cid = this.table.cid(i)
      const pack = this.table.pack[i]!
      const offset = this.table.offset[i]!
      const range = damage.get(pack)?.find((r) => offset >= r.offset && offset < r.offset + r.length)
      // damaged bytes where the entry starts: when what they hold still reads back as the block (the
      // hash checked, as every read does), only its checksum is damaged — no read fails
      if (range && this.table.state[i] === 0 && offset === range.offset && this.contentIntact(cid)) {
        this.table.state[i] = ENTRY_OK
        this.badChecksums.push(cidToString(cid))
        yield this.emit({
          phase: 'structure',
          kind: 'bad-checksum',
          severity: 'warning',
          message: `the entry of ${cidToString(cid)} in pack ${pack} at offset ${offset} fails its checksum, but its content still hashes to its CID (reads are fine; ckpt repair stores it anew)`,
          cid: cidToString(cid),
          pack,
          offset,
        })
        continue
      }
      if (range) range.cids.push(cidToString(cid))
      // an index entry off the mark where the bytes are fine: rebuilding the index may find the block
      else this.indexFixable = true
      if (this.table.state[i] === 0) {
        this.table.state[i] = ENTRY_BAD
        yield this.emit({
          phase: 'structure',
          kind: 'dangling-index-entry',
          severity: 'error',
          message: `the index places ${cidToString(cid)} in pack ${pack} at offset ${offset}, where ${range ? 'the bytes are damaged' : 'no intact entry of it is'}`,
          cid: cidToString(cid),
          pack,
          offset,
        })
      }
      this.markDamaged(cid, 'missing-block', `block ${cidToString(cid)} has no intact copy where the index points (pack ${pack}, offset ${offset})`, { pack, offset })
    }
    for (const [n, ranges] of damage) {
      for (const r of ranges) {
        const used = r.cids.length > 0
        yield this.emit({
          phase: 'structure',
          kind: r.truncated ? 'truncated-pack' : 'damaged-entry',
          severity: used ? 'error' : 'info',
          message: r.truncated
            ? `pack ${n} is truncated: it ends ${r.length} bytes before its committed length${used ? `, losing ${r.cids.length} indexed block${r.cids.length === 1 ? '' : 's'}` : ''}`
            : `pack ${n} has ${r.length} damaged bytes at offset ${r.offset}${used ? `, where the index places ${r.cids.length} block${r.cids.length === 1 ? '' : 's'}` : ' that no index entry uses (garbage: gc reclaims it)'}`,
          pack: n,
          offset: r.offset,
          length: r.length,
        })
      }
    }
  }

  /** pack entries the index does not list (at most MAX_UNINDEXED remembered), by cidKey */
  private readonly unindexed = new Map<string, { cid: CidBytes; pack: number; offset: number }>()
  private unindexedCount = 0

  /**
   * Unindexed pack entries, once the walk knows which blocks checkpoints need: one a checkpoint
   * needs (the walk found it missing) is a lost index entry (a warning: rebuild the index); the rest
   * are garbage — blocks gc took out of the index, old copies of rewritten nodes, writes a crash cut
   * short — one note for all of them (gc deletes them when it rewrites their packs).
   */
  private *unindexedEntries(): Generator<Finding> {
    let needed = 0
    for (const [k, u] of this.unindexed) {
      if (!this.damaged.has(k)) continue
      needed++
      yield this.emit({
        phase: 'structure',
        kind: 'unindexed-entry',
        severity: 'warning',
        message: `pack ${u.pack} holds block ${cidToString(u.cid)} at offset ${u.offset}, which the index does not list (a checkpoint needs it)`,
        cid: cidToString(u.cid),
        pack: u.pack,
        offset: u.offset,
      })
    }
    const rest = this.unindexedCount - needed
    if (rest > 0) {
      const scope = this.opts.refs && this.opts.refs.length ? 'the checkpoints checked do not reach' : 'no checkpoint reaches'
      yield this.emit({ phase: 'structure', kind: 'unindexed-entry', severity: 'info', message: `${rest} pack entr${rest === 1 ? 'y holds a block' : 'ies hold blocks'} the index does not list and ${scope}: garbage (removed by gc, superseded copies, or writes a crash cut short); gc deletes it when it rewrites the packs` })
    }
  }

  // ----------------------------------------------------------------------- phase 2: dag

  /** Whether an intact block of this CID is indexed; damaged and missing ones are recorded. */
  private present(cid: CidBytes): number {
    const i = this.table.find(cid)
    if (i < 0) {
      this.markDamaged(cid, 'missing-block', `block ${cidToString(cid)} is not in the store`)
      return -1
    }
    return this.table.state[i] === ENTRY_OK ? i : -1
  }

  /** at-rest payloads of dag-cbor entries, kept from the scan (at most KEEP_NODE_BYTES) */
  private readonly kept = new Map<number, Uint8Array>()
  private keptBytes = 0
  /** decoded nodes by table index (a bounded cache: the walk needs the previous checkpoint's) */
  private readonly nodes = new Map<number, NodeEntries>()
  private scratch = Buffer.allocUnsafe(64 << 10)

  /**
   * A tree node decoded from its intact pack entry (phase 1 checked its checksum), resolving delta
   * chains, without re-hashing: that is phase 3's work (getNode), which also catches a node that
   * decodes but is not what its CID names.
   */
  private node(cid: CidBytes, hops = 0): NodeEntries | { error: CkptError } {
    const i = this.table.find(cid)
    if (i < 0 || this.table.state[i] !== ENTRY_OK) return { error: new CkptError('CKPT_NOT_FOUND', `block ${cidToString(cid)} has no intact copy`) }
    const hit = this.nodes.get(i)
    if (hit) return hit
    const t = this.table
    const stored = t.stored[i]!
    if (this.scratch.length < stored) this.scratch = Buffer.allocUnsafe(stored)
    try {
      const payload = this.kept.get(i) ?? this.repo.blocks.io.readInto(t.pack[i]!, t.offset[i]! + 52, this.scratch.subarray(0, stored))
      let e: NodeEntries
      if (t.codec[i] === AT_REST.nodeDelta) {
        if (hops > 255) throw new CkptError('CKPT_BAD_NODE', `the delta chain of ${cidToString(cid)} does not end`)
        const baseCid = deltaBaseCid(payload)
        const delta = copyOf(payload)
        const base = this.node(baseCid, hops + 1)
        if ('error' in base) {
          // a damaged base: the chain may still give this node (a later change overwrote what the
          // damage touched); the read path resolves it from the bytes there and re-hashes it
          try {
            e = this.repo.blocks.getNodeBytes(cid, false).entries
          } catch {
            return { error: new CkptError(base.error.code, `tree node ${cidToString(cid)} is stored as a change of ${cidToString(baseCid)}, which is damaged: ${base.error.message}`) }
          }
          if (this.nodes.size >= 4096) this.nodes.delete(this.nodes.keys().next().value!)
          this.nodes.set(i, e)
          return e
        }
        e = applyNodeDelta(base, delta)
      } else {
        e = decodeNode(decompressBlock(t.codec[i]!, payload, t.raw[i]!))
      }
      if (this.nodes.size >= 4096) this.nodes.delete(this.nodes.keys().next().value!)
      this.nodes.set(i, e)
      return e
    } catch (err) {
      if (!isCkptError(err)) throw err
      return { error: err }
    }
  }

  private async *dag(impactOnly = false): AsyncGenerator<Finding> {
    const repo = this.repo
    let list: { timeline: string; vtime: bigint; cid: CidBytes }[] = []
    if (this.opts.refs && this.opts.refs.length) {
      for (const r of this.opts.refs) {
        const cid = await this.store.resolveCid(r)
        const rec = await repo.checkpointRecord(cid)
        list.push({ timeline: rec?.timeline ?? '?', vtime: rec?.vtime ?? 0n, cid })
      }
    } else {
      const records = new Map<string, TimelineRecord>()
      for await (const [k, v] of repo.kv.iterate(timelineRange)) {
        const name = dec.decode(k.subarray(1))
        try {
          const rec = JSON.parse(dec.decode(v)) as TimelineRecord
          if (typeof rec !== 'object' || rec === null || rec.name !== name || typeof rec.regions !== 'object') throw new Error('malformed')
          records.set(name, rec)
        } catch {
          if (!impactOnly) yield this.emit({ phase: 'dag', kind: 'bad-catalog-entry', severity: 'error', message: `the record of timeline ${name} is unreadable (repair --rebuild-index cannot rebuild it; the timeline's checkpoints are still checked)` })
        }
      }
      const named = new Set<string>()
      for await (const [k, v] of repo.kv.iterate(allCheckpointsRange)) {
        const timeline = checkpointKeyTimeline(k)
        if (timeline === undefined || v.length !== 36) {
          if (!impactOnly) yield this.emit({ phase: 'dag', kind: 'bad-catalog-entry', severity: 'error', message: `catalog key ${Buffer.from(k).toString('hex').slice(0, 80)} is malformed or holds no CID` })
          continue
        }
        if (!records.has(timeline) && !named.has(timeline) && !impactOnly) {
          named.add(timeline)
          yield this.emit({ phase: 'dag', kind: 'bad-catalog-entry', severity: 'warning', message: `timeline ${timeline} has checkpoints but no timeline record` })
        }
        list.push({ timeline, vtime: checkpointKeyVtime(k), cid: copyOf(v) })
      }
      if (!impactOnly) {
        for await (const [k, v] of repo.kv.iterate(refRange)) {
          const name = dec.decode(k.subarray(1))
          if (v.length !== 36 || this.table.find(v) < 0) {
            yield this.emit({ phase: 'dag', kind: 'dangling-ref', severity: 'error', message: `ref ${name} points at ${v.length === 36 ? cidToString(v) : 'no CID'}, which is not in the store`, cid: v.length === 36 ? cidToString(v) : undefined })
          }
        }
        // manifests in the packs that no catalog entry names: checkpoints removed (gc reclaims them) or
        // catalog entries a damaged index lost (importing a bundle of them, or rebuilding, brings them back)
        const listed = new Set(list.map((c) => cidKey(c.cid)))
        if (repo.format >= 2) {
          yield* this.uncatalogued(listed)
        } else {
        // a thinned recording leaves thousands until gc: the first few are named, the rest counted
        let uncatalogued = 0
        for (const [i, payload] of this.kept) {
          if (this.table.codec[i] === AT_REST.nodeDelta || listed.has(cidKey(this.table.cid(i)))) continue
          let m: Manifest
          try {
            const raw = decompressBlock(this.table.codec[i]!, payload, this.table.raw[i]!)
            // a manifest is a CBOR map (major type 5); tree nodes are arrays, not worth decoding
            if (raw[0]! >> 5 !== 5) continue
            m = decodeManifest(raw)
          } catch {
            continue
          }
          const cid = cidToString(this.table.cid(i))
          if (++uncatalogued <= 3) yield this.emit({ phase: 'dag', kind: 'uncatalogued-checkpoint', severity: 'info', message: `checkpoint ${cid} (${m.timeline}@${m.vtime} by its manifest) is stored but not in the catalog: removed (ckpt gc reclaims it), or lost from a damaged index`, cid })
        }
        if (uncatalogued > 3) yield this.emit({ phase: 'dag', kind: 'uncatalogued-checkpoint', severity: 'info', message: `and ${uncatalogued - 3} more checkpoints stored but not in the catalog (removed or thinned: ckpt gc reclaims them)` })
        }
      }
    }
    if (!impactOnly && !(this.opts.refs && this.opts.refs.length)) {
      yield* this.catalogRecords(list)
      yield* this.catalogAgainstRecords()
    }
    const total = list.length
    let done = 0
    let prev: { timeline: string; manifest: Manifest } | undefined
    for (const c of list) {
      const ref: CheckpointRef = { timeline: c.timeline, vtime: c.vtime.toString(), cid: cidToString(c.cid) }
      if (!impactOnly) this.checkpoints++
      let bad = false
      const hurt = (cid: CidBytes) => {
        bad = true
        const d = this.damaged.get(cidKey(cid))
        if (d && !d.checkpoints.some((x) => x.cid === ref.cid)) d.checkpoints.push(ref)
      }
      let m: Manifest | undefined
      if (this.present(c.cid) < 0) {
        hurt(c.cid)
        if (!impactOnly && this.table.find(c.cid) < 0) {
          yield this.emit({ phase: 'dag', kind: 'dangling-catalog-entry', severity: 'error', message: `catalog entry ${c.timeline}@${c.vtime} points at ${ref.cid}, which is not in the store`, cid: ref.cid, checkpoints: [ref] })
        }
      } else {
        try {
          m = decodeManifest(repo.blocks.get(c.cid))
        } catch (err) {
          if (!isCkptError(err)) throw err
          const kind: FindingKind = err.code === 'CKPT_HASH_MISMATCH' ? 'hash-mismatch' : 'bad-manifest'
          this.markDamaged(c.cid, kind, `manifest ${ref.cid}: ${err.message}`)
          hurt(c.cid)
        }
      }
      if (m && m.vtime !== c.vtime && this.opts.refs === undefined && !impactOnly) {
        yield this.emit({ phase: 'dag', kind: 'bad-catalog-entry', severity: 'error', message: `catalog entry ${c.timeline}@${c.vtime} points at a checkpoint of vtime ${m.vtime}`, cid: ref.cid, checkpoints: [ref] })
      }
      if (m) {
        const base = prev && prev.timeline === c.timeline ? prev.manifest : undefined
        for (const [name, reg] of Object.entries(m.regions)) {
          let geo: Geometry
          try {
            geo = new Geometry(reg.size, reg.chunkSize, reg.fanout)
          } catch {
            this.markDamaged(c.cid, 'bad-manifest', `manifest ${ref.cid}: region ${name} has an impossible shape`)
            hurt(c.cid)
            continue
          }
          const b = base?.regions[name]
          const baseRoot = b && b.size === reg.size && b.chunkSize === reg.chunkSize && b.fanout === reg.fanout ? b.root : null
          if (this.tree(reg.root, baseRoot, geo, geo.height, 0, hurt)) bad = true
        }
        for (const [name, blob] of Object.entries(m.blobs)) {
          let total = 0
          for (const ch of blob.chunks) {
            const i = this.present(ch.cid)
            if (i < 0) hurt(ch.cid)
            else if (this.table.raw[i] !== ch.length) {
              this.markDamaged(ch.cid, 'bad-manifest', `blob ${name} of ${ref.cid} says its chunk ${cidToString(ch.cid)} has ${ch.length} bytes, the store has ${this.table.raw[i]}`)
              hurt(ch.cid)
            }
            total += ch.length
          }
          if (total !== blob.size) {
            this.markDamaged(c.cid, 'bad-manifest', `manifest ${ref.cid}: blob ${name}'s chunks do not add up to its size`)
            hurt(c.cid)
          }
        }
        prev = { timeline: c.timeline, manifest: m }
      }
      if (bad) this.damagedCheckpoints.push(ref)
      this.opts.onProgress?.({ phase: 'dag', done: ++done, total, unit: 'checkpoints' })
      await this.clean!.flush()
    }
  }

  /**
   * The scan cache files a full scan would trust (their keyed sum holds, SPEC.md §2.1) must hold the
   * span digests of the tree they name: a file that does not would make `add` keep stale content for
   * the spans it claims unchanged. Each such file's region is read (verified) once.
   */
  private async *scanCaches(): AsyncGenerator<Finding> {
    const repo = this.repo
    if (repo.memory) return
    const key = await repo.scanKey({ create: false })
    if (!key) return
    for await (const [, v] of repo.kv.iterate(timelineRange)) {
      let rec: TimelineRecord
      try {
        rec = JSON.parse(dec.decode(v)) as TimelineRecord
      } catch {
        continue
      }
      const head = await repo.latest(rec.name).catch(() => undefined)
      let regions: Manifest['regions'] = {}
      if (head) {
        try {
          regions = decodeManifest(repo.blocks.get(head.cid)).regions
        } catch {}
      }
      for (const [region, spec] of Object.entries(rec.regions ?? {})) {
        const file = scanCachePath(repo.dir, rec.name, region)
        let bytes: Uint8Array
        try {
          bytes = fs.readFileSync(file)
        } catch {
          continue
        }
        const table = decodeSpanTable(bytes, key)
        if (!table || table.size !== spec.size || table.chunkSize !== spec.chunkSize || table.spanSize !== SPAN_SIZE) continue
        // a scan trusts a file only for the tree it diffs against, the head's: any other is never used
        const headRoot = regions[region]?.root
        if (!headRoot || !cidEquals(headRoot, table.root)) continue
        const geo = new Geometry(table.size, table.chunkSize, regions[region]!.fanout)
        let bad: number | undefined
        try {
          bad = await firstWrongSpan(repo, this.pool, geo, table)
        } catch (err) {
          if (!isCkptError(err)) throw err
          // the tree it names cannot be read: the scan would not use it (its root is no head's), or the
          // walk reports the damage
          continue
        }
        if (bad === undefined) continue
        yield this.emit({
          phase: 'data',
          kind: 'bad-scan-cache',
          severity: 'warning',
          message: `the scan cache of timeline ${rec.name}, region ${region} (${file}) holds digests its tree does not (first at span ${bad}): a full scan would keep stale content for the spans it claims unchanged; delete the file (ckpt add --no-scan-cache writes it anew)`,
          path: file,
        })
      }
    }
  }

  /** blocks whose entry fails its checksum while their content is intact (repair stores them anew) */
  readonly badChecksums: string[] = []

  /** Whether a block reads back right through the store's read path (which re-hashes, ignoring checksums). */
  private contentIntact(cid: CidBytes): boolean {
    try {
      this.repo.blocks.get(cid)
      return true
    } catch (err) {
      if (!isCkptError(err)) throw err
      return false
    }
  }

  /** catalog records found in the packs (phase 1), for the comparison with the catalog */
  private readonly records: CatalogRecord[] = []

  /**
   * Manifests the index lists ('M') that no catalog entry names: removed ones ('x': gc collects them)
   * are counted in one note; the others may be checkpoints a lost catalog forgot (a warning, each
   * of the first three named).
   */
  private async *uncatalogued(listed: Set<string>): AsyncGenerator<Finding> {
    const repo = this.repo
    let removed = 0
    let lost = 0
    const pinned = new Set<string>()
    for await (const r of repo.refs()) pinned.add(cidKey(r.cid))
    for await (const [k] of repo.kv.iterate(manifestRange)) {
      const cid = copyOf(k, 1)
      if (listed.has(cidKey(cid))) continue
      if ((await repo.kv.get(removedKey(cid))) !== undefined) {
        removed++
        continue
      }
      // a ref may still name it: the catalog knows it
      if (pinned.has(cidKey(cid))) continue
      lost++
      if (lost > 3) continue
      let where = ''
      try {
        const m = decodeManifest(repo.blocks.get(cid))
        where = ` (${m.timeline}@${m.vtime} by its manifest)`
      } catch {}
      this.indexFixable = true
      yield this.emit({ phase: 'dag', kind: 'uncatalogued-checkpoint', severity: 'warning', message: `checkpoint ${cidToString(cid)}${where} is stored but in no timeline, and no removal of it is recorded: the catalog may have lost it (ckpt repair --rebuild-index --adopt catalogues it; ckpt rm CID removes it for good)`, cid: cidToString(cid) })
    }
    if (lost > 3) yield this.emit({ phase: 'dag', kind: 'uncatalogued-checkpoint', severity: 'warning', message: `and ${lost - 3} more checkpoints stored but in no timeline, with no removal recorded` })
    if (removed > 0) yield this.emit({ phase: 'dag', kind: 'uncatalogued-checkpoint', severity: 'info', message: `${removed} removed checkpoint${removed === 1 ? ' is' : 's are'} still stored (thinned or removed: ckpt gc reclaims ${removed === 1 ? 'it' : 'them'})` })
  }

  /**
   * The catalog against the records in the packs (SPEC.md §5.1): the records replayed from the
   * newest snapshot must give exactly the index's timelines, entries, checkpoint records, removals
   * and refs. A difference means the index and the packs disagree on what the store holds: rebuild.
   */
  private async *catalogAgainstRecords(): AsyncGenerator<Finding> {
    const repo = this.repo
    if (repo.format < 2 || this.records.length === 0) return
    const plan = replayPlan(this.records)
    const pos = repo.catalogPosition
    // holes between the records found, and the index's last commits whose records are gone
    const missing = plan.missing + (pos && pos.seq > plan.seq ? pos.seq - plan.seq : 0)
    if (missing > 0) {
      this.indexFixable = true
      yield this.emit({ phase: 'dag', kind: 'missing-record', severity: 'warning', message: `${missing} catalog record${missing === 1 ? '' : 's'} after the newest snapshot ${missing === 1 ? 'is' : 'are'} not in the packs (damage): the packs alone could not rebuild the catalog; ckpt repair writes it to the packs anew` })
    }
    const replayed = new MemoryKV()
    for (const r of plan.apply) await replayed.batch(await catalogKvOps(replayed, r.ops))
    const diffs: string[] = []
    let count = 0
    for (const [name, range] of [
      ['timeline', timelineRange],
      ['checkpoint', allCheckpointsRange],
      ['ref', refRange],
      ['removal', removedRange],
      ['checkpoint record', { gte: Uint8Array.of(0x6b), lt: Uint8Array.of(0x6c) }],
    ] as const) {
      const a = new Map<string, string>()
      for await (const [k, v] of repo.kv.iterate(range)) a.set(Buffer.from(k).toString('hex'), Buffer.from(v).toString('hex'))
      for await (const [k, v] of replayed.iterate(range)) {
        const key = Buffer.from(k).toString('hex')
        const have = a.get(key)
        a.delete(key)
        if (have === Buffer.from(v).toString('hex')) continue
        // the removal of a manifest gc has collected since: nothing to compare (a rebuild drops it too)
        if (have === undefined && k[0] === 0x78 && (await repo.kv.get(manifestKey(k.subarray(1)))) === undefined) continue
        count++
        if (diffs.length < 3) diffs.push(`${name} ${describeKey(k)} ${have === undefined ? 'is in the records, not in the index' : 'differs'}`)
      }
      for (const key of a.keys()) {
        count++
        if (diffs.length < 3) diffs.push(`${name} ${describeKey(Buffer.from(key, 'hex'))} is in the index, not in the records`)
      }
    }
    if (pos && plan.seq > pos.seq) {
      count++
      diffs.unshift(`the packs hold commit ${plan.seq}, the index ends at ${pos.seq}`)
    }
    if (count === 0) return
    this.indexFixable = true
    yield this.emit({ phase: 'dag', kind: 'catalog-mismatch', severity: 'warning', message: `the index's catalog and the catalog records in the packs differ in ${count} place${count === 1 ? '' : 's'}: ${diffs.slice(0, 3).join('; ')}` })
  }

  /** Checkpoint records ('k') agree with the catalog; timeline records agree with their manifests. */
  private async *catalogRecords(list: { timeline: string; vtime: bigint; cid: CidBytes }[]): AsyncGenerator<Finding> {
    const repo = this.repo
    const byPlace = new Map<string, CidBytes>()
    for (const c of list) byPlace.set(`${c.timeline}\u0000${c.vtime}`, c.cid)
    const seen = new Set<string>()
    const firstOf = new Map<string, CidBytes>()
    for (const c of list) {
      if (!firstOf.has(c.timeline)) firstOf.set(c.timeline, c.cid)
      const k = cidKey(c.cid)
      if (seen.has(k)) continue
      seen.add(k)
      let rec: { timeline: string; vtime: bigint } | undefined
      try {
        rec = await repo.checkpointRecord(c.cid)
      } catch {
        rec = undefined
      }
      const agrees = rec && byPlace.get(`${rec.timeline}\u0000${rec.vtime}`) && cidEquals(byPlace.get(`${rec.timeline}\u0000${rec.vtime}`)!, c.cid)
      if (!agrees) {
        this.indexFixable = true
        yield this.emit({ phase: 'dag', kind: 'bad-catalog-entry', severity: 'warning', message: `the checkpoint record of ${cidToString(c.cid)} (${c.timeline}@${c.vtime}) is ${rec ? `wrong (says ${rec.timeline}@${rec.vtime})` : 'missing or unreadable'}`, cid: cidToString(c.cid) })
      }
    }
    for (const [name, cid] of firstOf) {
      let rec: TimelineRecord | undefined
      try {
        rec = await repo.getTimeline(name)
      } catch {
        continue // reported with the catalog keys
      }
      if (!rec || this.present(cid) < 0) continue
      let m: Manifest
      try {
        m = decodeManifest(repo.blocks.get(cid))
      } catch {
        continue // the walk reports it
      }
      const regions = Object.fromEntries(Object.entries(m.regions).map(([k, r]) => [k, { size: r.size, chunkSize: r.chunkSize }]))
      const same = (a: Record<string, unknown>, b: Record<string, unknown>) => JSON.stringify(Object.entries(a).sort()) === JSON.stringify(Object.entries(b).sort())
      if (rec.lineage !== m.lineage || !same(rec.regions, regions)) {
        this.indexFixable = true
        yield this.emit({ phase: 'dag', kind: 'bad-catalog-entry', severity: 'warning', message: `the record of timeline ${name} disagrees with its checkpoints (${rec.lineage !== m.lineage ? 'lineage' : 'regions'})` })
      }
    }
  }

  /**
   * Walks a (sub)tree; returns whether it holds damage. Slots equal to the same slot of `base`
   * inherit its verdict; nodes seen before keep theirs.
   */
  private tree(cid: CidBytes | null, base: CidBytes | null, geo: Geometry, level: number, index: number, hurt: (c: CidBytes) => void): boolean {
    if (!cid) return false
    const k = cidKey(cid)
    if (this.dirtyNodes.has(k)) {
      // charge the checkpoint for the damage below: find it again (cheap: only dirty paths)
      this.chargeBelow(cid, level, hurt)
      return true
    }
    // a node found clean is clean at any place of the same kind (chunk size, fan-out, level, and for the
    // last node of a level the region's size: what its slot count and chunk lengths depend on)
    const placed = cleanKey(cid, geo, level, index)
    if ((base && cidEquals(cid, base) && !this.dirtyNodes.has(cidKey(base))) || this.clean!.has(placed)) return false
    if (cid[1] !== DAG_CBOR) {
      this.markDamaged(cid, 'bad-node', `a raw block ${cidToString(cid)} is linked where a tree node belongs`)
      hurt(cid)
      this.dirtyNodes.add(k)
      return true
    }
    const at = this.present(cid)
    if (at < 0) {
      hurt(cid)
      this.dirtyNodes.add(k)
      return true
    }
    // a leaf stored as a change of the very node it is compared with (the usual case): only its
    // patched slots need looking at, without building the node
    if (level === 1 && base && this.table.codec[at] === AT_REST.nodeDelta && !this.dirtyNodes.has(cidKey(base))) {
      const r = this.leafPatch(cid, at, base, geo, index, hurt)
      if (r !== undefined) {
        if (r) this.dirtyNodes.add(k)
        else this.clean!.add(placed)
        return r
      }
    }
    const e = this.node(cid)
    if ('error' in e) {
      const kind: FindingKind = e.error.code === 'CKPT_HASH_MISMATCH' ? 'hash-mismatch' : e.error.code === 'CKPT_BAD_NODE' ? 'bad-node' : 'undecodable-block'
      this.markDamaged(cid, kind, `tree node ${cidToString(cid)}: ${e.error.message}`)
      hurt(cid)
      this.dirtyNodes.add(k)
      return true
    }
    if (e.count !== geo.nodeCount(level, index)) {
      this.markDamaged(cid, 'bad-node', `tree node ${cidToString(cid)} has ${e.count} slots where the region's shape needs ${geo.nodeCount(level, index)}`)
      hurt(cid)
      this.dirtyNodes.add(k)
      return true
    }
    if (level === 1) return this.leafAll(cid, e, geo, index, hurt)
    const be = base ? this.node(base) : undefined
    const same = be && !('error' in be) && be.count === e.count ? be : undefined
    // slots equal to the base's inherit its verdict: nothing to look at unless the base holds damage
    const baseDirty = base !== null && this.dirtyNodes.has(cidKey(base))
    let damaged = false
    const F = geo.fanout
    // with a clean base only the changed slots matter; with a dirty one every slot does
    const slots = baseDirty || !same ? allSlots(e.count) : changedSlots(e, same)
    for (const s of slots) {
      const codec = e.codecs[s]!
      if (!codec) continue
      const unchanged = same !== undefined && same.codecs[s] === codec && sameDigest(e.digests, same.digests, s)
      const child = childCid(e, s)
      if (this.tree(child, unchanged ? child : same && same.codecs[s] ? childCid(same, s) : null, geo, level - 1, index * F + s, hurt)) damaged = true
    }
    if (damaged) this.dirtyNodes.add(k)
    else this.clean!.add(placed)
    return damaged
  }

  /** A leaf's link in slot s: a raw chunk, stored intact, of the length its place needs. False if not (charged). */
  private chunkOk(leaf: CidBytes, codec: number, child: CidBytes, s: number, geo: Geometry, index: number, hurt: (c: CidBytes) => void): boolean {
    if (codec !== RAW) {
      this.markDamaged(leaf, 'bad-node', `leaf ${cidToString(leaf)} links a dag-cbor block in slot ${s}`)
      hurt(leaf)
      return false
    }
    const i = this.present(child)
    if (i < 0) {
      hurt(copyOf(child))
      return false
    }
    const want = geo.chunkLength(index * geo.fanout + s)
    if (this.table.raw[i] !== want) {
      const c = copyOf(child)
      this.markDamaged(c, 'bad-node', `chunk ${index * geo.fanout + s} (${cidToString(c)}) has ${this.table.raw[i]} bytes, the region's shape needs ${want}`)
      hurt(c)
      return false
    }
    return true
  }

  /** A leaf checked slot by slot (no base needed: every link is looked up). */
  private leafAll(cid: CidBytes, e: NodeEntries, geo: Geometry, index: number, hurt: (c: CidBytes) => void): boolean {
    let damaged = false
    for (let s = 0; s < e.count; s++) {
      const codec = e.codecs[s]!
      if (codec && !this.chunkOk(cid, codec, childCid(e, s), s, geo, index, hurt)) damaged = true
    }
    if (damaged) this.dirtyNodes.add(cidKey(cid))
    else this.clean!.add(cleanKey(cid, geo, 1, index))
    return damaged
  }

  /**
   * The leaf at table index `at`, stored as a delta: when its base is `base`, checks the patched
   * slots and returns whether there is damage; undefined when the delta has another base.
   */
  private leafPatch(cid: CidBytes, at: number, base: CidBytes, geo: Geometry, index: number, hurt: (c: CidBytes) => void): boolean | undefined {
    const t = this.table
    let payload = this.kept.get(at)
    let patch: NodePatch
    try {
      if (!payload) payload = copyOf(this.repo.blocks.io.read(t.pack[at]!, t.offset[at]! + 52, t.stored[at]!))
      patch = readNodePatch(payload)
    } catch (err) {
      if (!isCkptError(err)) throw err
      this.markDamaged(cid, 'bad-node', `tree node ${cidToString(cid)}: ${err.message}`)
      hurt(cid)
      return true
    }
    if (!cidEquals(patch.baseCid, base)) return undefined
    if (patch.count !== geo.nodeCount(1, index)) {
      this.markDamaged(cid, 'bad-node', `tree node ${cidToString(cid)} has ${patch.count} slots where the region's shape needs ${geo.nodeCount(1, index)}`)
      hurt(cid)
      return true
    }
    let damaged = false
    const child = new Uint8Array(36)
    child[0] = 0x01
    child[2] = 0x1e
    child[3] = 0x20
    for (let p = 0; p < patch.slots.length; p++) {
      const codec = patch.codecs[p]!
      if (codec === 0) continue
      child[1] = codec
      child.set(patch.delta.subarray(patch.digestAt[p]!, patch.digestAt[p]! + 32), 4)
      if (!this.chunkOk(cid, codec, child, patch.slots[p]!, geo, index, hurt)) damaged = true
    }
    return damaged
  }

  /** Charges a checkpoint for every damaged block under a node already known to hold damage. */
  private chargeBelow(cid: CidBytes, level: number, hurt: (c: CidBytes) => void): void {
    const k = cidKey(cid)
    if (this.damaged.has(k)) hurt(cid)
    if (!this.dirtyNodes.has(k)) return
    const e = this.node(cid)
    if ('error' in e) return
    for (let s = 0; s < e.count; s++) {
      if (!e.codecs[s]) continue
      const child = childCid(e, s)
      if (level === 1) {
        if (this.damaged.has(cidKey(child))) hurt(child)
      } else this.chargeBelow(child, level - 1, hurt)
    }
  }

  // ----------------------------------------------------------------------- phase 3: data

  private async *data(): AsyncGenerator<Finding> {
    const blocks = this.repo.blocks
    const t = this.table
    const pct = this.opts.deep ? 100 : this.opts.sample!
    // entries in file order (reads run front to back); sampling picks by digest bits, reproducibly
    const plain: number[] = []
    const deltas: number[] = []
    for (let i = 0; i < t.n; i++) {
      if (t.state[i] !== ENTRY_OK) continue
      if (pct < 100 && (t.cids[i * 36 + 8]! | (t.cids[i * 36 + 9]! << 8)) / 65536 >= pct / 100) continue
      ;(t.codec[i] === AT_REST.nodeDelta ? deltas : plain).push(i)
    }
    const byPlace = (a: number, b: number) => t.pack[a]! - t.pack[b]! || t.offset[a]! - t.offset[b]!
    plain.sort(byPlace)
    // in file order a node's base (its previous version, written before it) was just resolved
    deltas.sort(byPlace)
    const total = [...plain, ...deltas].reduce((n, i) => n + t.stored[i]!, 0)
    let done = 0
    const progress = (list: number[]) => {
      for (const i of list) {
        this.dataBlocks++
        this.dataBytes += t.raw[i]!
        done += t.stored[i]!
      }
      this.opts.onProgress?.({ phase: 'data', done, total, unit: 'bytes' })
    }
    const damagedAt = (i: number, kind: FindingKind, why: string) => {
      this.markDamaged(t.cid(i), kind, `block ${cidToString(t.cid(i))} in pack ${t.pack[i]} at offset ${t.offset[i]}: ${why}`, { pack: t.pack[i], offset: t.offset[i] })
      // no longer an intact copy: the walk that follows charges every checkpoint reaching it
      t.state[i] = ENTRY_BAD
      this.nodes.delete(i)
    }
    /** stored blocks: read, decompressed and re-hashed on a worker */
    const readCheck = async (list: number[]) => {
      let at = 0
      while (at < list.length) {
        const part = list.slice(at)
        const file = blocks.io.filePath(t.pack[part[0]!]!)
        // the memory backend has no files: the payloads go along
        let payloads: Uint8Array | undefined
        if (file === undefined) {
          payloads = new Uint8Array(part.reduce((n, i) => n + t.stored[i]!, 0))
          let p = 0
          for (const i of part) {
            payloads.set(blocks.io.read(t.pack[i]!, t.offset[i]! + 52, t.stored[i]!), p)
            p += t.stored[i]!
          }
        }
        let po = 0
        const cids = new Uint8Array(part.length * 36)
        part.forEach((i, k) => cids.set(t.cids.subarray(i * 36, i * 36 + 36), k * 36))
        const r = await this.pool.run({
          op: 'read',
          files: file === undefined ? undefined : [file],
          fileIdx: file === undefined ? undefined : new Uint32Array(part.length),
          payloads,
          offsets: Float64Array.from(part, (i) => {
            if (file !== undefined) return t.offset[i]!
            const o = po
            po += t.stored[i]!
            return o
          }),
          storedLengths: Uint32Array.from(part, (i) => t.stored[i]!),
          codes: Uint8Array.from(part, (i) => t.codec[i]!),
          rawLengths: Uint32Array.from(part, (i) => t.raw[i]!),
          cids,
          outOffsets: new Float64Array(part.length),
          verifyOnly: true,
        })
        if (r.bad < 0) break
        damagedAt(part[r.bad]!, r.code === 'CKPT_HASH_MISMATCH' ? 'hash-mismatch' : 'undecodable-block', r.message ?? 'unreadable')
        at += r.bad + 1
      }
      progress(list)
    }
    /** nodes stored as deltas: resolved here (from the walk's decoded nodes), encoded and hashed on a worker */
    const nodeCheck = async (list: number[]) => {
      const ok: number[] = []
      const entries: NodeEntries[] = []
      for (const i of list) {
        const e = this.node(t.cid(i))
        if ('error' in e) damagedAt(i, 'undecodable-block', e.error.message)
        else {
          ok.push(i)
          entries.push(e)
        }
      }
      const slots = entries.reduce((n, e) => n + e.count, 0)
      const task = { op: 'nodes' as const, counts: Uint32Array.from(entries, (e) => e.count), codecs: new Uint8Array(slots), digests: new Uint8Array(slots * 32) }
      let at = 0
      for (const e of entries) {
        task.codecs.set(e.codecs, at)
        task.digests.set(e.digests, at * 32)
        at += e.count
      }
      const r = await this.pool.run(task, [task.counts.buffer, task.codecs.buffer, task.digests.buffer] as ArrayBuffer[])
      ok.forEach((i, k) => {
        for (let j = 0; j < 32; j++) {
          if (r.hashes[k * 32 + j] !== t.cids[i * 36 + 4 + j]) {
            damagedAt(i, 'hash-mismatch', 'the node its delta chain gives does not match its hash')
            return
          }
        }
      })
      progress(list)
    }
    const jobs: (() => Promise<void>)[] = []
    let cur: number[] = []
    let bytes = 0
    for (const i of plain) {
      if (cur.length && (t.pack[cur[0]!] !== t.pack[i] || bytes >= 4 << 20)) {
        const list = cur
        jobs.push(() => readCheck(list))
        cur = []
        bytes = 0
      }
      cur.push(i)
      bytes += t.stored[i]!
    }
    if (cur.length) {
      const list = cur
      jobs.push(() => readCheck(list))
    }
    for (let k = 0; k < deltas.length; k += 512) {
      const list = deltas.slice(k, k + 512)
      jobs.push(() => nodeCheck(list))
    }
    const inflight = new Set<Promise<void>>()
    for (const job of jobs) {
      const p: Promise<void> = job().finally(() => inflight.delete(p))
      inflight.add(p)
      if (inflight.size >= Math.max(2, this.pool.threads * 2)) await Promise.race(inflight)
    }
    await Promise.all(inflight)
  }
}


/**
 * The key a node's clean verdict is kept under: its CID with the kind of place mixed into the digest
 * (chunk size, fan-out, level; the region's size for the last node of a level, whose slot count and
 * last chunk depend on it). A node reused at a place of another kind is checked again.
 */
function cleanKey(cid: CidBytes, geo: Geometry, level: number, index: number): CidBytes {
  const last = index === geo.itemsAt(level) - 1
  const kind = `${geo.chunkSize}/${geo.fanout}/${level}/${last ? geo.size : ''}`
  if (kind === '4096/256/1/' || kind === '65536/256/1/') return cid // the common places keep the CID itself (no hashing)
  const mix = blake3(Buffer.from(kind))
  const out = Uint8Array.from(cid)
  for (let k = 0; k < 16; k++) out[4 + k]! ^= mix[k]!
  return out
}

/** A catalog key as text, for messages (a name, a TIMELINE@VTIME, a CID). */
function describeKey(k: Uint8Array): string {
  try {
    if (k[0] === 0x63) return `${checkpointKeyTimeline(k)}@${checkpointKeyVtime(k)}`
    if (k[0] === 0x78 || k[0] === 0x6b) return cidToString(copyOf(k, 1))
    return JSON.stringify(dec.decode(k.subarray(1)))
  } catch {
    return Buffer.from(k).toString('hex').slice(0, 40)
  }
}

/**
 * The first span whose digest (or zero flag) in `table` is not that of the tree `table.root` names;
 * undefined when every span agrees. Reads the region's chunks in order, verified on the worker pool.
 */
async function firstWrongSpan(repo: Repository, pool: WorkerPool, geo: Geometry, table: SpanTable): Promise<number | undefined> {
  const leaves: (NodeEntries | null)[] = []
  walkLeaves(repo.blocks, geo, table.root, (_j, e) => leaves.push(e))
  const per = table.spanSize / geo.chunkSize
  const spans = table.zero.length
  const zeros = new Uint8Array(table.spanSize)
  const BATCH = 64
  for (let first = 0; first < spans; first += BATCH) {
    const last = Math.min(spans, first + BATCH)
    const from = first * per
    const to = Math.min(geo.chunks, last * per)
    const cids: CidBytes[] = []
    const at: number[] = []
    for (let i = from; i < to; i++) {
      const e = leaves[Math.floor(i / geo.fanout)]
      const s = i % geo.fanout
      if (e && e.codecs[s]) {
        cids.push(childCid(e, s))
        at.push(i)
      }
    }
    const locs = await repo.blocks.locateMany(cids)
    if (locs.some((l) => l === undefined)) throw new CkptError('CKPT_NOT_FOUND', 'a chunk of the tree is missing')
    const data = cids.length ? await readBlocks(repo.blocks, pool, cids, locs as BlockLocation[]) : new Uint8Array(0)
    const bytes = new Uint8Array((to - from) * geo.chunkSize)
    let o = 0
    at.forEach((i, k) => {
      const len = locs[k]!.rawLength
      bytes.set(data.subarray(o, o + len), (i - from) * geo.chunkSize)
      o += len
    })
    for (let sp = first; sp < last; sp++) {
      const start = (sp - first) * table.spanSize
      const end = Math.min(bytes.length, start + table.spanSize, geo.size - first * table.spanSize)
      const span = bytes.subarray(start, end)
      const isZero = Buffer.from(span.buffer, span.byteOffset, span.byteLength).equals(zeros.subarray(0, span.length))
      if (isZero !== (table.zero[sp] === 1)) return sp
      if (isZero) continue
      const d = blake3(span)
      for (let k = 0; k < 32; k++) if (d[k] !== table.digests[sp * 32 + k]) return sp
    }
  }
  return undefined
}

const ALL = new Map<number, number[]>()
function allSlots(n: number): number[] {
  let a = ALL.get(n)
  if (!a) ALL.set(n, (a = Array.from({ length: n }, (_, i) => i)))
  return a
}
