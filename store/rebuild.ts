/**
 * The index from the packs alone (SPEC.md §7.2): every intact entry of every pack is indexed, every
 * manifest listed, and the catalog is replayed from the catalog records. Used by `repair
 * --rebuild-index`, by a writer that finds the index missing, empty or behind the packs, and by a
 * reader that cannot use the index at all (a read-only medium, a full disk, damage): it then builds
 * this index in memory.
 *
 * Also here: the cheap check, at every open, of whether the packs hold commits the index does not
 * know (packHealth).
 */
import { decodeRecord, type CatalogOp, type CatalogRecord } from '../codecs/catalog-record.js'
import { cidToString, DAG_CBOR, type CidBytes } from '../codecs/cid.js'
import { AT_REST, storedAsDelta } from '../codecs/compress.js'
import { CkptError } from '../codecs/errors.js'
import { decodeManifest, type Manifest } from '../codecs/manifest.js'
import { decodeLocation, encodeLocation, encodePackRecord, type BlockLocation, type PackRecord } from './block-store.js'
import { catalogKvOps } from './catalog.js'
import { blockKey, checkpointKey as checkpointKeyOf, checkpointRecordKey, jsonValue, manifestKey, META_CATALOG, META_CHUNK_DELTAS, metaKey, packKey, recordKey, refKey as refKeyOf, removedKey, removedRange, timelineKey as timelineKeyOf } from './keys.js'
import type { KV, KVOp } from './kv.js'
import { decodeEntryHeader, ENTRY_HEADER_SIZE, ENTRY_KIND, inflatePayload, isFault, openPayload, proveRaw } from '../codecs/pack-format.js'
import { scanPack, type PackReader, type ScannedEntry } from './pack-scan.js'

/** Where a rebuild reads packs: numbered files, each as a reader. */
export interface PackSource {
  list(): number[]
  reader(packNo: number): PackReader
}

/** A manifest no catalog record covers (nor a removal): reported, never dropped silently. */
export interface UncoveredCheckpoint {
  cid: string
  timeline: string
  vtime: string
}

export interface RebuildSummary {
  packs: number
  /** blocks indexed */
  blocks: number
  manifests: number
  /** catalog records read, and the newest seq */
  records: number
  seq: number
  /** seq of the snapshot the catalog was replayed from (0: from the first record) */
  snapshotSeq: number
  checkpoints: number
  timelines: number
  refs: number
  /** packs with damage in them (recorded as retired: never appended to) */
  damagedPacks: number[]
  /** holes in the record stream after the snapshot: catalog changes that could not be read */
  missingRecords: number
  /** the packs hold no catalog record at all (a store of format 1): the catalog is not from records */
  legacy: boolean
  /** catalog entries (checkpoints, timelines, refs) kept from the old index: the records lacked them and nothing removed them */
  keptFromIndex: number
  /** checkpoints catalogued from their manifests (no records, and no old catalog to go by) */
  adopted: number
  uncovered: UncoveredCheckpoint[]
  /** ref and timeline names some replayed record set or deleted */
  mentioned: { refs: Set<string>; timelines: Set<string> }
}

/** A dag-cbor block's bytes, if they decode as a checkpoint manifest (a CBOR map that is one). */
export function manifestOf(e: { codec: number; rawLength: number; payload: Uint8Array; cid: Uint8Array }): Manifest | undefined {
  if (e.cid[1] !== DAG_CBOR || e.codec === AT_REST.nodeDelta) return undefined
  try {
    const raw = inflatePayload(e.codec, e.payload, e.rawLength)
    // a manifest is a CBOR map (major type 5); tree nodes are arrays, not worth hashing
    if (isFault(raw) || raw[0]! >> 5 !== 5 || isFault(proveRaw(raw, e.cid, 4))) return undefined
    return decodeManifest(raw)
  } catch {
    return undefined
  }
}

/** A record entry's bytes decoded and checked against the entry's CID; undefined if damaged. */
export function recordOf(e: { codec: number; rawLength: number; payload: Uint8Array; cid: Uint8Array }): CatalogRecord | undefined {
  try {
    const raw = openPayload(e.codec, e.payload, e.rawLength, e.cid, 4)
    return isFault(raw) ? undefined : decodeRecord(raw)
  } catch (err) {
    if (err instanceof CkptError && err.code === 'CKPT_VERSION') throw err
    return undefined
  }
}

const BATCH = 10_000

/**
 * Fills `target` (empty) with the index the packs describe: 'b' locations, 'M' manifests, 'p' pack
 * records, the catalog families from the records, and 'm' catalog. With no record in any pack (a
 * format-1 store), the catalog is left empty and `legacy` is set: the caller decides where it comes
 * from (the old index's, or the manifests').
 */
export async function rebuildFromPacks(io: PackSource, target: KV, opts: { onProgress?: (done: number, total: number) => void } = {}): Promise<RebuildSummary> {
  const files = io.list()
  const summary: RebuildSummary = {
    packs: files.length,
    blocks: 0,
    manifests: 0,
    records: 0,
    seq: 0,
    snapshotSeq: 0,
    checkpoints: 0,
    timelines: 0,
    refs: 0,
    damagedPacks: [],
    missingRecords: 0,
    legacy: false,
    keptFromIndex: 0,
    adopted: 0,
    uncovered: [],
    mentioned: { refs: new Set(), timelines: new Set() },
  }
  const ix = new PackIndexer(io, target)
  let done = 0
  for (const n of files) {
    const rec = await ix.indexPack(n)
    if (rec.retired) summary.damagedPacks.push(n)
    opts.onProgress?.(++done, files.length)
  }
  await ix.flush()
  summary.manifests = ix.manifests.length
  let count = 0
  for await (const _ of target.iterate({ gte: Uint8Array.of(0x62), lt: Uint8Array.of(0x63) })) count++
  summary.blocks = count
  await replayRecords(target, ix.records, summary)
  // removals of manifests no longer stored (gc collected them after the record was written) say nothing
  const gone: KVOp[] = []
  for await (const [k] of target.iterate(removedRange)) {
    if ((await target.get(manifestKey(k.subarray(1)))) === undefined) gone.push({ type: 'del', key: Uint8Array.prototype.slice.call(k) })
  }
  await target.batch(gone)
  await countCatalog(target, summary)
  await findUncovered(target, summary, ix.manifests)
  return summary
}

/**
 * The index entries of the packs, pack by pack: locations ('b'), manifests ('M'), record locations
 * ('r') and pack records ('p'), written in batches; the catalog records found are kept for the replay.
 */
class PackIndexer {
  private ops: KVOp[] = []
  /** locations written in the current batch (later copies of a CID must see earlier ones) */
  private readonly pending = new Map<string, BlockLocation>()
  readonly records: CatalogRecord[] = []
  readonly manifests: { cid: CidBytes; m: Manifest }[] = []
  private readonly seenManifest = new Set<string>()
  /** whether a chunk delta was indexed (META_CHUNK_DELTAS written once) */
  private chunkDeltas = false

  constructor(
    private readonly io: PackSource,
    private readonly target: KV,
  ) {}

  async flush(): Promise<void> {
    if (this.ops.length) await this.target.batch(this.ops)
    this.ops = []
    this.pending.clear()
  }

  /** Indexes one pack's intact entries (and salvaged ones); returns the pack record written for it. */
  async indexPack(n: number): Promise<PackRecord> {
    const io = this.io
    let sealed = false
    let damaged = false
    let end = 0
    let entries = 0
    let size = 0
    // version-1 packs do not mark manifests: their dag-cbor entries are looked at
    let marked = false
    for (const ev of scanPack(io.reader(n), n, { sealed: true })) {
      if (ev.kind === 'header') marked = ev.version >= 2
      else if (ev.kind === 'footer') sealed = true
      else if (ev.kind === 'bad-header') damaged = true
      else if (ev.kind === 'end') size = ev.fileSize
      if (ev.kind === 'damage') damaged = true
      // damaged bytes that still hold a whole block whose content hashes to its CID (only its
      // checksum is hurt): indexed like an intact entry, as every read would take it
      const salvaged = ev.kind === 'damage' ? salvage(io, n, ev.offset, ev.length) : undefined
      if (ev.kind !== 'entry' && !salvaged) continue
      const e = ev.kind === 'entry' ? ev.entry : salvaged!
      entries++
      end = e.offset + ENTRY_HEADER_SIZE + e.storedLength
      if (!this.indexEntry(n, e, marked)) damaged = true
      if (this.ops.length >= BATCH) await this.flush()
    }
    const rec: PackRecord = sealed && !damaged
      ? { committedLength: size, sealed: true, entries }
      : { committedLength: damaged ? size : Math.max(end, 16), sealed: damaged, retired: damaged, entries }
    this.ops.push({ type: 'put', key: packKey(n), value: encodePackRecord(rec) })
    return rec
  }

  /** One intact entry into the batch; false for a catalog record that does not decode (damage). */
  private indexEntry(n: number, e: ScannedEntry, marked: boolean): boolean {
    const { ops, pending } = this
    if (e.kind === ENTRY_KIND.record) {
      const r = recordOf(e)
      if (!r) return false
      this.records.push(r)
      // where it is (a later copy, gc's, wins)
      const loc: BlockLocation = { pack: n, offset: e.offset, storedLength: e.storedLength, rawLength: e.rawLength, codec: e.codec, depth: 0 }
      ops.push({ type: 'put', key: recordKey(r.seq, r.snapshot?.part ?? 0), value: encodeLocation(loc) })
      return true
    }
    const loc: BlockLocation = { pack: n, offset: e.offset, storedLength: e.storedLength, rawLength: e.rawLength, codec: e.codec, depth: e.depth }
    if (e.codec === AT_REST.chunkDelta && !this.chunkDeltas) {
      // the store holds chunk deltas: gc must look for live ones whose base is dead
      this.chunkDeltas = true
      ops.push({ type: 'put', key: metaKey(META_CHUNK_DELTAS), value: jsonValue(true) })
    }
    if (e.cid[1] !== DAG_CBOR) {
      // a chunk has no delta chain: the later copy wins, no lookup
      ops.push({ type: 'put', key: blockKey(Uint8Array.prototype.slice.call(e.cid)), value: encodeLocation(loc) })
    } else if (choose(e.cid, loc, pending, this.target)) {
      const cid = Uint8Array.prototype.slice.call(e.cid) as CidBytes
      pending.set(Buffer.from(cid).toString('latin1'), loc)
      ops.push({ type: 'put', key: blockKey(cid), value: encodeLocation(loc) })
    }
    const isManifest = e.kind === ENTRY_KIND.manifest || (!marked && e.cid[1] === DAG_CBOR && e.codec !== AT_REST.nodeDelta && looksLikeMap(e))
    const key = Buffer.from(e.cid).toString('latin1')
    if (!isManifest || this.seenManifest.has(key)) return true
    const m = manifestOf(e)
    if (m) {
      this.seenManifest.add(key)
      const cid = Uint8Array.prototype.slice.call(e.cid) as CidBytes
      this.manifests.push({ cid, m })
      ops.push({ type: 'put', key: manifestKey(cid), value: new Uint8Array(0) })
    }
    return true
  }
}

/** The catalog records replayed from the newest snapshot into `target` ('m' catalog position too); none: a format-1 store (`legacy`). */
async function replayRecords(target: KV, records: CatalogRecord[], summary: RebuildSummary): Promise<void> {
  summary.records = records.length
  if (records.length === 0) {
    summary.legacy = true
    return
  }
  const plan = replayPlan(records)
  summary.seq = plan.seq
  summary.snapshotSeq = plan.snapshotSeq
  summary.missingRecords = plan.missing
  for (const r of plan.apply) {
    const kvOps = await catalogKvOps(target, r.ops)
    await target.batch(kvOps)
    for (const o of r.ops) {
      if (o.op === 'ref') summary.mentioned.refs.add(o.name)
      else if (o.op === 'timeline') summary.mentioned.timelines.add(o.record.name)
    }
  }
  await target.batch([{ type: 'put', key: metaKey(META_CATALOG), value: jsonValue({ seq: plan.seq, snapshot: plan.snapshotSeq }) }])
}

/** Manifests no catalog entry names and no removal record explains. */
async function findUncovered(target: KV, summary: RebuildSummary, manifests: { cid: CidBytes; m: Manifest }[]): Promise<void> {
  summary.uncovered = []
  for (const { cid, m } of manifests) {
    if ((await target.get(checkpointRecordKey(cid))) !== undefined) continue
    if ((await target.get(removedKey(cid))) !== undefined) continue
    summary.uncovered.push({ cid: cidToString(cid), timeline: m.timeline, vtime: m.vtime.toString() })
  }
}

/**
 * After a rebuild from records: the old index's catalog entries the records lack, where nothing
 * says they were removed (the records that made them were lost, e.g. with a damaged pack): kept,
 * never dropped because the packs' record of them is gone. A checkpoint is kept when its manifest
 * is stored and no removal of it is recorded; a timeline when no record names it; a ref when no
 * record set or deleted it.
 */
export async function keepFromOldCatalog(target: KV, summary: RebuildSummary, old: CatalogOp[]): Promise<number> {
  const ops: CatalogOp[] = []
  const timelines = new Map<string, CatalogOp>()
  for (const o of old) if (o.op === 'timeline') timelines.set(o.record.name, o)
  const wanted = new Set<string>()
  for (const o of old) {
    if (o.op === 'add') {
      if ((await target.get(manifestKey(o.cid))) === undefined) continue
      if ((await target.get(removedKey(o.cid))) !== undefined) continue
      const here = await target.get(checkpointKeyOf(o.timeline, o.vtime))
      if (here !== undefined) continue
      if ((await target.get(timelineKeyOf(o.timeline))) === undefined) wanted.add(o.timeline)
      ops.push(o)
    } else if (o.op === 'ref') {
      if (summary.mentioned.refs.has(o.name) || o.cid === null) continue
      if ((await target.get(refKeyOf(o.name))) !== undefined) continue
      if ((await target.get(manifestKey(o.cid))) === undefined) continue
      ops.push(o)
    } else if (o.op === 'timeline') {
      if (summary.mentioned.timelines.has(o.record.name)) continue
      if ((await target.get(timelineKeyOf(o.record.name))) !== undefined) continue
      wanted.add(o.record.name)
    }
  }
  const tl: CatalogOp[] = []
  for (const name of wanted) {
    const t = timelines.get(name)
    if (t) tl.push(t)
  }
  const all = [...tl, ...ops]
  if (all.length === 0) return 0
  await target.batch(await catalogKvOps(target, all))
  summary.keptFromIndex = all.length
  await countCatalog(target, summary)
  return all.length
}

/**
 * The block an entry at `offset` holds although the bytes fail their checksum: its header plausible
 * and its content (decompressed) hashing to its CID. Node deltas cannot be checked alone: never.
 */
function salvage(io: PackSource, n: number, offset: number, length: number): ScannedEntry | undefined {
  if (length < ENTRY_HEADER_SIZE) return undefined
  const r = io.reader(n)
  try {
    const head = Buffer.alloc(ENTRY_HEADER_SIZE)
    if (r.read(head, offset) !== ENTRY_HEADER_SIZE) return undefined
    let h
    try {
      h = decodeEntryHeader(head)
    } catch {
      return undefined
    }
    if (h.kind === ENTRY_KIND.record || storedAsDelta(h.codec) || h.codec > AT_REST.chunkDelta) return undefined
    if (h.cid[0] !== 0x01 || (h.cid[1] !== 0x55 && h.cid[1] !== DAG_CBOR) || h.cid[2] !== 0x1e || h.cid[3] !== 0x20) return undefined
    if (ENTRY_HEADER_SIZE + h.storedLength > length) return undefined
    const payload = new Uint8Array(h.storedLength)
    if (r.read(payload, offset + ENTRY_HEADER_SIZE) !== h.storedLength) return undefined
    if (isFault(openPayload(h.codec, payload, h.rawLength, h.cid, 4))) return undefined
    return { offset, storedLength: h.storedLength, rawLength: h.rawLength, codec: h.codec, depth: h.depth, kind: h.kind, cid: h.cid, payload, bytes: Buffer.concat([head, payload]) }
  } catch {
    return undefined
  } finally {
    r.close?.()
  }
}

/** A plain dag-cbor entry whose payload (decompressed if need be) starts with a CBOR map header. */
function looksLikeMap(e: ScannedEntry): boolean {
  if (e.codec === AT_REST.identity) return e.payload[0]! >> 5 === 5
  return true // compressed: manifestOf() decides
}

/**
 * Whether `loc` should be the indexed copy of its CID: a whole copy beats a node delta (whose base
 * may be gone: gc stores such blocks anew and leaves the old copy behind), and a later copy beats an
 * earlier one of the same kind (gc's copies, repair's new copies and re-encoded nodes come later).
 */
function choose(cid: Uint8Array, loc: BlockLocation, pending: Map<string, BlockLocation>, target: KV): boolean {
  const key = Buffer.from(cid).toString('latin1')
  let have = pending.get(key)
  if (!have) {
    const v = target.getSync(blockKey(cid))
    if (v) have = decodeLocation(v)
  }
  if (!have) return true
  const whole = (l: BlockLocation) => !storedAsDelta(l.codec)
  if (whole(have) && !whole(loc)) return false
  return true
}

/**
 * Which records rebuild the catalog: the newest snapshot whose parts are all there, in part order,
 * then every record after it in seq order (or, with no complete snapshot, every record). Holes in
 * the seq numbers after the snapshot are counted.
 */
export function replayPlan(records: CatalogRecord[]): { apply: CatalogRecord[]; seq: number; snapshotSeq: number; missing: number } {
  const bySeq = new Map<number, CatalogRecord[]>()
  let seq = 0
  for (const r of records) {
    let l = bySeq.get(r.seq)
    if (!l) bySeq.set(r.seq, (l = []))
    l.push(r)
    seq = Math.max(seq, r.seq)
  }
  let snapshotSeq = 0
  for (const [s, list] of bySeq) {
    const parts = list.filter((r) => r.snapshot)
    if (parts.length === 0) continue
    const n = parts[0]!.snapshot!.parts
    const have = new Set(parts.filter((r) => r.snapshot!.parts === n).map((r) => r.snapshot!.part))
    if (have.size === n && s > snapshotSeq) snapshotSeq = s
  }
  const apply: CatalogRecord[] = []
  if (snapshotSeq > 0) {
    const parts = new Map<number, CatalogRecord>()
    for (const r of bySeq.get(snapshotSeq)!) if (r.snapshot) parts.set(r.snapshot.part, r)
    for (let p = 0; p < parts.size; p++) apply.push(parts.get(p)!)
  }
  const seqs = [...bySeq.keys()].filter((s) => s > snapshotSeq).sort((a, b) => a - b)
  let missing = 0
  let expect = snapshotSeq > 0 ? snapshotSeq + 1 : Math.min(...seqs, Infinity)
  for (const s of seqs) {
    if (s > expect) missing += s - expect
    expect = s + 1
    // a seq is one commit: its record once (copies made by gc are identical)
    const r = bySeq.get(s)!.find((x) => !x.snapshot)
    if (r) apply.push(r)
  }
  return { apply, seq, snapshotSeq, missing }
}

async function countCatalog(kv: KV, s: RebuildSummary): Promise<void> {
  const count = async (p: number) => {
    let n = 0
    for await (const _ of kv.iterate({ gte: Uint8Array.of(p), lt: Uint8Array.of(p + 1) })) n++
    return n
  }
  s.checkpoints = await count(0x63)
  s.timelines = await count(0x74)
  s.refs = await count(0x72)
}

/**
 * Catalog ops that catalogue manifests by their own fields (a store without records, or `adopt`):
 * each in the timeline it names, created from the manifest when `existing` does not know it; another
 * history (lineage) under a name already taken gets the timeline NAME~LINEAGE8.
 */
export function adoptOps(list: { cid: CidBytes; m: Manifest }[], existing: (timeline: string) => { lineage: string } | undefined): CatalogOp[] {
  const ops: CatalogOp[] = []
  const mine = new Map<string, string>()
  const assigned = new Map<string, string>()
  for (const { cid, m } of list) {
    const key = `${m.timeline}\u0000${m.lineage}`
    let name = assigned.get(key)
    if (name === undefined) {
      name = m.timeline
      const owner = mine.get(name) ?? existing(name)?.lineage
      if (owner !== undefined && owner !== m.lineage) name = `${m.timeline}~${m.lineage.slice(0, 8)}`
      assigned.set(key, name)
      if (!mine.has(name) && !existing(name)) {
        mine.set(name, m.lineage)
        ops.push({
          op: 'timeline',
          record: { name, lineage: m.lineage, regions: Object.fromEntries(Object.entries(m.regions).map(([k, r]) => [k, { size: r.size, chunkSize: r.chunkSize }])), created: m.wall },
        })
      }
    }
    ops.push({ op: 'add', timeline: name, vtime: m.vtime, cid })
  }
  return ops
}

// ------------------------------------------------------------------------------------ pack health

export interface PackHealth {
  /** the packs hold commits the index does not know (its catalog is behind): rebuild */
  stale: string | undefined
  /** pack files no record names that hold nothing the index lacks (crash leftovers a writer deletes) */
  leftovers: number[]
}

/**
 * Whether the packs hold commits past the index's: a pack file no record names, or bytes past an
 * unsealed pack's committed length, holding a catalog record of a later commit than the one that
 * may have been under way at a crash (seq > indexSeq + 1). Reads only those files and tails.
 */
export function packHealth(io: PackSource & { size(n: number): number }, records: ReadonlyMap<number, PackRecord>, indexSeq: number): PackHealth {
  const out: PackHealth = { stale: undefined, leftovers: [] }
  for (const n of io.list()) {
    const rec = records.get(n)
    if (rec && (rec.sealed || rec.retired)) continue
    const from = rec ? rec.committedLength : 0
    let size: number
    try {
      size = io.size(n)
    } catch {
      continue
    }
    if (rec && size <= from) continue
    let later: number | undefined
    let version = 0
    let entries = 0
    for (const ev of scanPack(io.reader(n), n, { start: from })) {
      if (ev.kind === 'header') version = ev.version
      if (ev.kind === 'entry') entries++
      if (ev.kind !== 'entry' || ev.entry.kind !== ENTRY_KIND.record) continue
      const r = recordOf(ev.entry)
      if (r && r.seq > indexSeq + 1) later = Math.max(later ?? 0, r.seq)
    }
    if (later !== undefined) {
      out.stale = `${rec ? `the tail of pack ${n}` : `pack ${n}, which the index does not list,`} holds commit ${later}, the index ends at commit ${indexSeq}`
      return out
    }
    // a format-1 pack (or one with a broken header) no record names: nothing says what it held;
    // never a leftover — unless it holds no intact entry at all (a file a crash cut
    // before its first bytes were written)
    if (!rec && (version === 2 || entries === 0)) out.leftovers.push(n)
  }
  return out
}
