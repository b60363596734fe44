/**
 * The scan cache's file format (SPEC.md §18): the BLAKE3-256 digests of a region's
 * 64 KiB spans, as of the region tree whose root CID the file names. A full scan compares each span's
 * digest with it to skip hashing the span's chunks one by one. Pure bytes here; the file I/O is in
 * src/scan-cache.ts.
 */
import { blake3 } from './blake3.js'
import { CID_LENGTH } from './cid.js'

export const SCAN_MAGIC = 'CKPTSCAN'
/** 2: the sum is keyed with the store's scan key (version-1 files, whose sum anyone could forge, are ignored) */
export const SCAN_VERSION = 2
/** span size the scan uses (a power of two); regions with chunks this large or larger have no spans */
export { SPAN_SIZE } from './span.js'
export const SCAN_HEADER_SIZE = 68

export interface SpanTable {
  size: number
  chunkSize: number
  spanSize: number
  /** root CID (36 B) of the region tree whose content the digests describe */
  root: Uint8Array
  /** 1 where the span is all zero (its digest is then 32 zero bytes, not a hash) */
  zero: Uint8Array
  /** 32 B per span */
  digests: Uint8Array
}

export function spanCount(size: number, spanSize: number): number {
  return Math.ceil(size / spanSize)
}

/**
 * The file's sum: BLAKE3-256(key ‖ BLAKE3-256(bytes)), with the store's 32-byte scan key. Only a
 * process that can read the store's index can write a file a scan will trust.
 */
export function spanTableSum(bytes: Uint8Array, key: Uint8Array): Uint8Array {
  const inner = blake3(bytes)
  const both = new Uint8Array(key.length + inner.length)
  both.set(key)
  both.set(inner, key.length)
  return blake3(both)
}

export function encodeSpanTable(t: SpanTable, key: Uint8Array): Uint8Array {
  const n = t.zero.length
  const bitmap = Math.ceil(n / 8)
  const out = Buffer.alloc(SCAN_HEADER_SIZE + bitmap + n * 32 + 32)
  out.write(SCAN_MAGIC, 0, 'latin1')
  out.writeUInt16LE(SCAN_VERSION, 8)
  out.writeUInt16LE(0, 10)
  out.writeUInt32LE(t.spanSize, 12)
  out.writeBigUInt64LE(BigInt(t.size), 16)
  out.writeUInt32LE(t.chunkSize, 24)
  out.writeUInt32LE(n, 28)
  out.set(t.root.subarray(0, CID_LENGTH), 32)
  for (let s = 0; s < n; s++) if (t.zero[s]) out[SCAN_HEADER_SIZE + (s >> 3)]! |= 1 << (s & 7)
  out.set(t.digests.subarray(0, n * 32), SCAN_HEADER_SIZE + bitmap)
  out.set(spanTableSum(out.subarray(0, out.length - 32), key), out.length - 32)
  return out
}

/** The table, or undefined for anything that is not a complete, intact version-2 file summed with `key`. */
export function decodeSpanTable(bytes: Uint8Array, key: Uint8Array): SpanTable | undefined {
  if (bytes.length < SCAN_HEADER_SIZE + 32) return undefined
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  if (b.toString('latin1', 0, 8) !== SCAN_MAGIC || b.readUInt16LE(8) !== SCAN_VERSION || b.readUInt16LE(10) !== 0) return undefined
  const spanSize = b.readUInt32LE(12)
  const size = b.readBigUInt64LE(16)
  const chunkSize = b.readUInt32LE(24)
  const n = b.readUInt32LE(28)
  if (spanSize === 0 || size > BigInt(Number.MAX_SAFE_INTEGER) || n !== spanCount(Number(size), spanSize)) return undefined
  const bitmap = Math.ceil(n / 8)
  if (b.length !== SCAN_HEADER_SIZE + bitmap + n * 32 + 32) return undefined
  const sum = spanTableSum(b.subarray(0, b.length - 32), key)
  for (let k = 0; k < 32; k++) if (sum[k] !== b[b.length - 32 + k]) return undefined
  const zero = new Uint8Array(n)
  for (let s = 0; s < n; s++) zero[s] = (b[SCAN_HEADER_SIZE + (s >> 3)]! >> (s & 7)) & 1
  const at = SCAN_HEADER_SIZE + bitmap
  return {
    size: Number(size),
    chunkSize,
    spanSize,
    root: Uint8Array.prototype.slice.call(b, 32, 32 + CID_LENGTH),
    zero,
    digests: Uint8Array.prototype.slice.call(b, at, at + n * 32),
  }
}
