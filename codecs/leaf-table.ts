/**
 * The leaf file's format (SPEC.md §18.1): every chunk link of a region tree (its leaves' entries, in
 * chunk order), as of the tree whose root CID the file names. A full scan in a new process (one
 * `ckpt add`) takes the old tree's leaves from it instead of rebuilding each from its delta chain in
 * the packs; every leaf taken is hashed and checked against the CID its parent holds, so the file is
 * never trusted with content, only with saving time. Pure bytes here; the file I/O is in src/scan-cache.ts.
 */
import { blake3 } from './blake3.js'
import { CID_LENGTH } from './cid.js'

export const LEAF_MAGIC = 'CKPTLEAF'
/** version 2 stores no digest for a hole; version-1 files (a digest, zeros, for every chunk) are still read */
export const LEAF_VERSION = 2
export const LEAF_HEADER_SIZE = 72

export interface ChunkTable {
  /** the region's size in bytes and chunk size */
  size: number
  chunkSize: number
  /** the tree's fan-out */
  fanout: number
  /** root CID (36 B) of the region tree whose leaves these are */
  root: Uint8Array
  /** per chunk: 0 for a hole, else the link's multicodec (0x55 raw) */
  codecs: Uint8Array
  /** 32 B per chunk: the linked block's BLAKE3 digest (zeros for a hole) */
  digests: Uint8Array
}

export function chunkCount(size: number, chunkSize: number): number {
  return Math.ceil(size / chunkSize)
}

/** How many chunks are not holes. */
function linked(codecs: Uint8Array): number {
  let m = 0
  for (let i = 0; i < codecs.length; i++) if (codecs[i] !== 0) m++
  return m
}

/**
 * The runs of linked chunks [from, to), each with where its digests start among the linked chunks'
 * digests laid end to end (version 2): the one mapping encode and decode both follow.
 */
function linkedRuns(codecs: Uint8Array, run: (from: number, to: number, packed: number) => void): void {
  const n = codecs.length
  let packed = 0
  for (let i = 0; i < n; ) {
    if (codecs[i] === 0) {
      i++
      continue
    }
    let j = i + 1
    while (j < n && codecs[j] !== 0) j++
    run(i, j, packed)
    packed += j - i
    i = j
  }
}

export function encodeChunkTable(t: ChunkTable): Uint8Array {
  const n = t.codecs.length
  const m = linked(t.codecs)
  const out = Buffer.alloc(LEAF_HEADER_SIZE + n + m * 32 + 32)
  out.write(LEAF_MAGIC, 0, 'latin1')
  out.writeUInt16LE(LEAF_VERSION, 8)
  out.writeUInt16LE(0, 10)
  out.writeUInt32LE(t.fanout, 12)
  out.writeBigUInt64LE(BigInt(t.size), 16)
  out.writeUInt32LE(t.chunkSize, 24)
  out.writeUInt32LE(n, 28)
  out.set(t.root.subarray(0, CID_LENGTH), 32)
  out.set(t.codecs, LEAF_HEADER_SIZE)
  // the linked chunks' digests, in chunk order; a hole has none (its digest is all zero)
  const at = LEAF_HEADER_SIZE + n
  linkedRuns(t.codecs, (from, to, packed) => out.set(t.digests.subarray(from * 32, to * 32), at + packed * 32))
  out.set(blake3(out.subarray(0, out.length - 32)), out.length - 32)
  return out
}

/** The table, or undefined for anything that is not a complete, intact version-1 or version-2 leaf file. */
export function decodeChunkTable(bytes: Uint8Array): ChunkTable | undefined {
  if (bytes.length < LEAF_HEADER_SIZE + 32) return undefined
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const version = b.readUInt16LE(8)
  if (b.toString('latin1', 0, 8) !== LEAF_MAGIC || (version !== 1 && version !== 2) || b.readUInt16LE(10) !== 0) return undefined
  const fanout = b.readUInt32LE(12)
  const size = b.readBigUInt64LE(16)
  const chunkSize = b.readUInt32LE(24)
  const n = b.readUInt32LE(28)
  if (fanout < 2 || chunkSize === 0 || size > BigInt(Number.MAX_SAFE_INTEGER) || n !== chunkCount(Number(size), chunkSize)) return undefined
  if (b.length < LEAF_HEADER_SIZE + n + 32) return undefined
  const codecs = new Uint8Array(b.subarray(LEAF_HEADER_SIZE, LEAF_HEADER_SIZE + n))
  const m = version === 1 ? n : linked(codecs)
  if (b.length !== LEAF_HEADER_SIZE + n + m * 32 + 32) return undefined
  const sum = blake3(b.subarray(0, b.length - 32))
  for (let k = 0; k < 32; k++) if (sum[k] !== b[b.length - 32 + k]) return undefined
  const stored = b.subarray(LEAF_HEADER_SIZE + n, LEAF_HEADER_SIZE + n + m * 32)
  // plain Uint8Array copies: a Buffer's slice() is a view, and these are sliced into node entries
  let digests: Uint8Array
  if (version === 1) digests = new Uint8Array(stored)
  else {
    const full = (digests = new Uint8Array(n * 32))
    linkedRuns(codecs, (from, to, packed) => full.set(stored.subarray(packed * 32, (packed + to - from) * 32), from * 32))
  }
  return { size: Number(size), chunkSize, fanout, root: new Uint8Array(b.subarray(32, 32 + CID_LENGTH)), codecs, digests }
}
