/**
 * Blocks at rest: append-only packs plus their LevelDB index, with a staged transaction.
 * put() appends to the open pack (buffered); prepareCommit() makes the bytes durable and returns the
 * index operations, which the caller writes in the same LevelDB batch as the catalog entries that
 * reference them; only then do the blocks count as stored (SPEC.md §7).
 */
import { copyOf } from '../codecs/bytes.js'
import { blake3, blake3Equals } from '../codecs/blake3.js'
import { CID_LENGTH, cidCodec, cidDigest, cidEquals, cidKey, cidToString, DAG_CBOR, type CidBytes } from '../codecs/cid.js'
import { AT_REST, decompressBlock, defaultCompressor, storedAsDelta, type Compressor } from '../codecs/compress.js'
import { CkptError } from '../codecs/errors.js'
import { applyNodeDelta, applyNodeDeltaInPlace, deltaBaseCid } from '../codecs/node-delta.js'
import { decodeNode, encodeNode, type NodeEntries } from '../codecs/tree-node.js'
import { NodeCache, nodeHashes } from './node-cache.js'
import { allocBytes } from './alloc.js'
import { FingerprintSet, type FingerprintView } from './fingerprint-set.js'
import { StagedCopies } from './staged-copies.js'
import { decompress, entryError, hashMismatch } from './block-errors.js'
import { resolveChunk } from './chunk-chain.js'
import { blockKey, blockKeyCid, blockRange, jsonValue, manifestKey, META_CHUNK_DELTAS, metaKey, packKey, packKeyNo, packRange } from './keys.js'
import type { KV, KVOp } from './kv.js'
import {
  decodePackHeader,
  entryPayload,
  inflatePayload,
  isFault,
  openPayload,
  encodeFooter,
  encodePackHeader,
  ENTRY_HEADER_SIZE,
  ENTRY_KIND,
  PACK_HEADER_SIZE,
  PACK_VERSION,
  writeEntry,
} from '../codecs/pack-format.js'
import type { BlockReader, BlockWriter, PackIO } from './interface.js'
import { decodeLocation, decodePackRecord, encodeLocation, encodePackRecord, type BlockLocation, type PackRecord } from './location.js'
import type { RemoteBlocks } from './remote/remote-blocks.js'
export { decodeLocation, decodePackRecord, encodeLocation, encodePackRecord, LOCATION_SIZE, type BlockLocation, type PackRecord } from './location.js'

export interface BlockStoreOptions {
  /** a pack is sealed once it reaches this size (default 64 MiB) */
  packTargetSize?: number
  /** decoded tree nodes kept in memory, in units of 256 slots (default 2,048, ~17 MiB: 2,048 nodes of 256 links, 512 of 1,024) */
  nodeCacheEntries?: number
  /**
   * the in-memory "already stored?" filter (16-32 bytes per block, filled at open). false: every
   * has() asks the index instead — for processes that write little or nothing (gc, verify), whose
   * memory then does not grow with the store
   */
  dedupFilter?: boolean
  /** never write, truncate or move a pack file (read-only commands, read-only media) */
  readOnly?: boolean
  /** what blocks are written with (default: defaultCompressor(), chosen at the first write) */
  compressor?: Compressor
}

/** How put() stores a payload. */
export interface PutOptions {
  /** delta chain length of a node delta payload (0 otherwise) */
  depth?: number
  /** ENTRY_KIND: block (default), manifest (listed under 'M' at commit), record (the commit's catalog record) */
  kind?: number
  /** store a new copy of a CID the index already has (its index entry moves to the copy at commit) */
  replace?: boolean
}

const WRITE_BUFFER = 4 << 20
/** Entries go to the pack file once this much is buffered, so writes overlap hashing and compression. */
const FLUSH_AT = 1 << 20

export class BlockStore implements BlockReader, BlockWriter {
  private readonly filter = new FingerprintSet()
  private readonly staged = new Map<string, BlockLocation>()
  private readonly copies = new StagedCopies() // gc's copies (copyEntry): many, moving blocks rather than adding them
  private readonly stagedCids: CidBytes[] = []
  private readonly stagedLocs: BlockLocation[] = [] // where each of stagedCids went, in order (a CID staged twice: the later stands, as in `staged`)
  /** manifests among the staged blocks: the commit lists them under 'M' */
  private readonly stagedManifests: CidBytes[] = []
  private readonly packs = new Map<number, PackRecord>()
  /** unsealed packs found shorter than their committed length at open: never appended to */
  readonly damagedPacks = new Set<number>()
  /** decoded tree nodes by CID (immutable: a CID names one content forever), and delta chains' intermediate versions */
  readonly nodeCache: NodeCache
  private openPack = -1
  private last: BlockLocation | undefined
  private stagedEntries = 0
  /** chunk deltas among them: their commit marks the store as holding some (META_CHUNK_DELTAS) */
  private stagedChunkDeltas = 0
  private buf = Buffer.allocUnsafe(WRITE_BUFFER)
  private scratch = Buffer.allocUnsafe(72 << 10)
  private rawScratch = new Uint8Array(64 << 10) // a whole node's bytes before decoding (resolveNode)
  private bufStart = 0
  private bufLen = 0
  private blockCount = 0
  readonly packTarget: number // a pack is sealed once this long

  private constructor(
    private readonly kv: KV,
    readonly io: PackIO,
    opts: BlockStoreOptions,
  ) {
    this.packTarget = opts.packTargetSize ?? 64 << 20
    this.nodeCache = new NodeCache(opts.nodeCacheEntries ?? 2048)
    this.useFilter = opts.dedupFilter !== false
    this.readOnly = opts.readOnly === true
    this.comp = opts.compressor
  }

  private comp: Compressor | undefined

  /** The compressor every writer of this store uses (the one place it is chosen; workers get its code). */
  get compressor(): Compressor {
    return (this.comp ??= defaultCompressor())
  }

  private readonly useFilter: boolean
  readonly readOnly: boolean

  /**
   * Loads pack records, cuts torn tails back to the committed length (never in read-only mode) and
   * fills the fingerprint filter from the index. A pack file no record names is left where it is (a
   * crash leftover, or the sign of a stale index: the repository looked at it before this open); new
   * packs never take its number.
   */
  static async open(kv: KV, io: PackIO, opts: BlockStoreOptions = {}): Promise<BlockStore> {
    const s = new BlockStore(kv, io, opts)
    for await (const [k, v] of kv.iterate(packRange)) s.packs.set(packKeyNo(k), decodePackRecord(v))
    for (const [n, rec] of s.packs) {
      if (rec.sealed || rec.retired || !io.exists(n)) continue
      if (s.readOnly) continue
      // a pack shorter than its committed length is damaged (verify reports it): left as it is
      if (io.size(n) < rec.committedLength) {
        s.damagedPacks.add(n)
        continue
      }
      // cuts a torn tail: bytes past the committed length were never acknowledged
      io.openForAppend(n, rec.committedLength)
      // a pack of an older format is never appended to: its entries could not say what they are
      if (rec.committedLength < s.packTarget && s.openPack < 0 && packVersion(io, n) === PACK_VERSION) {
        s.openPack = n
        s.bufStart = rec.committedLength
      }
    }
    // the filter is filled from the index; without it the open reads no block entry (a short-lived
    // process, such as one CLI command, pays nothing that grows with the store)
    if (s.useFilter) {
      for await (const [k] of kv.iterate(blockRange)) {
        s.filter.add(cidDigest(blockKeyCid(k)))
        s.blockCount++
      }
    } else s.blockCount = -1
    return s
  }

  /**
   * A sizing figure without reading the index: the count when known, else the entries the packs
   * record (an upper bound: it includes copies and dead entries). For seen sets, not for display.
   */
  estimatedCount(): number {
    if (this.blockCount >= 0) return this.blockCount
    let n = 0
    for (const r of this.packs.values()) n += r.entries
    return n
  }

  /** Blocks in the index: counted at open with the filter, else once here; commits since add theirs (gc's deletions are not taken off). */
  async count(): Promise<number> {
    if (this.blockCount < 0) {
      let n = 0
      for await (const _ of this.kv.iterate(blockRange)) n++
      // a sizing figure (seen sets, stats): a commit that lands while the iterator runs may be missed
      if (this.blockCount < 0) this.blockCount = n
    }
    return this.blockCount
  }

  /** The "already stored?" filter as shared memory, for worker threads (a "maybe" still needs has()). */
  filterView(): FingerprintView {
    return this.filter.view()
  }

  get filterBytes(): number {
    return this.filter.bytes
  }

  packRecords(): ReadonlyMap<number, PackRecord> {
    return this.packs
  }

  /** After a repair rewrote pack records in the index: take them over (the open pack, if retired, is left). */
  reloadPackRecords(records: Map<number, PackRecord> | undefined): void {
    if (!records) return
    for (const n of [...this.packs.keys()]) if (!records.has(n)) this.packs.delete(n)
    for (const [n, r] of records) {
      this.packs.set(n, r)
      if (n === this.openPack && (r.sealed || r.retired)) this.openPack = -1
    }
  }

  /** Stored (committed) or staged in the current transaction. */
  has(cid: CidBytes): boolean {
    if (this.useFilter && !this.filter.mayHave(cidDigest(cid))) return false
    return this.locate(cid) !== undefined
  }

  locate(cid: CidBytes): BlockLocation | undefined {
    const s = this.staged.size > 0 ? this.staged.get(cidKey(cid)) : this.copies.count > 0 ? this.copies.get(cid) : undefined
    if (s) return s
    const v = this.kv.getSync(blockKey(cid))
    return v === undefined ? undefined : decodeLocation(v)
  }

  /** Blocks known from remotes (a lazy pull): read through their cache where the store has no copy. */
  remote: RemoteBlocks | undefined

  /** Where a block can be read: this store's packs, else a remote's (never written to the index). */
  find(cid: CidBytes): BlockLocation | undefined {
    return this.locate(cid) ?? this.remote?.locate(cid)
  }

  /** The local file holding a pack's bytes (a remote pack's cache file), if there is one. */
  filePath(pack: number): string | undefined {
    return this.remote?.isRemote(pack) ? this.remote.filePath(pack) : this.io.filePath(pack)
  }

  /** Locations of many blocks in one index call; undefined where missing. */
  async locateMany(cids: CidBytes[]): Promise<(BlockLocation | undefined)[]> {
    const out: (BlockLocation | undefined)[] = new Array(cids.length)
    const ask: number[] = []
    for (let i = 0; i < cids.length; i++) {
      const s = this.staged.size > 0 ? this.staged.get(cidKey(cids[i]!)) : this.copies.count > 0 ? this.copies.get(cids[i]!) : undefined
      if (s) out[i] = s
      else ask.push(i)
    }
    const vals = await this.kv.getMany(ask.map((i) => blockKey(cids[i]!)))
    for (let k = 0; k < ask.length; k++) out[ask[k]!] = vals[k] === undefined ? undefined : decodeLocation(vals[k]!)
    if (this.remote) await this.locateRemote(cids, out)
    return out
  }

  /** locateMany's misses, looked up on the remotes; what they give is fetched into their cache before the caller reads it. */
  private async locateRemote(cids: CidBytes[], out: (BlockLocation | undefined)[]): Promise<void> {
    const remote: BlockLocation[] = []
    for (let k = 0; k < out.length; k++) {
      if (out[k]) continue
      const r = this.remote!.locate(cids[k]!)
      if (r) remote.push((out[k] = r))
    }
    if (remote.length) await this.remote!.prefetch(remote)
  }

  /** Whether an entry is still only in the write buffer (not yet in its pack file). */
  inWriteBuffer(loc: BlockLocation): boolean {
    return loc.pack === this.openPack && loc.offset + ENTRY_HEADER_SIZE + loc.storedLength > this.bufStart
  }

  /**
   * A location must lie inside the committed part of a known pack (or the write buffer): an index
   * entry pointing anywhere else is damage, CKPT_BAD_INDEX, not a read to attempt.
   */
  checkLocation(cid: CidBytes, loc: BlockLocation): void {
    if (this.remote?.isRemote(loc.pack)) {
      if (loc.offset + ENTRY_HEADER_SIZE + loc.storedLength <= this.remote.size(loc.pack)) return
      throw new CkptError('CKPT_BAD_REMOTE', `a remote index segment places ${cidToString(cid)} past the end of ${this.remote.describe(loc.pack)}`, { cid: cidToString(cid) })
    }
    const rec = this.packs.get(loc.pack)
    const end = loc.offset + ENTRY_HEADER_SIZE + loc.storedLength
    const inBuffer = loc.pack === this.openPack && loc.offset >= this.bufStart && end <= this.bufStart + this.bufLen
    const staged = (this.staged.size > 0 || this.copies.count > 0) && loc.pack === this.openPack && end <= this.bufStart + this.bufLen
    if (!rec || loc.offset < PACK_HEADER_SIZE || (!inBuffer && !staged && end > rec.committedLength)) {
      throw new CkptError('CKPT_BAD_INDEX', `the index places ${cidToString(cid)} ${rec ? `past the end of pack ${loc.pack}` : `in pack ${loc.pack}, which the index does not know`}`, {
        cid: cidToString(cid),
        pack: loc.pack,
        offset: loc.offset,
      })
    }
  }

  /**
   * The at-rest payload at a known location, checked to be the entry of that CID. With `scratch` the
   * payload is a view of reused memory, valid only until the next scratch read.
   */
  readAt(cid: CidBytes, loc: BlockLocation, scratch = false): Uint8Array {
    this.checkLocation(cid, loc)
    let entry: Uint8Array
    const size = ENTRY_HEADER_SIZE + loc.storedLength
    if (this.remote?.isRemote(loc.pack)) return this.readRemote(cid, loc)
    if (loc.pack === this.openPack && loc.offset >= this.bufStart) {
      // a copy: the write buffer is reused once flushed, and callers may keep what they read
      const at = loc.offset - this.bufStart
      entry = copyOf(this.buf, at, at + size)
    } else if (scratch) {
      if (this.scratch.length < size) this.scratch = Buffer.allocUnsafe(Math.max(size, 2 * this.scratch.length))
      entry = this.io.readInto(loc.pack, loc.offset, this.scratch.subarray(0, size))
    } else {
      entry = this.io.read(loc.pack, loc.offset, size)
    }
    const payload = entryPayload(entry, { cid, storedLength: loc.storedLength, rawLength: loc.rawLength, codec: loc.codec })
    if (isFault(payload)) throw entryError(payload, cid, loc)
    return payload
  }

  /**
   * A block's payload from a remote pack, through its cache; an entry that is not the block the
   * segment promises (a hole or damage in the cache, or damage on the remote) is fetched once more
   * before the read fails. A block that then fails its hash check is never returned (finishRead).
   */
  private readRemote(cid: CidBytes, loc: BlockLocation): Uint8Array {
    const remote = this.remote!
    const size = ENTRY_HEADER_SIZE + loc.storedLength
    for (let attempt = 0; ; attempt++) {
      let entry: Uint8Array
      try {
        entry = remote.read(loc.pack, loc.offset, size)
      } catch (err) {
        // the block the read was for is what the caller needs to hear about
        if (err instanceof CkptError && err.code === 'CKPT_REMOTE_UNAVAILABLE') {
          throw new CkptError(err.code, `block ${cidToString(cid)} cannot be read from the remote: ${err.message}`, { ...err.details, cid: cidToString(cid) }, err)
        }
        throw err
      }
      const payload = entryPayload(entry, { cid, storedLength: loc.storedLength, rawLength: loc.rawLength, codec: loc.codec })
      if (!isFault(payload)) {
        if (attempt > 0 || storedAsDelta(loc.codec) || !isFault(openPayload(loc.codec, payload, loc.rawLength, cid, 4))) return payload
      } else if (attempt > 0) {
        throw new CkptError('CKPT_HASH_MISMATCH', `block ${cidToString(cid)} is damaged on the remote (${remote.describe(loc.pack)}, offset ${loc.offset}): ${payload.message}`, { cid: cidToString(cid), remote: remote.describe(loc.pack), offset: loc.offset })
      }
      remote.invalidate(loc.pack, loc.offset, size)
    }
  }

  /**
   * Write entry point 1 of 3: stages an at-rest payload (identity, zstd, deflate, or a node delta
   * whose chain is `opts.depth` long). A CID already stored or staged is skipped (false), unless
   * `opts.replace`: a new copy of a block the store has but cannot read (repair) or a node stored
   * anew against another base (gc), the index moving to it at commit. A catalog record (kind 2) is
   * never indexed by its CID: lastStaged says where it went.
   */
  put(cid: CidBytes, codec: number, payload: Uint8Array, rawLength: number, opts: PutOptions = {}): boolean {
    const kind = opts.kind ?? ENTRY_KIND.block
    if (!opts.replace && kind !== ENTRY_KIND.record && this.has(cid)) return false
    const depth = opts.depth ?? 0
    const at = this.reserve(ENTRY_HEADER_SIZE + payload.length)
    writeEntry(this.buf, at, cid, codec, depth, rawLength, payload, kind)
    this.stage(cid, at, payload.length, { rawLength, codec, depth, kind }, false)
    if (opts.replace) this.nodeCache.drop(cidKey(cid))
    return true
  }

  /**
   * Write entry point 2 of 3: a complete block entry a worker encoded (header with CID, lengths,
   * codec and checksum, then the payload); `entry` is copied. A CID already stored or staged is skipped.
   */
  putEntry(cid: CidBytes, entry: Uint8Array, rawLength: number, codec: number, depth = 0): boolean {
    if (this.has(cid)) return false
    const at = this.reserve(entry.length)
    this.buf.set(entry, at)
    this.stage(cid, at, entry.length - ENTRY_HEADER_SIZE, { rawLength, codec, depth, kind: ENTRY_KIND.block }, false)
    return true
  }

  /**
   * Write entry point 3 of 3: gc's copy of a whole entry (block or record, checked by the caller, who
   * copies no block staged: isStaged) out of a pack it rewrites, as it is. A block's index entry moves
   * to the copy at commit; where it went is returned (a record's index entry is the caller's to write).
   */
  copyEntry(entry: Uint8Array, e: { rawLength: number; codec: number; depth: number; kind: number }): BlockLocation {
    const at = this.reserve(entry.length)
    this.buf.set(entry, at)
    const record = e.kind === ENTRY_KIND.record
    return this.stage(undefined, at, entry.length - ENTRY_HEADER_SIZE, { rawLength: e.rawLength, codec: e.codec, depth: record ? 0 : e.depth, kind: record ? e.kind : ENTRY_KIND.block }, true)
  }

  /** Where the entry staged last went (a catalog record's place: the index keys records by seq). */
  get lastStaged(): BlockLocation | undefined {
    return this.last
  }

  /** Resizes the decoded-node cache, in units of 256 slots (gc walks with a small one); returns the previous size. */
  setNodeCacheSize(entries: number): number {
    return this.nodeCache.resize(entries)
  }

  /** Whether a block was staged (put, or copied) since the last commit; `at`: the CID is at cid[at]. */
  isStaged(cid: Uint8Array, at = 0): boolean {
    return this.copies.has(cid, at) || (this.staged.size > 0 && this.staged.has(cidKey(cid.subarray(at, at + CID_LENGTH) as CidBytes)))
  }

  /** The pack being appended to (-1: none open). */
  openPackNo(): number {
    return this.openPack
  }

  /** A pack's record is gone from the index (gc deleted or rewrote it). */
  forgetPack(packNo: number): void {
    this.packs.delete(packNo)
    if (packNo === this.openPack) this.openPack = -1
  }

  /** Room for `size` bytes in the write buffer; returns the buffer offset to write at. */
  private reserve(size: number): number {
    if (this.readOnly) throw new CkptError('CKPT_READ_ONLY', 'the store is open read-only')
    if (this.openPack < 0) this.startPack()
    if (this.bufLen + size > this.buf.length) {
      this.flushBuffer()
      if (size > this.buf.length) this.buf = Buffer.allocUnsafe(size)
    }
    return this.bufLen
  }

  /** Records a staged entry (the write buffer holds it at `at`); a block is indexed at commit, a manifest put also listed; a copy's CID is its header's. */
  private stage(cid: CidBytes | undefined, at: number, storedLength: number, e: { rawLength: number; codec: number; depth: number; kind: number }, copy: boolean): BlockLocation {
    const loc = { pack: this.openPack, offset: this.bufStart + at, storedLength, rawLength: e.rawLength, codec: e.codec, depth: e.depth }
    this.bufLen = at + ENTRY_HEADER_SIZE + storedLength
    this.stagedEntries++
    if (e.codec === AT_REST.chunkDelta) this.stagedChunkDeltas++
    this.last = loc
    // a record is indexed by its seq, by the caller
    if (e.kind !== ENTRY_KIND.record && copy) this.copies.add(this.buf, at + 12, loc)
    else if (e.kind !== ENTRY_KIND.record && cid) {
      this.staged.set(cidKey(cid), loc)
      this.stagedCids.push(cid)
      this.stagedLocs.push(loc)
      if (this.useFilter) this.filter.add(cidDigest(cid))
      if (e.kind === ENTRY_KIND.manifest) this.stagedManifests.push(cid)
    }
    if (this.bufLen >= FLUSH_AT) this.flushBuffer()
    return loc
  }

  get stagedCount(): number {
    return this.stagedCids.length
  }

  /** Entries (blocks and records) staged since the last commit. */
  get stagedEntryCount(): number {
    return this.stagedEntries
  }

  /** Pack bytes staged since the last commit (what the next commit makes durable). */
  get stagedBytes(): number {
    if (this.openPack < 0) return 0
    return this.bufStart + this.bufLen - this.packs.get(this.openPack)!.committedLength
  }

  private startPack(): void {
    let n = 1
    for (const k of this.packs.keys()) n = Math.max(n, k + 1)
    for (const k of this.io.list()) n = Math.max(n, k + 1)
    // nor a number a set-aside pack had: repair may bring it back
    for (const q of this.io.quarantined()) n = Math.max(n, Number.parseInt(q.slice(-q.length + q.lastIndexOf('/') + 1), 10) + 1)
    this.io.openForAppend(n, 0)
    this.openPack = n
    const header = encodePackHeader(n)
    this.bufStart = 0
    this.buf.set(header, 0)
    this.bufLen = header.length
    this.stagedEntries = 0
    this.packs.set(n, { committedLength: 0, sealed: false, entries: 0 })
  }

  private flushBuffer(): void {
    if (this.bufLen === 0) return
    this.io.append(this.openPack, this.buf.subarray(0, this.bufLen))
    this.bufStart += this.bufLen
    this.bufLen = 0
  }

  /**
   * Starts making what is staged so far durable in the background (the caller goes on staging, e.g.
   * tree nodes, meanwhile); prepareCommit() then only has the rest to sync. Purely an overlap: the
   * commit's own fsync still covers everything.
   */
  syncEarly(): Promise<void> {
    // nothing staged since the last commit (a checkpoint whose chunks were all known): no fdatasync
    if (this.openPack < 0 || this.bufStart + this.bufLen === 0 || this.stagedEntries === 0) return Promise.resolve()
    this.flushBuffer()
    return this.io.syncAsync(this.openPack)
  }

  /** Makes staged bytes durable and returns the index operations to commit with the catalog. */
  async prepareCommit(): Promise<KVOp[]> {
    if (this.openPack < 0) return []
    const rec = this.packs.get(this.openPack)!
    if (this.stagedEntries === 0 && rec.committedLength > 0) return []
    this.flushBuffer()
    // fdatasync on libuv's pool: it covers the data and the file's new length; the operations are made meanwhile
    const synced = this.io.syncAsync(this.openPack)
    const ops: KVOp[] = []
    for (let i = 0; i < this.stagedCids.length; i++) ops.push({ type: 'put', key: blockKey(this.stagedCids[i]!), value: encodeLocation(this.stagedLocs[i]!) })
    for (const op of this.copies.ops()) ops.push(op)
    for (const cid of this.stagedManifests) ops.push({ type: 'put', key: manifestKey(cid), value: new Uint8Array(0) })
    if (this.stagedChunkDeltas > 0) ops.push({ type: 'put', key: metaKey(META_CHUNK_DELTAS), value: jsonValue(true) })
    const next = { committedLength: this.bufStart, sealed: false, entries: rec.entries + this.stagedEntries }
    ops.push({ type: 'put', key: packKey(this.openPack), value: encodePackRecord(next) })
    return synced.then(() => ops)
  }

  /** Called after the batch from prepareCommit() is durable. */
  committed(): void {
    if (this.openPack < 0) return
    const rec = this.packs.get(this.openPack)!
    rec.committedLength = this.bufStart
    rec.entries += this.stagedEntries
    if (this.blockCount >= 0) this.blockCount += this.stagedCids.length
    this.stagedEntries = this.stagedChunkDeltas = 0
    this.staged.clear()
    this.copies.clear()
    this.stagedLocs.length = this.stagedCids.length = 0
    this.stagedManifests.length = 0
  }

  /** Drops the staged transaction: the pack is cut back to what was committed. */
  abort(): void {
    if (this.openPack < 0) return
    const rec = this.packs.get(this.openPack)!
    this.staged.clear()
    this.copies.clear()
    this.stagedLocs.length = this.stagedCids.length = 0
    this.stagedManifests.length = 0
    this.stagedEntries = this.stagedChunkDeltas = 0
    this.bufLen = 0
    this.bufStart = rec.committedLength
    if (rec.committedLength === 0) {
      this.io.remove(this.openPack)
      this.packs.delete(this.openPack)
      this.openPack = -1
    } else {
      this.io.openForAppend(this.openPack, rec.committedLength)
    }
  }

  /** Seals the open pack once it reached its target size (or now, with force): footer, fsync, record. Immutable after. */
  async maybeSeal(force = false): Promise<void> {
    if (this.openPack < 0 || this.stagedEntries > 0) return
    const rec = this.packs.get(this.openPack)!
    if (rec.committedLength < this.packTarget && !force) return
    const footer = encodeFooter(rec.entries, rec.committedLength)
    this.io.append(this.openPack, footer)
    this.io.seal(this.openPack)
    const sealed = { committedLength: rec.committedLength + footer.length, sealed: true, entries: rec.entries }
    await this.kv.batch([{ type: 'put', key: packKey(this.openPack), value: encodePackRecord(sealed) }], { sync: true })
    this.packs.set(this.openPack, sealed)
    this.openPack = -1
  }

  /** The at-rest payload of a block (no decompression, no verification). */
  readStored(cid: CidBytes): { loc: BlockLocation; payload: Uint8Array } {
    const loc = this.find(cid)
    if (!loc) throw new CkptError('CKPT_NOT_FOUND', `block ${cidToString(cid)} is not in the store`, { cid: cidToString(cid) })
    return { loc, payload: this.readAt(cid, loc) }
  }

  /**
   * The block's bytes, decompressed (or rebuilt from its delta chain) and re-hashed against its CID:
   * a read never returns wrong bytes; a damaged block fails with CKPT_HASH_MISMATCH naming it.
   */
  get(cid: CidBytes): Uint8Array {
    const loc = this.find(cid)
    if (!loc) throw new CkptError('CKPT_NOT_FOUND', `block ${cidToString(cid)} is not in the store`, { cid: cidToString(cid) })
    if (loc.codec === AT_REST.nodeDelta) return this.getNodeBytes(cid).bytes
    if (loc.codec === AT_REST.chunkDelta) return resolveChunk(this, cid, loc)
    // the payload is consumed right here, so it may live in reused memory; the result may not
    return this.finishRead(cid, loc, this.readAt(cid, loc, true))
  }

  /**
   * get() with a location the caller already knows (e.g. fetched in bulk with locateMany). A location
   * that no longer holds the block (packs rewritten since) falls back to a fresh index lookup.
   */
  getAt(cid: CidBytes, loc: BlockLocation | undefined): Uint8Array {
    if (!loc || loc.codec === AT_REST.nodeDelta) return this.get(cid)
    if (loc.codec === AT_REST.chunkDelta) return resolveChunk(this, cid, loc)
    let payload: Uint8Array
    try {
      payload = this.readAt(cid, loc, true)
    } catch (err) {
      if (err instanceof CkptError && (err.code === 'CKPT_BAD_INDEX' || err.code === 'CKPT_BAD_PACK')) return this.get(cid)
      throw err
    }
    return this.finishRead(cid, loc, payload)
  }

  private finishRead(cid: CidBytes, loc: BlockLocation, payload: Uint8Array): Uint8Array {
    const into = allocBytes(loc.rawLength)
    let raw = inflatePayload(loc.codec, payload, loc.rawLength, into)
    if (!isFault(raw) && !blake3Equals(raw, cid, 4)) raw = { fault: 'CKPT_HASH_MISMATCH', message: 'block does not match its hash' }
    if (isFault(raw)) throw entryError(raw, cid, loc)
    if (raw.buffer === this.scratch.buffer) {
      // identity returns the payload itself: copy it out of the scratch
      into.set(raw)
      raw = into
    }
    return raw
  }

  /** A node as a leaf file (§18.1) says it is: kept unproven, hashed when getNode() first asks (dropped on mismatch). */
  offerNode(cid: CidBytes, entries: NodeEntries): void {
    this.nodeCache.keep(cidKey(cid), entries)
  }

  /**
   * A tree node, decoded and verified. A delta chain is resolved in decoded form and only its final
   * node is re-encoded and hashed: a damaged base cannot yield a node that matches its CID.
   * `intermediates` false: a chain's versions between are not cached (gc's mark never asks again).
   */
  getNode(cid: CidBytes, intermediates = true): NodeEntries {
    const key = cidKey(cid)
    const hit = this.nodeCache.get(key, cid)
    if (hit) return hit
    const { loc, entries } = this.resolveNode(cid, 0, intermediates)
    // hashed in reused memory: an encoding per node read (gc's mark reads thousands) fragments the C heap
    if (!nodeHashes(entries, cid)) throw hashMismatch(cid, loc)
    this.nodeCache.set(key, entries)
    return entries
  }

  /**
   * getNode() with the node's dag-cbor bytes (encoded once: for a node read from its pack, the bytes
   * it was verified by). `cache` false: a node read once (an export's walk) does not displace the
   * cached ones.
   */
  getNodeBytes(cid: CidBytes, cache = true): { entries: NodeEntries; bytes: Uint8Array } {
    const key = cidKey(cid)
    const hit = this.nodeCache.get(key, cid)
    if (hit) return { entries: hit, bytes: encodeNode(hit) }
    const { loc, entries } = this.resolveNode(cid, 0, cache)
    const bytes = encodeNode(entries)
    if (!cidEquals(blake3(bytes), cidDigest(cid))) throw hashMismatch(cid, loc)
    if (cache) this.nodeCache.set(key, entries)
    return { entries, bytes }
  }

  /** A node's entries rebuilt from its entry (and delta chain), NOT hashed: the caller proves them (getNode does; an export's worker hashes what it encodes). */
  resolveNode(cid: CidBytes, hops: number, keep: boolean): { loc: BlockLocation; entries: NodeEntries; owned: boolean } {
    if (cidCodec(cid) !== DAG_CBOR) throw new CkptError('CKPT_BAD_NODE', `${cidToString(cid)} is not a dag-cbor node`, { cid: cidToString(cid) })
    // a cached base ends the chain without a read (CACHED's location is never in an error: hop 0 never hits)
    const hit = hops > 0 ? this.nodeCache.base(cidKey(cid)) : undefined
    if (hit) return { loc: CACHED, entries: hit, owned: false }
    const { loc, payload } = this.readStored(cid)
    if (loc.codec !== AT_REST.nodeDelta) {
      // decoded into arrays of its own: the decompressed bytes go to reused memory
      if (this.rawScratch.length < loc.rawLength) this.rawScratch = new Uint8Array(loc.rawLength)
      const raw = decompress(cid, loc, payload, this.rawScratch.subarray(0, loc.rawLength))
      let entries: NodeEntries
      try {
        entries = decodeNode(raw)
      } catch (err) {
        // undecodable bytes that still match the CID are a bad node; otherwise the block is damaged
        if (!cidEquals(blake3(raw), cidDigest(cid))) throw hashMismatch(cid, loc)
        throw err
      }
      if (keep && hops > 0) this.nodeCache.keep(cidKey(cid), entries)
      return { loc, entries, owned: !keep }
    }
    if (hops > 255) throw new CkptError('CKPT_BAD_NODE', `delta chain of ${cidToString(cid)} is too long`, { cid: cidToString(cid) })
    const base = this.resolveNode(deltaBaseCid(payload), hops + 1, keep)
    // a cached base is never modified; without `keep` the chain is rebuilt in one private copy (gc's mark made ~180,000 a gc)
    const entries = base.owned ? applyNodeDeltaInPlace(base.entries, payload) : applyNodeDelta(base.entries, payload)
    if (keep && hops > 0) this.nodeCache.keep(cidKey(cid), entries)
    return { loc, entries, owned: !keep }
  }

  /** Every indexed CID, in index order (no JS set of everything: streamed from LevelDB). */
  async *list(): AsyncIterable<CidBytes> {
    for await (const [k] of this.kv.iterate(blockRange)) yield copyOf(k, 1, 1 + CID_LENGTH)
  }

  close(): void {
    this.io.close()
    this.remote?.close()
  }
}

/** The format version in a pack's header (0 if it cannot be read). */
function packVersion(io: PackIO, n: number): number {
  try {
    return decodePackHeader(io.read(n, 0, PACK_HEADER_SIZE)).version
  } catch {
    return 0
  }
}

const CACHED: BlockLocation = { pack: -1, offset: 0, storedLength: 0, rawLength: 0, codec: AT_REST.nodeDelta, depth: 0 }

export { PACK_HEADER_SIZE }
export { hashMismatch } from './block-errors.js'
