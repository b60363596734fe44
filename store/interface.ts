/**
 * The store's seams, as types only: the small roles the rest of the code needs of a store, and the
 * backend a store is made of. Today's implementations: BlockStore (BlockReader, BlockWriter) and
 * Repository (Catalog) over a Backend; diskBackend() (pack files + LevelDB) and memoryBackend()
 * (unit tests) are the two backends (store/backend.ts). Another place for packs (an object store)
 * is another PackIO behind another Backend, run against test/store/conformance.ts.
 */
import type { CatalogOp, TimelineRecord } from '../codecs/catalog-record.js'
import type { CidBytes } from '../codecs/cid.js'
import type { Compressor } from '../codecs/compress.js'
import type { NodeEntries } from '../codecs/tree-node.js'
import type { BlockLocation, PutOptions } from './block-store.js'
import type { KV, KVOp } from './kv.js'
import type { PackReader } from './pack-scan.js'
import type { CheckpointEntry } from './repository.js'

/**
 * Where pack bytes live: numbered objects, appended to while open, immutable once sealed. A read
 * names an object and a byte range; reads are synchronous (a block read is a small pread from the
 * page cache, far below a round trip through libuv's thread pool). A missing object, or a range past
 * its end, is CKPT_BAD_PACK naming it.
 */
export interface PackIO {
  /** the objects there are, by number, ascending */
  list(): number[]
  exists(packNo: number): boolean
  size(packNo: number): number
  /** Opens (creating if missing) for appending; cuts anything past `length` (a torn tail). */
  openForAppend(packNo: number, length: number): void
  append(packNo: number, bytes: Uint8Array): void
  /** Makes what was appended durable, on another thread, so the caller's thread keeps working meanwhile. */
  syncAsync(packNo: number): Promise<void>
  /** The object is complete: what was appended is durable, and nothing more is appended to it. */
  seal(packNo: number): void
  read(packNo: number, offset: number, length: number): Uint8Array
  /** Like read, into a buffer the caller owns (no allocation). */
  readInto(packNo: number, offset: number, out: Uint8Array): Uint8Array
  /** Deletes the object (nothing if it is missing). */
  remove(packNo: number): void
  /** Objects an older version (format 1) set aside at open in packs/orphaned, as paths (memory: none) */
  quarantined(): string[]
  close(): void
  /** The object's name for messages (a path, memory:NNNNNNNN.pack, a URL). */
  describe(packNo: number): string
  /** Path of the object as a local file another thread may read directly; undefined when not a file. */
  filePath(packNo: number): string | undefined
  /** The whole object as a PackReader (verify and index rebuilds scan it front to back). */
  reader(packNo: number): PackReader
}

/** What a store is made of: where its packs live, where its index lives, and what it can promise. */
export interface Backend {
  /** for messages and test names: 'disk', 'memory' */
  readonly name: string
  /**
   * sync makes bytes survive a crash, and the store outlives the process: it has a directory with a
   * format marker, temporary files and scan caches, and its index is rebuilt from its packs when
   * missing or stale. false (memory): every open is a new, empty store, and sync does nothing.
   */
  readonly durable: boolean
  /** one writer per store, by a lock the OS drops when its holder dies (false: nothing to share) */
  readonly locks: boolean
  /** The pack objects of the store at `dir`; readOnly: never creates, writes or moves anything. */
  packs(dir: string, opts: { readOnly: boolean }): PackIO
  /**
   * The index of the store at `dir` (a KV: index, catalog, refs, metadata). With `create`, made if
   * missing. Failures are CkptErrors whose details.state says what they are: locked, missing,
   * corrupt, unavailable (level-kv.ts openError).
   */
  index(dir: string, opts: { create: boolean }): Promise<KV>
}

/** Reading blocks by CID: every read is verified against the CID (a damaged block is an error, never bytes). */
export interface BlockReader {
  /** Stored (committed) or staged in the current transaction. */
  has(cid: CidBytes): boolean
  locate(cid: CidBytes): BlockLocation | undefined
  /** Locations of many blocks in one index call; undefined where missing. */
  locateMany(cids: CidBytes[]): Promise<(BlockLocation | undefined)[]>
  /** The block's raw bytes (decompressed, or rebuilt from its delta chain), re-hashed against its CID. */
  get(cid: CidBytes): Uint8Array
  /** get() at a location fetched earlier (locateMany); a stale one falls back to the index. */
  getAt(cid: CidBytes, loc: BlockLocation | undefined): Uint8Array
  /** A tree node, decoded and verified; `intermediates` false: a delta chain's versions between are not cached. */
  getNode(cid: CidBytes, intermediates?: boolean): NodeEntries
  /** getNode() with the node's dag-cbor bytes; `cache` false: not kept in the node cache. */
  getNodeBytes(cid: CidBytes, cache?: boolean): { entries: NodeEntries; bytes: Uint8Array }
  /** The at-rest payload and its location (no decompression). */
  readStored(cid: CidBytes): { loc: BlockLocation; payload: Uint8Array }
  /** Every indexed CID, streamed. */
  list(): AsyncIterable<CidBytes>
  count(): Promise<number>
}

/**
 * Writing blocks: a staged transaction. Entries go to the open pack through three entry points;
 * prepareCommit() makes them durable and returns the index operations, which the caller writes in
 * the same synced batch as the catalog entries that reference them; committed() or abort() ends it.
 */
export interface BlockWriter {
  /** An at-rest payload; false (skipped) when the CID is stored or staged, unless opts.replace. */
  put(cid: CidBytes, codec: number, payload: Uint8Array, rawLength: number, opts?: PutOptions): boolean
  /** A complete block entry a worker encoded (header and payload); false when stored or staged. */
  putEntry(cid: CidBytes, entry: Uint8Array, rawLength: number, codec: number): boolean
  /** gc: a whole entry out of a pack it rewrites, as it is; where it went. */
  copyEntry(entry: Uint8Array, e: { rawLength: number; codec: number; depth: number; kind: number }): BlockLocation
  /** What blocks are written with: the one choice of the store (workers get its code). */
  readonly compressor: Compressor
  /** Where the entry staged last went (a catalog record's place). */
  readonly lastStaged: BlockLocation | undefined
  /** Starts syncing what is staged so far in the background; the commit's own sync still covers it all. */
  syncEarly(): Promise<void>
  /** Makes the staged entries durable and returns the index operations to commit with the catalog. */
  prepareCommit(): Promise<KVOp[]>
  /** The batch from prepareCommit() is durable: the staged entries count as stored. */
  committed(): void
  /** Drops the staged transaction: the pack is cut back to what was committed. */
  abort(): void
  /** Seals the open pack once it reached its target size (or now, with force). */
  maybeSeal(force?: boolean): Promise<void>
}

/** One block of the index: its CID and where it is. */
export interface IndexEntry {
  cid: CidBytes
  loc: BlockLocation
}

/**
 * The catalog: timelines, their checkpoints, refs, and the block index, as src/ needs them. Reads
 * give values (missing is undefined); writes are catalog ops committed with the blocks they
 * reference (commit), or the calls below that commit on their own.
 */
export interface Catalog {
  getTimeline(name: string): Promise<TimelineRecord | undefined>
  timelines(): AsyncIterable<TimelineRecord>
  /** Nearest checkpoint of `timeline` at or before vtime. */
  seek(timeline: string, vtime: bigint): Promise<CheckpointEntry | undefined>
  latest(timeline: string): Promise<CheckpointEntry | undefined>
  checkpoints(timeline: string, opts?: { gte?: bigint; lte?: bigint; reverse?: boolean; limit?: number }): AsyncIterable<CheckpointEntry>
  /** Every checkpoint of every timeline, in index order. */
  iterateCheckpoints(): AsyncIterable<CheckpointEntry>
  checkpointRecord(cid: CidBytes): Promise<{ timeline: string; vtime: bigint } | undefined>
  /** Removes checkpoint entries (their manifests are recorded as removed until gc collects them). */
  dropCheckpoints(entries: readonly CheckpointEntry[]): Promise<void>
  getRef(name: string): Promise<CidBytes | undefined>
  refs(): AsyncIterable<{ name: string; cid: CidBytes }>
  setRef(name: string, cid: CidBytes): Promise<void>
  deleteRef(name: string): Promise<void>
  /** Every manifest the index lists, and whether one is catalogued, listed or recorded as removed. */
  manifests(): AsyncIterable<CidBytes>
  isCatalogued(cid: CidBytes): Promise<boolean>
  isManifest(cid: CidBytes): Promise<boolean>
  isRemoved(cid: CidBytes): Promise<boolean>
  /** Every block of the index with its location, in index order (verify and repair walk it). */
  iterateIndex(): AsyncIterable<IndexEntry>
  /** Commits the staged blocks with these catalog ops, atomically. */
  commit(catalogOps?: readonly CatalogOp[]): Promise<void>
}
