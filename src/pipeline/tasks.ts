/**
 * The CPU work of ingest and restore, as plain functions over byte views. They run inside worker
 * threads (worker.ts) or inline on the calling thread when workers are unavailable; same code either way.
 */
import fs from 'node:fs'
import { blake3, blake3Into } from '../../codecs/blake3.js'
import { CkptError } from '../../codecs/errors.js'
import { BLAKE3, DIGEST_LENGTH, RAW } from '../../codecs/cid.js'
import { ENTRY_HEADER_SIZE, writeEntryHeader } from '../../codecs/pack-format.js'
import { decodeNode, encodeNode, encodeNodeScratch, nodeSlotCount } from '../../codecs/tree-node.js'
import { encodeNodePatch, type DeltaForm } from '../../codecs/node-delta.js'
import { AT_REST, compressBlockInto, compressorFor, maxBlockPayload } from '../../codecs/compress.js'
import { againstBase } from './chunk-deltas.js'
import { viewMayHave, type FingerprintView } from '../../codecs/fingerprint.js'
import { readEntries } from './read-entries.js'
import { proveDeltaChains, type DeltaChainResult, type DeltaChainTask } from './delta-chains.js'
import { scanPackCompact, type CompactScan } from '../../store/worker-index.js'

/**
 * Chunk bytes come either in `data` (shared memory) or, for files, as `file` + `fileOffset`: the
 * worker then preads [fileOffset, fileOffset + end of last chunk) itself, so a full scan of a disk
 * image never crosses threads as bytes.
 */
export interface HashTask {
  op: 'hash'
  data?: Uint8Array
  file?: string
  fileOffset?: number
  /** chunk boundaries inside data: chunk i is data[offsets[i], offsets[i] + lengths[i]) */
  offsets: Uint32Array
  lengths: Uint32Array
  /**
   * Also compress, in the same round trip, every non-zero chunk whose digest differs from `previous`
   * (the tree's current digest of that chunk; a chunk with previous[i] all-zero counts as changed).
   * For dirty-hint batches, whose chunks are mostly new content.
   */
  compress?: boolean
  /** With `compress`: the at-rest codec to write with (the store's compressor, BlockStore.compressor) */
  codec?: number
  previous?: Uint8Array
  /**
   * With `compress` and `previous`: the chunks' bytes at the previous checkpoint (`bases`, at the
   * chunks' offsets in `data`) and per chunk the chain depth of that version (`baseDepths`; 255: not
   * to be used). A changed chunk whose base bytes hash to `previous` is stored as a chunk delta of
   * depth baseDepths[i] + 1 against it (codecs/chunk-delta.ts) where that is smaller than alone.
   */
  bases?: Uint8Array
  baseDepths?: Uint8Array
  /**
   * With `compress`: the store's "already stored?" filter (shared memory). A changed chunk it may
   * hold is not compressed but marked KNOWN; the caller confirms it against the index.
   */
  known?: FingerprintView
  /** With `compress`: chunks (1) to hash but not compress */
  hashOnly?: Uint8Array
  /**
   * With `hashOnly`: such blocks that are tree nodes are decoded too (decodeNode, strict), into the
   * result's node columns (a bundle import's dag-cbor blocks)
   */
  decodeNodes?: boolean
  /** With `compress`: shared memory for the payloads (reused by the caller; saves a fresh buffer per task) */
  out?: Uint8Array
  /**
   * Tree leaves (level-1 nodes) that only this task's chunks change: their current slots, `fanout`
   * apart. The worker applies its chunks' new digests and holes to them and returns each leaf's
   * hash, so the tree need not hash them again at commit. Requires `indexes` (chunk index per chunk).
   */
  leaves?: LeafSet
  indexes?: Uint32Array
  /**
   * Full scans (without `compress`): the chunks form spans of `spanChunks` consecutive chunks, the
   * first span starting at the task's first chunk (the last may be shorter). The worker hashes each
   * non-zero span whole (SPAN_SIZE bytes: BLAKE3's SIMD path, ~3× the rate of 4 KiB calls) and returns
   * the digests; a span whose digest equals its `cachedSpans` entry (one where `cachedZero` is 0) has
   * its chunks reported `unchanged` and not hashed one by one.
   */
  spanChunks?: number
  /** 32 bytes per span of this task */
  cachedSpans?: Uint8Array
  cachedZero?: Uint8Array
  /**
   * File scans whose 64 KiB spans were hashed ahead (the CLI's prescan, while the library loaded):
   * per span of this task (SPAN_SIZE bytes from its first chunk, which starts one) the digest and 1
   * where the span is all zero. The worker then reads only the spans it must hash chunk by chunk (a
   * non-zero span that differs from `cachedSpans`); a chunk that is a whole span takes its digest.
   */
  knownSpans?: Uint8Array
  knownZero?: Uint8Array
}

export interface LeafSet {
  fanout: number
  /** leaf numbers, increasing */
  numbers: Uint32Array
  counts: Uint32Array
  codecs: Uint8Array
  digests: Uint8Array
  /**
   * 36 bytes per leaf: the CID of its stored version to write a node delta against (its slots as
   * given here), or all zero for none. The worker then also returns the delta of each live leaf that
   * changed, as the tree would write it (encodeNodePatch of the changed slots, form `deltaForm`, under
   * half the node's size), so the commit only places it.
   */
  bases?: Uint8Array
  deltaForm?: DeltaForm
}

/** HashResult.compressed values */
export const COMPRESSED = 1
export const KNOWN = 2
export interface HashResult {
  /** 32 bytes per chunk; untouched (zero) for holes */
  digests: Uint8Array
  /** 1 where the chunk is all zero (a hole: not hashed, not stored) */
  zero: Uint8Array
  /**
   * with `compress`: per chunk 0 (hole or unchanged), COMPRESSED (its pack entry, header and payload,
   * is next in `out`, with its length and at-rest code) or KNOWN (the filter says it may be stored:
   * not compressed)
   */
  compressed?: Uint8Array
  out?: Uint8Array
  outLengths?: Uint32Array
  codes?: Uint8Array
  /** with `bases`: per chunk, the chain depth of its entry in `out` (0: stored whole) */
  depths?: Uint8Array
  /** with `bases`: chunks whose base bytes did not hash to their `previous` digest (stored whole) */
  baseMismatches?: number
  /** with `leaves`: 32 bytes per leaf (BLAKE3 of its dag-cbor), and 1 where the leaf holds any link */
  leafHashes?: Uint8Array
  leafLive?: Uint8Array
  /**
   * with `leaves.bases`: per leaf the length of its delta (0: none: no base, unchanged, all holes, or
   * no delta under half its size), the deltas concatenated in leaf order, and each leaf's encoded size
   */
  leafDeltaLengths?: Uint32Array
  leafDeltas?: Uint8Array
  leafSizes?: Uint32Array
  /** with `spanChunks`: 32 bytes per span (zero for a zero span), 1 where the span is all zero */
  spanDigests?: Uint8Array
  spanZero?: Uint8Array
  /** with `cachedSpans`: 1 where the chunk lies in a span equal to its cached digest (neither hashed nor zero-checked) */
  unchanged?: Uint8Array
  /** spans found equal to their cached digest */
  spansUnchanged?: number
  /**
   * with `decodeNodes`: per block, the slot count of the tree node it decodes as (0: not a node); the
   * nodes' codecs and digests, concatenated in block order
   */
  nodeCounts?: Uint32Array
  nodeCodecs?: Uint8Array
  nodeDigests?: Uint8Array
}

export interface CompressTask {
  op: 'compress'
  data?: Uint8Array
  file?: string
  fileOffset?: number
  offsets: Uint32Array
  lengths: Uint32Array
  /** for file input: the digests phase 1 saw; a chunk that changed since is reported, not stored */
  digests?: Uint8Array
  /** the at-rest codec to write with (the store's compressor, BlockStore.compressor) */
  codec: number
}
export interface CompressResult {
  /** concatenated at-rest payloads */
  out: Uint8Array
  outLengths: Uint32Array
  codes: Uint8Array
  /** index of a chunk whose bytes no longer match `digests` (the file changed during the scan), or -1 */
  changed?: number
}

/** Restore: the worker reads pack entries itself, checks, decompresses, verifies and places them. */
export interface ReadTask {
  op: 'read'
  /**
   * Where the entries are: pack files the worker preads (entry header first, checked here), or
   * `payloads` the caller already read and checked (memory packs, unflushed entries), concatenated.
   */
  files?: string[]
  fileIdx?: Uint32Array
  payloads?: Uint8Array
  /** entry offsets in their pack, or payload offsets in `payloads` */
  offsets: Float64Array
  /**
   * Chunk deltas (codec 4) the caller resolved through the block store (a worker has no index to find
   * their bases in): their bytes concatenated, and per entry the offset of its bytes or -1.
   */
  resolved?: Uint8Array
  resolvedAt?: Float64Array
  storedLengths: Uint32Array
  codes: Uint8Array
  rawLengths: Uint32Array
  /** 36-byte CIDs the entries must carry, and whose digests the bytes must hash to */
  cids: Uint8Array
  /** where each chunk goes in `out` or `outFile` */
  outOffsets: Float64Array
  /** shared memory; or plain memory moved to the worker, which hands it back as ReadResult.data */
  out?: Uint8Array
  outFile?: string
  /** only check (decompress into scratch and re-hash); nothing is returned but the verdict */
  verifyOnly?: boolean
  /**
   * Per entry: -1, or the index of an earlier entry with the same CID (and location), whose proven
   * bytes it takes: a chunk that repeats in a region is read, decompressed and hashed once.
   */
  same?: Int32Array
  /** hole runs [from, to) of `out` to zero-fill, as pairs */
  zeros?: Float64Array
  /**
   * With `out`: tree nodes to encode (dag-cbor) into it, each at nodeOffsets[k], and hash against
   * its 36-byte CID in nodeCids (a mismatch is ReadResult.bad = entries + k). Node k has
   * nodeCounts[k] slots; their codecs and digests are concatenated.
   */
  nodeCounts?: Uint32Array
  nodeCodecs?: Uint8Array
  nodeDigests?: Uint8Array
  nodeCids?: Uint8Array
  nodeOffsets?: Float64Array
}
export interface ReadResult {
  /** index of the first failing entry (past the entries: tree node bad - entries, ReadTask.nodeCounts), or -1 */
  bad: number
  code?: 'CKPT_HASH_MISMATCH' | 'CKPT_BAD_INDEX' | 'CKPT_BAD_PACK'
  message?: string
  /** when neither out nor outFile was given: the chunks, concatenated in entry order; `out` when it is plain memory */
  data?: Uint8Array
}

/** Tree nodes to encode (dag-cbor) and hash: node k has counts[k] entries, its slots concatenated. */
export interface NodeHashTask {
  op: 'nodes'
  counts: Uint32Array
  codecs: Uint8Array
  digests: Uint8Array
}
export interface NodeHashResult {
  /** 32 bytes per node: BLAKE3 of its dag-cbor encoding */
  hashes: Uint8Array
}

/** Verify's structure phase: one pack file scanned (entries checked against their checksums), as columns. */
export interface ScanTask {
  op: 'scan'
  file: string
  packNo: number
  end?: number
  sealed?: boolean
  footerOptional?: boolean
  /** also decompress and re-hash every entry stored whole (verify --deep) */
  prove?: boolean
  /** one part of the pack (splitPack) */
  start?: number
  seek?: boolean
  stopAfter?: number
}

export type Task = HashTask | CompressTask | ReadTask | NodeHashTask | ScanTask | DeltaChainTask
export type TaskResult = HashResult | CompressResult | ReadResult | NodeHashResult | CompactScan | DeltaChainResult

let scratch = Buffer.allocUnsafe(8 << 20)

function preadAll(fd: number, into: Uint8Array, pos: number): void {
  let got = 0
  while (got < into.length) {
    const n = fs.readSync(fd, into, got, into.length - got, pos + got)
    if (n === 0) throw new CkptError('CKPT_WRONG_SIZE', `file ended at offset ${pos + got} during the scan`)
    got += n
  }
}

/** The task's chunk bytes: its shared data, or a private read of the file range. */
function input(t: { data?: Uint8Array; file?: string; fileOffset?: number; offsets: Uint32Array; lengths: Uint32Array }): Uint8Array {
  if (t.data) return t.data
  const n = t.offsets.length
  const end = n === 0 ? 0 : t.offsets[n - 1]! + t.lengths[n - 1]!
  if (scratch.length < end) scratch = Buffer.allocUnsafe(end)
  const fd = fs.openSync(t.file!, 'r')
  try {
    preadAll(fd, scratch.subarray(0, end), t.fileOffset ?? 0)
  } finally {
    fs.closeSync(fd)
  }
  return scratch.subarray(0, end)
}

function sameDigest(a: Uint8Array, b: Uint8Array, at: number, aAt = 0): boolean {
  for (let j = 0; j < 32; j++) if (a[aAt + j] !== b[at + j]) return false
  return true
}

/** a raw block's CID for the entry headers: the prefix once, the digest copied in per chunk */
const rawCid = Uint8Array.of(0x01, RAW, BLAKE3, DIGEST_LENGTH, ...new Uint8Array(DIGEST_LENGTH))

/** reused for encoding nodes to hash (a leaf of 256 links is 10.5 KB) */
let nodeScratch = new Uint8Array(16 << 10)

function hashNodeInto(e: { count: number; codecs: Uint8Array; digests: Uint8Array }, out: Uint8Array, at: number): void {
  const bytes = encodeNodeScratch(e, nodeScratch)
  if (bytes.buffer !== nodeScratch.buffer) nodeScratch = new Uint8Array(bytes.length)
  blake3Into(bytes, out, at)
}

const ZERO = new Uint8Array(1 << 20)

function isZero(b: Uint8Array): boolean {
  // most non-zero chunks show it in their first or last bytes: skip the full compare for them
  const n = b.length
  for (let i = 0; i < 16 && i < n; i++) if (b[i] !== 0 || b[n - 1 - i] !== 0) return false
  for (let at = 0; at < b.length; at += ZERO.length) {
    const n = Math.min(ZERO.length, b.length - at)
    if (!Buffer.from(b.buffer, b.byteOffset + at, n).equals(ZERO.subarray(0, n))) return false
  }
  return true
}

export function runTask(t: Task): TaskResult {
  switch (t.op) {
    case 'hash': {
      const n = t.offsets.length
      const digests = new Uint8Array(n * 32)
      const zero = new Uint8Array(n)
      if (!t.compress) return scan(t, digests, zero)
      const data = input(t)
      const compressor = compressorFor(t.codec ?? AT_REST.identity)
      let bound = 0
      for (let i = 0; i < n; i++) if (!t.hashOnly?.[i]) bound += ENTRY_HEADER_SIZE + maxBlockPayload(compressor, t.lengths[i]!)
      // the caller's shared output buffer, or one of our own handed back by transfer; never a buffer
      // per chunk (allocUnsafeSlow: never a view of Buffer's shared pool, which a transfer would detach)
      const out = t.out && t.out.length >= bound ? t.out : Buffer.allocUnsafeSlow(bound)
      const compressed = new Uint8Array(n)
      const outLengths = new Uint32Array(n)
      const codes = new Uint8Array(n)
      const depths = t.bases ? new Uint8Array(n) : undefined
      let baseMismatches = 0
      let at = 0
      for (let i = 0; i < n; i++) {
        const c = data.subarray(t.offsets[i]!, t.offsets[i]! + t.lengths[i]!)
        if (isZero(c)) {
          zero[i] = 1
          continue
        }
        blake3Into(c, digests, i * 32)
        if (t.previous && sameDigest(digests, t.previous, i * 32, i * 32)) continue
        if (t.hashOnly?.[i]) continue
        if (t.known && viewMayHave(t.known, digests, i * 32)) {
          compressed[i] = KNOWN
          continue
        }
        // a complete pack entry: the main thread only copies it into the pack
        let d: { code: number; length: number; depth: number } | null | undefined
        if (t.bases && t.previous && t.baseDepths![i]! < 255) {
          const base = t.bases.subarray(t.offsets[i]!, t.offsets[i]! + t.lengths[i]!)
          d = againstBase(compressor, c, base, t.previous, i, t.baseDepths![i]!, out, at + ENTRY_HEADER_SIZE)
          if (d === null) baseMismatches++
        }
        // stored whole unless a delta was kept (no object made per chunk on the path without bases)
        const r = d ?? compressBlockInto(compressor, c, out, at + ENTRY_HEADER_SIZE)
        const depth = d ? d.depth : 0
        rawCid.set(digests.subarray(i * 32, i * 32 + 32), 4)
        const size = writeEntryHeader(out, at, rawCid, r.code, depth, c.length, r.length)
        if (depths) depths[i] = depth
        outLengths[i] = size
        codes[i] = r.code
        compressed[i] = COMPRESSED
        at += size
      }
      const r: HashResult = { digests, zero, compressed, out: out.subarray(0, at), outLengths, codes }
      if (depths) Object.assign(r, { depths, baseMismatches })
      if (t.leaves && t.indexes) Object.assign(r, hashLeaves(t.leaves, t.indexes, digests, zero))
      if (t.decodeNodes && t.hashOnly) Object.assign(r, decodeNodes(t, data))
      return r
    }
    case 'compress': {
      const compressor = compressorFor(t.codec ?? AT_REST.identity)
      const n = t.offsets.length
      const outLengths = new Uint32Array(n)
      const codes = new Uint8Array(n)
      const data = t.file ? fileChunks(t) : t.data!
      const offs = t.file ? packedOffsets(t.lengths) : t.offsets
      let bound = 0
      for (let i = 0; i < n; i++) bound += maxBlockPayload(compressor, t.lengths[i]!)
      const out = Buffer.allocUnsafeSlow(bound)
      let at = 0
      for (let i = 0; i < n; i++) {
        const chunk = data.subarray(offs[i]!, offs[i]! + t.lengths[i]!)
        if (t.digests && !sameDigest(blake3(chunk), t.digests, i * 32)) {
          return { out: new Uint8Array(0), outLengths, codes, changed: i }
        }
        const r = compressBlockInto(compressor, chunk, out, at)
        outLengths[i] = r.length
        codes[i] = r.code
        at += r.length
      }
      return { out: out.subarray(0, at), outLengths, codes }
    }
    case 'read':
      return readEntries(t)
    case 'scan':
      return scanPackCompact(t.file, t.packNo, { end: t.end, sealed: t.sealed, footerOptional: t.footerOptional, prove: t.prove, start: t.start, seek: t.seek, stopAfter: t.stopAfter })
    case 'deltas':
      return proveDeltaChains(t)
    case 'nodes': {
      const hashes = new Uint8Array(t.counts.length * 32)
      let at = 0
      for (let k = 0; k < t.counts.length; k++) {
        const count = t.counts[k]!
        hashNodeInto({ count, codecs: t.codecs.subarray(at, at + count), digests: t.digests.subarray(at * 32, (at + count) * 32) }, hashes, k * 32)
        at += count
      }
      return { hashes }
    }
  }
}

/** a file scan reads this much at a time, so the bytes are still in the core's cache when hashed */
const PIECE = 256 << 10

/**
 * A full scan's hash task (no compression). By spans (spanChunks > 1): a zero span makes all its
 * chunks holes; a span equal to its cached digest leaves its chunks `unchanged`; any other span is
 * zero-checked and hashed chunk by chunk. Chunks are contiguous (a full scan's batches always are).
 * File input is read in pieces of whole spans of about PIECE bytes, each processed as it arrives.
 */
function scan(t: HashTask, digests: Uint8Array, zero: Uint8Array): HashResult {
  if (t.knownSpans && t.knownZero && t.file) return scanKnown(t, digests, zero)
  const n = t.offsets.length
  const { r, per } = scanResult(t, digests, zero)
  if (n === 0) return r
  if (!t.file) {
    scanRange(t, r, per, t.data!, 0, 0, n)
    return r
  }
  const step = per * Math.max(1, Math.floor(PIECE / (per * t.lengths[0]!)))
  const fd = fs.openSync(t.file, 'r')
  try {
    for (let from = 0; from < n; from += step) {
      const to = Math.min(n, from + step)
      const base = t.offsets[from]!
      const end = t.offsets[to - 1]! + t.lengths[to - 1]!
      if (scratch.length < end - base) scratch = Buffer.allocUnsafe(end - base)
      const view = scratch.subarray(0, end - base)
      preadAll(fd, view, (t.fileOffset ?? 0) + base)
      scanRange(t, r, per, view, base, from, to)
    }
  } finally {
    fs.closeSync(fd)
  }
  return r
}

/** scan() with the spans' digests and zero flags given (knownSpans): the same result, fewer bytes read. */
function scanKnown(t: HashTask, digests: Uint8Array, zero: Uint8Array): HashResult {
  const n = t.offsets.length
  const { r, per, spans } = scanResult(t, digests, zero)
  const known = t.knownSpans!
  let fd = -1
  try {
    for (let s = 0; s < spans; s++) {
      const first = s * per
      const last = Math.min(n, first + per) - 1
      if (t.knownZero![s]) {
        if (per > 1) r.spanZero![s] = 1
        zero.fill(1, first, last + 1)
        continue
      }
      const d = known.subarray(s * 32, s * 32 + 32)
      if (per === 1) {
        digests.set(d, first * 32)
        continue
      }
      r.spanDigests!.set(d, s * 32)
      if (r.unchanged && !t.cachedZero![s] && sameDigest(d, t.cachedSpans!, s * 32)) {
        r.unchanged.fill(1, first, last + 1)
        r.spansUnchanged!++
        continue
      }
      const base = t.offsets[first]!
      const end = t.offsets[last]! + t.lengths[last]!
      if (fd < 0) fd = fs.openSync(t.file!, 'r')
      if (scratch.length < end - base) scratch = Buffer.allocUnsafe(end - base)
      const view = scratch.subarray(0, end - base)
      preadAll(fd, view, (t.fileOffset ?? 0) + base)
      hashChunks(t, view, base, first, last, digests, zero)
    }
  } finally {
    if (fd >= 0) fs.closeSync(fd)
  }
  return r
}

/** Chunks [from, to) (from on a span boundary), whose bytes are data[offset - base, ...). */
function scanRange(t: HashTask, r: HashResult, per: number, data: Uint8Array, base: number, from: number, to: number): void {
  const { digests, zero } = r
  for (let first = from; first < to; first += per) {
    const last = Math.min(to, first + per) - 1
    if (per > 1) {
      const s = first / per
      const span = data.subarray(t.offsets[first]! - base, t.offsets[last]! + t.lengths[last]! - base)
      if (isZero(span)) {
        r.spanZero![s] = 1
        zero.fill(1, first, last + 1)
        continue
      }
      blake3Into(span, r.spanDigests!, s * 32)
      if (r.unchanged && !t.cachedZero![s] && sameDigest(r.spanDigests!, t.cachedSpans!, s * 32, s * 32)) {
        r.unchanged.fill(1, first, last + 1)
        r.spansUnchanged!++
        continue
      }
    }
    hashChunks(t, data, base, first, last, digests, zero)
  }
}

/** Chunks [first, last] one by one, their bytes at data[offset - base, ...): a hole, or its digest. */
function hashChunks(t: HashTask, data: Uint8Array, base: number, first: number, last: number, digests: Uint8Array, zero: Uint8Array): void {
  for (let i = first; i <= last; i++) {
    const c = data.subarray(t.offsets[i]! - base, t.offsets[i]! + t.lengths[i]! - base)
    if (isZero(c)) zero[i] = 1
    else blake3Into(c, digests, i * 32)
  }
}

/** A full scan's result arrays: per chunk, and per span when the task's chunks form spans. */
function scanResult(t: HashTask, digests: Uint8Array, zero: Uint8Array): { r: HashResult; per: number; spans: number } {
  const n = t.offsets.length
  const per = t.spanChunks && t.spanChunks > 1 ? t.spanChunks : 1
  const spans = Math.ceil(n / per)
  const r: HashResult = { digests, zero }
  if (per > 1) {
    r.spanDigests = new Uint8Array(spans * 32)
    r.spanZero = new Uint8Array(spans)
    if (t.cachedSpans) r.unchanged = new Uint8Array(n)
    r.spansUnchanged = 0
  }
  return { r, per, spans }
}

/**
 * Applies the chunks' results to the leaves they fall in, then encodes and hashes every leaf; with
 * `bases`, also makes each changed leaf's delta against its base from the slots the chunks changed.
 */
function hashLeaves(l: LeafSet, indexes: Uint32Array, digests: Uint8Array, zero: Uint8Array): Pick<HashResult, 'leafHashes' | 'leafLive' | 'leafDeltaLengths' | 'leafDeltas' | 'leafSizes'> {
  const F = l.fanout
  const leaves = l.numbers.length
  // the slots each leaf's chunks changed, in increasing order (indexes are sorted): leaf j's are
  // changed[firstChanged[j], firstChanged[j + 1])
  const changed = l.bases ? new Uint32Array(indexes.length) : undefined
  const firstChanged = l.bases ? new Uint32Array(leaves + 1) : undefined
  let nChanged = 0
  let k = 0
  for (let i = 0; i < indexes.length; i++) {
    const leaf = Math.floor(indexes[i]! / F)
    while (k < leaves && l.numbers[k]! < leaf) {
      k++
      if (firstChanged) firstChanged[k] = nChanged
    }
    if (k === leaves) break
    if (l.numbers[k] !== leaf) continue
    const s = indexes[i]! % F
    const slot = k * F + s
    let differs: boolean
    if (zero[i]) {
      differs = l.codecs[slot] !== 0
      l.codecs[slot] = 0
      l.digests.fill(0, slot * 32, slot * 32 + 32)
    } else {
      differs = l.codecs[slot] !== RAW || !sameDigest(digests, l.digests, slot * 32, i * 32)
      l.codecs[slot] = RAW
      l.digests.set(digests.subarray(i * 32, i * 32 + 32), slot * 32)
    }
    if (changed && differs && (nChanged === 0 || firstChanged![k]! === nChanged || changed[nChanged - 1] !== s)) changed[nChanged++] = s
  }
  if (firstChanged) for (k++; k <= leaves; k++) firstChanged[k] = nChanged
  const leafHashes = new Uint8Array(leaves * 32)
  const leafLive = new Uint8Array(leaves)
  const sizes = l.bases ? new Uint32Array(leaves) : undefined
  const deltaLengths = l.bases ? new Uint32Array(leaves) : undefined
  const deltas: Uint8Array[] = []
  let deltaBytes = 0
  for (let j = 0; j < leaves; j++) {
    const count = l.counts[j]!
    const codecs = l.codecs.subarray(j * F, j * F + count)
    let live = false
    for (let s = 0; s < count && !live; s++) live = codecs[s] !== 0
    if (!live) continue
    leafLive[j] = 1
    const e = { count, codecs, digests: l.digests.subarray(j * F * 32, (j * F + count) * 32) }
    const bytes = encodeNodeScratch(e, nodeScratch)
    if (bytes.buffer !== nodeScratch.buffer) nodeScratch = new Uint8Array(bytes.length)
    blake3Into(bytes, leafHashes, j * 32)
    if (!l.bases || l.bases[j * 36] === 0 || firstChanged![j] === firstChanged![j + 1]) continue
    sizes![j] = bytes.length
    const delta = encodeNodePatch(l.bases.subarray(j * 36, j * 36 + 36), e, changed!.subarray(firstChanged![j], firstChanged![j + 1]), bytes.length >> 1, l.deltaForm ?? 1)
    if (!delta) continue
    deltas.push(delta)
    deltaLengths![j] = delta.length
    deltaBytes += delta.length
  }
  if (!l.bases) return { leafHashes, leafLive }
  const leafDeltas = new Uint8Array(deltaBytes)
  let at = 0
  for (const d of deltas) {
    leafDeltas.set(d, at)
    at += d.length
  }
  return { leafHashes, leafLive, leafDeltaLengths: deltaLengths, leafDeltas, leafSizes: sizes }
}

/** File chunks at arbitrary offsets, gathered into one private buffer (compress-from-file). */
function fileChunks(t: CompressTask): Uint8Array {
  let total = 0
  for (let i = 0; i < t.lengths.length; i++) total += t.lengths[i]!
  const out = Buffer.allocUnsafe(total)
  const fd = fs.openSync(t.file!, 'r')
  try {
    let at = 0
    for (let i = 0; i < t.offsets.length; i++) {
      preadAll(fd, out.subarray(at, at + t.lengths[i]!), (t.fileOffset ?? 0) + t.offsets[i]!)
      at += t.lengths[i]!
    }
  } finally {
    fs.closeSync(fd)
  }
  return out
}

function packedOffsets(lengths: Uint32Array): Uint32Array {
  const o = new Uint32Array(lengths.length)
  for (let i = 1; i < lengths.length; i++) o[i] = o[i - 1]! + lengths[i - 1]!
  return o
}

/** ArrayBuffers a result can hand back without copying (never shared memory). */
/** HashTask.decodeNodes: the hash-only blocks that decode as tree nodes, as columns (HashResult.nodeCounts). */
function decodeNodes(t: HashTask, data: Uint8Array): { nodeCounts: Uint32Array; nodeCodecs: Uint8Array; nodeDigests: Uint8Array } {
  const n = t.offsets.length
  const block = (i: number) => data.subarray(t.offsets[i]!, t.offsets[i]! + t.lengths[i]!)
  let slots = 0
  for (let i = 0; i < n; i++) if (t.hashOnly![i]) slots += nodeSlotCount(block(i))
  const nodeCounts = new Uint32Array(n)
  const nodeCodecs = new Uint8Array(slots)
  const nodeDigests = new Uint8Array(slots * 32)
  let at = 0
  for (let i = 0; i < n; i++) {
    if (!t.hashOnly![i]) continue
    const b = block(i)
    const count = nodeSlotCount(b)
    if (count === 0) continue
    const into = { codecs: nodeCodecs.subarray(at, at + count), digests: nodeDigests.subarray(at * 32, (at + count) * 32) }
    try {
      decodeNode(b, into)
    } catch {
      // not a tree node: its columns are cleared for the next one
      into.codecs.fill(0)
      into.digests.fill(0)
      continue
    }
    nodeCounts[i] = count
    at += count
  }
  return { nodeCounts, nodeCodecs, nodeDigests }
}

export function transferables(r: TaskResult): ArrayBuffer[] {
  const list: ArrayBuffer[] = []
  for (const v of Object.values(r)) {
    if (ArrayBuffer.isView(v)) {
      if (v.buffer instanceof ArrayBuffer && !list.includes(v.buffer)) list.push(v.buffer)
    }
  }
  return list
}
