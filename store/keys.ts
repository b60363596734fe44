/**
 * LevelDB key layout, store format version 2 (SPEC.md §6). One-byte prefixes keep families apart.
 *   'b' cid(36)                          -> block location (22 B, see encodeLocation)
 *   'p' u32be pack                       -> pack record (13 B: u64 committed length, u8 state, u32 entries)
 *   't' utf8 timeline                    -> timeline record (JSON)
 *   'c' utf8 timeline 0x00 u64be vtime   -> checkpoint CID (36 B)
 *   'k' cid(36)                          -> checkpoint record (JSON: timeline, vtime)
 *   'x' cid(36)                          -> removed checkpoint not yet collected (JSON: timeline, vtime)
 *   'M' cid(36)                          -> (empty) the block is a checkpoint manifest
 *   'R' u64be seq u32be part             -> where a catalog record is (22 B, as a block location)
 *   'r' utf8 ref                         -> CID (36 B)
 *   'm' utf8 name                        -> store metadata (JSON)
 * Everything but 'm' can be rebuilt from the packs (their entries and catalog records).
 */
import { CID_LENGTH } from '../codecs/cid.js'

export const enc = new TextEncoder()
export const dec = new TextDecoder()

const P_BLOCK = 0x62
const P_PACK = 0x70
const P_TIMELINE = 0x74
const P_CKPT = 0x63
const P_CKREC = 0x6b
const P_REF = 0x72
const P_META = 0x6d
const P_REMOVED = 0x78
const P_MANIFEST = 0x4d
const P_RECORD = 0x52

function prefixed(prefix: number, body: Uint8Array): Uint8Array {
  const k = new Uint8Array(1 + body.length)
  k[0] = prefix
  k.set(body, 1)
  return k
}

export const blockKey = (cid: Uint8Array) => prefixed(P_BLOCK, cid)
export const blockRange = { gte: Uint8Array.of(P_BLOCK), lt: Uint8Array.of(P_BLOCK + 1) }
export const blockKeyCid = (key: Uint8Array) => key.subarray(1, 1 + CID_LENGTH)

export function packKey(packNo: number): Uint8Array {
  const k = new Uint8Array(5)
  k[0] = P_PACK
  new DataView(k.buffer).setUint32(1, packNo)
  return k
}
export const packRange = { gte: Uint8Array.of(P_PACK), lt: Uint8Array.of(P_PACK + 1) }
export const packKeyNo = (key: Uint8Array) => new DataView(key.buffer, key.byteOffset, key.byteLength).getUint32(1)

export const timelineKey = (name: string) => prefixed(P_TIMELINE, enc.encode(name))
export const timelineRange = { gte: Uint8Array.of(P_TIMELINE), lt: Uint8Array.of(P_TIMELINE + 1) }

export function checkpointKey(timeline: string, vtime: bigint): Uint8Array {
  const name = enc.encode(timeline)
  const k = new Uint8Array(1 + name.length + 1 + 8)
  k[0] = P_CKPT
  k.set(name, 1)
  new DataView(k.buffer).setBigUint64(name.length + 2, vtime)
  return k
}
/** Every checkpoint key of a timeline lies in [checkpointKey(t, 0), checkpointKey(t, 2^64-1)]. */
export function checkpointRange(timeline: string): { gte: Uint8Array; lte: Uint8Array } {
  return { gte: checkpointKey(timeline, 0n), lte: checkpointKey(timeline, 0xffffffffffffffffn) }
}
export function checkpointKeyVtime(key: Uint8Array): bigint {
  return new DataView(key.buffer, key.byteOffset, key.byteLength).getBigUint64(key.length - 8)
}

/** Every checkpoint key of every timeline. */
export const allCheckpointsRange = { gte: Uint8Array.of(P_CKPT), lt: Uint8Array.of(P_CKPT + 1) }

/** The timeline name of a checkpoint key, or undefined if the key is malformed. */
export function checkpointKeyTimeline(key: Uint8Array): string | undefined {
  if (key.length < 11 || key[0] !== P_CKPT || key[key.length - 9] !== 0) return undefined
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(key.subarray(1, key.length - 9))
  } catch {
    return undefined
  }
}

export const checkpointRecordKey = (cid: Uint8Array) => prefixed(P_CKREC, cid)
export const refKey = (name: string) => prefixed(P_REF, enc.encode(name))
export const refRange = { gte: Uint8Array.of(P_REF), lt: Uint8Array.of(P_REF + 1) }
export const metaKey = (name: string) => prefixed(P_META, enc.encode(name))
export const metaRange = { gte: Uint8Array.of(P_META), lt: Uint8Array.of(P_META + 1) }
export const removedKey = (cid: Uint8Array) => prefixed(P_REMOVED, cid)
export const removedRange = { gte: Uint8Array.of(P_REMOVED), lt: Uint8Array.of(P_REMOVED + 1) }
export const manifestKey = (cid: Uint8Array) => prefixed(P_MANIFEST, cid)
export const manifestRange = { gte: Uint8Array.of(P_MANIFEST), lt: Uint8Array.of(P_MANIFEST + 1) }
export function recordKey(seq: number, part = 0): Uint8Array {
  const k = new Uint8Array(13)
  k[0] = P_RECORD
  const v = new DataView(k.buffer)
  v.setBigUint64(1, BigInt(seq))
  v.setUint32(9, part)
  return k
}
export const recordRange = { gte: Uint8Array.of(P_RECORD), lt: Uint8Array.of(P_RECORD + 1) }
export function recordKeySeq(k: Uint8Array): { seq: number; part: number } {
  const v = new DataView(k.buffer, k.byteOffset, k.byteLength)
  return { seq: Number(v.getBigUint64(1)), part: v.getUint32(9) }
}
/** 'm' names: the catalog's position in the record stream; a rebuild under way */
export const META_CATALOG = 'catalog'
export const META_REBUILDING = 'rebuilding'
/** set by a rebuild whose catalog holds what no record does: the next writer writes a snapshot */
export const META_NEEDS_SNAPSHOT = 'needs-snapshot'
/** the key of the scan cache files' checksums (SPEC.md §18), JSON {"key": 64 hex digits} */
export const META_SCAN_KEY = 'scan-key'
/** present (true) once a commit stored a chunk delta (codec 4): gc then looks for live ones whose base is dead */
export const META_CHUNK_DELTAS = 'chunk-deltas'

export function jsonValue(v: unknown): Uint8Array {
  return enc.encode(JSON.stringify(v))
}
export function parseJson<T>(b: Uint8Array): T {
  return JSON.parse(dec.decode(b)) as T
}
