/**
 * Chunk deltas (at-rest codec 4): a chunk stored as its compression against an earlier version of
 * the same page or cluster (its base), used as a raw-content dictionary. A guest rewrites a page
 * mostly where it was (page tables, stacks, slab pages): on a real recording two thirds of the changed
 * chunks compress against their previous version to less than alone (docs/performance.md). The
 * block's CID is still the BLAKE3 of its raw bytes; the base is another stored chunk, named by its CID.
 *
 *   chunkDelta := baseCid(36 bytes) u8(inner) frame
 *
 * - baseCid is a CIDv1 raw BLAKE3-256 (0x01 0x55 0x1e 0x20 + digest): a chunk of the store, itself
 *   whole or a chunk delta (the entry's deltaDepth counts the chain: 1 + the base's depth).
 * - inner 1: `frame` is one zstd frame compressed with the base's bytes as a raw-content dictionary
 *   (ZSTD_compress_usingDict); 2: a raw deflate stream (RFC 1951) with the base's last 32 KiB as its
 *   preset dictionary. Nothing may follow the frame.
 * - zstd reads a dictionary that starts with its magic 37 A4 30 EC as a formatted dictionary: a base
 *   starting so is never used with inner 1 (a writer stores the chunk whole; a reader refuses it).
 */
import { BLAKE3, CID_LENGTH, DIGEST_LENGTH, RAW, type CidBytes } from './cid.js'
import { AT_REST, compressorFor, deflateCompressor, type Compressor } from './compress.js'
import { CkptError } from './errors.js'

/** the bytes before the frame: the base's CID and the inner codec */
export const CHUNK_DELTA_HEADER = CID_LENGTH + 1
/** the inner codec numbers (the at-rest codes of the same compressors) */
export const CHUNK_DELTA_INNER = { zstd: AT_REST.zstd, deflate: AT_REST.deflate } as const
/**
 * The longest chain of chunk deltas ckpt writes (a chunk whose previous version is this deep is stored
 * whole): on a real QEMU recording (docs/performance.md) 8 stored 1.8% more than no limit, with 1.7
 * chunks decompressed per chunk restored.
 */
export const CHUNK_DELTA_MAX_DEPTH = 8
/** a base shorter than this is not worth a dictionary (and zstd wants at least 8 bytes) */
export const MIN_BASE_LENGTH = 64

/** An upper bound of encodeChunkDeltaInto()'s payload for a chunk of n bytes. */
export function chunkDeltaBound(n: number): number {
  return CHUNK_DELTA_HEADER + n + (n >> 7) + 512
}

function bad(message: string): CkptError {
  return new CkptError('CKPT_BAD_PACK', `chunk delta: ${message}`)
}

function zstdMagic(b: Uint8Array): boolean {
  return b.length >= 4 && b[0] === 0x37 && b[1] === 0xa4 && b[2] === 0x30 && b[3] === 0xec
}

/** Whether `base` may be the dictionary of a delta written with `c`. */
export function usableBase(c: Compressor, base: Uint8Array): boolean {
  if (!c.compressWithBase || base.length < MIN_BASE_LENGTH) return false
  return !(c.code === AT_REST.zstd && zstdMagic(base))
}

/**
 * Writes the chunk delta of `data` against `base` (whose CID is `baseCid`) into `dst` at `at`, which
 * has room for chunkDeltaBound(data.length) bytes: returns the payload's length, or -1 when `c` has no
 * compression with a base or the base cannot be one (usableBase). The caller keeps it only where it
 * is smaller than the chunk alone.
 */
export function encodeChunkDeltaInto(c: Compressor, baseCid: CidBytes, base: Uint8Array, data: Uint8Array, dst: Uint8Array, at: number): number {
  if (!usableBase(c, base)) return -1
  if (baseCid.length !== CID_LENGTH || baseCid[1] !== RAW) throw new TypeError('encodeChunkDeltaInto: the base must be a raw chunk CID')
  dst.set(baseCid, at)
  dst[at + CID_LENGTH] = c.code
  const n = c.compressWithBase!(data, base, dst.subarray(at + CHUNK_DELTA_HEADER, at + chunkDeltaBound(data.length)))
  return CHUNK_DELTA_HEADER + n
}

/** The base's CID a chunk delta names (a view of the payload); CKPT_BAD_PACK when it is no chunk CID. */
export function chunkDeltaBase(payload: Uint8Array): CidBytes {
  if (payload.length <= CHUNK_DELTA_HEADER) throw bad(`${payload.length} bytes is too short`)
  if (payload[0] !== 0x01 || payload[1] !== RAW || payload[2] !== BLAKE3 || payload[3] !== DIGEST_LENGTH) throw bad('its base is not a raw BLAKE3 CID')
  return payload.subarray(0, CID_LENGTH)
}

function inner(code: number): Compressor {
  if (code === CHUNK_DELTA_INNER.deflate) return deflateCompressor()
  if (code === CHUNK_DELTA_INNER.zstd) return compressorFor(AT_REST.zstd)
  throw bad(`unknown inner codec ${code}`)
}

/**
 * The chunk a delta gives from its base's bytes (the caller proves the base and then the result
 * against their CIDs): decompressed into `into` when it has rawLength bytes. Corrupt input of any kind
 * is CKPT_BAD_PACK; a zstd delta where this Node has no zstd, CKPT_CODEC_UNAVAILABLE.
 */
export function openChunkDelta(payload: Uint8Array, base: Uint8Array, rawLength: number, into?: Uint8Array): Uint8Array {
  chunkDeltaBase(payload)
  const c = inner(payload[CID_LENGTH]!)
  if (!usableBase(c, base)) throw bad(`its base (${base.length} bytes) cannot be a ${c.name} dictionary`)
  let out: Uint8Array
  try {
    out = c.decompressWithBase!(payload.subarray(CHUNK_DELTA_HEADER), base, rawLength, into && into.length === rawLength ? into : undefined)
  } catch (err) {
    throw bad(`corrupt ${c.name} frame: ${err instanceof Error ? err.message : String(err)}`)
  }
  if (out.length !== rawLength) throw bad(`decompressed to ${out.length} bytes, expected ${rawLength}`)
  if (into && into.length === rawLength && out !== into) {
    into.set(out)
    return into
  }
  return out
}
