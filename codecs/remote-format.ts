/**
 * A remote's objects (SPEC.md §22): key names, the format object, index segments and catalog
 * objects. Pure: bytes and strings in, bytes and values out.
 *
 *   ckpt-remote.json                      the format object (written once)
 *   packs/HH/HASH                         a sealed pack (pack format §5), HASH its BLAKE3 (64 hex)
 *   index/HASH                            an index segment (below), HASH its BLAKE3
 *   tl/NAME                               a timeline record (JSON, written once)
 *   cp/NAME/VTIME                         a checkpoint claim (JSON, written once: If-None-Match)
 *   cs/NAME/FIRST-LAST-HASH               a catalog segment (JSON: checkpoints and the index segments they need)
 *   refs/NAME/SEQ                         a ref's value at update SEQ (JSON, written once)
 *   locks/gc                              gc's lock (JSON: holder, until)
 * NAME is encodeURIComponent(name) (no '/' inside a key segment); VTIME, FIRST, LAST, SEQ are 16
 * lowercase hex digits (so keys sort by number).
 *
 * Index segment, version 1 (all integers little-endian):
 *   header   24 B  "CKPTRIDX" | u16 version=1 | u16 flags=0 | u32 packCount | u32 depCount | u32 entryCount
 *   packs    packCount × 40 B: 32 B pack hash | u64 pack size
 *   deps     depCount × 32 B: hashes of the segments holding blocks that this segment's blocks reach
 *            and that are not in it (closed: a dep's own deps are listed too)
 *   entries  entryCount × 60 B, sorted by CID bytes, each CID once:
 *            36 B CID | u32 pack (index into packs) | u64 offset of the entry header in the pack
 *            | u32 storedLength | u32 rawLength | u8 codec | u8 kind | u8 depth | u8 flags
 *            (depth: the delta chain length of a node delta, codec 3, whose base is another CID; else 0.
 *            flags bit 0, BASE_ONLY: a tree node kept only as a delta base by a gc: its subtree may be gone)
 */
import { CkptError } from './errors.js'
import { CID_LENGTH } from './cid.js'

export const REMOTE_FORMAT = 'ckpt-remote'
export const REMOTE_VERSION = 1
export const CONFIG_KEY = 'ckpt-remote.json'
export const SEGMENT_MAGIC = Buffer.from('CKPTRIDX', 'latin1')
export const SEGMENT_VERSION = 1
export const SEGMENT_HEADER_SIZE = 24
export const SEGMENT_PACK_SIZE = 40
export const SEGMENT_ENTRY_SIZE = 60
export const HASH_HEX = /^[0-9a-f]{64}$/

export interface RemoteConfig {
  format: typeof REMOTE_FORMAT
  version: number
  /** ms since the epoch */
  created: number
  /** 32 hex digits, random at creation: the remote's identity (a store's cache of it is keyed by it) */
  id: string
}

export const hex16 = (n: bigint | number) => BigInt(n).toString(16).padStart(16, '0')
export const nameKey = (name: string) => encodeURIComponent(name)
export const packKey = (hash: string) => `packs/${hash.slice(0, 2)}/${hash}`
export const segmentKey = (hash: string) => `index/${hash}`
export const timelineKey = (name: string) => `tl/${nameKey(name)}`
export const claimPrefix = (name: string) => `cp/${nameKey(name)}/`
export const claimKey = (name: string, vtime: bigint) => claimPrefix(name) + hex16(vtime)
export const catalogPrefix = (name: string) => `cs/${nameKey(name)}/`
export const catalogKey = (name: string, first: bigint, last: bigint, hash: string) => `${catalogPrefix(name)}${hex16(first)}-${hex16(last)}-${hash.slice(0, 16)}`
export const refPrefix = (name: string) => `refs/${nameKey(name)}/`
export const refKey = (name: string, seq: number) => refPrefix(name) + hex16(seq)
export const GC_LOCK_KEY = 'locks/gc'

/** The vtime range a catalog segment's key names; undefined when the key is not one. */
export function parseCatalogKey(key: string): { first: bigint; last: bigint } | undefined {
  const m = /\/([0-9a-f]{16})-([0-9a-f]{16})-[0-9a-f]{16}$/.exec(key)
  return m ? { first: BigInt('0x' + m[1]), last: BigInt('0x' + m[2]) } : undefined
}

export const toHex = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex')
export const fromHex = (h: string) => new Uint8Array(Buffer.from(h, 'hex'))

export interface SegmentPack {
  hash: string
  size: number
}

export interface SegmentEntry {
  cid: Uint8Array
  pack: number
  offset: number
  storedLength: number
  rawLength: number
  codec: number
  kind: number
  /** delta chain length of a node delta (codec 3), else 0 */
  depth?: number
  /** ENTRY_FLAGS bits */
  flags?: number
}

export const ENTRY_FLAGS = {
  /** a tree node a gc kept only as the base of a live node delta: readable, but its subtree may be gone */
  baseOnly: 1,
} as const

export interface Segment {
  packs: SegmentPack[]
  deps: string[]
  /** entryCount × 60 B, sorted by CID (read entries with segmentEntry) */
  entries: Uint8Array
  count: number
}

function bad(message: string, details: Record<string, unknown> = {}): CkptError {
  return new CkptError('CKPT_BAD_REMOTE', message, details)
}

function compareCid(a: Uint8Array, ao: number, b: Uint8Array, bo: number): number {
  for (let j = 0; j < CID_LENGTH; j++) {
    const d = a[ao + j]! - b[bo + j]!
    if (d) return d
  }
  return 0
}

/** Encodes a segment; entries are sorted here and must name distinct CIDs. */
export function encodeSegment(packs: SegmentPack[], deps: string[], entries: SegmentEntry[]): Uint8Array {
  const sorted = [...entries].sort((x, y) => compareCid(x.cid, 0, y.cid, 0))
  const size = SEGMENT_HEADER_SIZE + packs.length * SEGMENT_PACK_SIZE + deps.length * 32 + sorted.length * SEGMENT_ENTRY_SIZE
  const b = Buffer.alloc(size)
  SEGMENT_MAGIC.copy(b, 0)
  b.writeUInt16LE(SEGMENT_VERSION, 8)
  b.writeUInt32LE(packs.length, 12)
  b.writeUInt32LE(deps.length, 16)
  b.writeUInt32LE(sorted.length, 20)
  let at = SEGMENT_HEADER_SIZE
  for (const p of packs) {
    if (!HASH_HEX.test(p.hash)) throw new TypeError(`bad pack hash ${p.hash}`)
    b.write(p.hash, at, 'hex')
    b.writeBigUInt64LE(BigInt(p.size), at + 32)
    at += SEGMENT_PACK_SIZE
  }
  for (const d of deps) {
    if (!HASH_HEX.test(d)) throw new TypeError(`bad segment hash ${d}`)
    b.write(d, at, 'hex')
    at += 32
  }
  for (let k = 0; k < sorted.length; k++) {
    const e = sorted[k]!
    if (k > 0 && compareCid(sorted[k - 1]!.cid, 0, e.cid, 0) === 0) throw new TypeError('a segment lists each CID once')
    if (e.pack >= packs.length) throw new TypeError('an entry names a pack the segment does not list')
    b.set(e.cid, at)
    b.writeUInt32LE(e.pack, at + 36)
    b.writeBigUInt64LE(BigInt(e.offset), at + 40)
    b.writeUInt32LE(e.storedLength, at + 48)
    b.writeUInt32LE(e.rawLength, at + 52)
    b[at + 56] = e.codec
    b[at + 57] = e.kind
    b[at + 58] = e.depth ?? 0
    b[at + 59] = e.flags ?? 0
    at += SEGMENT_ENTRY_SIZE
  }
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength)
}

/** Decodes a segment (its name, the hash of its bytes, is checked by the caller). */
export function decodeSegment(bytes: Uint8Array): Segment {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  if (b.length < SEGMENT_HEADER_SIZE || !b.subarray(0, 8).equals(SEGMENT_MAGIC)) throw bad('not a ckpt index segment (bad magic)')
  const version = b.readUInt16LE(8)
  if (version !== SEGMENT_VERSION) throw new CkptError('CKPT_VERSION', `index segment version ${version} is not supported`, { version })
  const np = b.readUInt32LE(12)
  const nd = b.readUInt32LE(16)
  const ne = b.readUInt32LE(20)
  const size = SEGMENT_HEADER_SIZE + np * SEGMENT_PACK_SIZE + nd * 32 + ne * SEGMENT_ENTRY_SIZE
  if (b.length !== size) throw bad(`index segment has ${b.length} bytes, its header says ${size}`)
  let at = SEGMENT_HEADER_SIZE
  const packs: SegmentPack[] = []
  for (let k = 0; k < np; k++, at += SEGMENT_PACK_SIZE) packs.push({ hash: b.toString('hex', at, at + 32), size: Number(b.readBigUInt64LE(at + 32)) })
  const deps: string[] = []
  for (let k = 0; k < nd; k++, at += 32) deps.push(b.toString('hex', at, at + 32))
  const entries = bytes.subarray(at)
  for (let k = 0; k < ne; k++) {
    const o = k * SEGMENT_ENTRY_SIZE
    if (entries[o + 36] === undefined || b.readUInt32LE(at + o + 36) >= np) throw bad('an index segment entry names a pack the segment does not list')
    if (k > 0 && compareCid(entries, o - SEGMENT_ENTRY_SIZE, entries, o) >= 0) throw bad('index segment entries are not sorted by CID')
  }
  return { packs, deps, entries, count: ne }
}

/** Entry k of a decoded segment. */
export function segmentEntry(s: Segment, k: number): SegmentEntry {
  const o = k * SEGMENT_ENTRY_SIZE
  const e = s.entries
  const b = Buffer.from(e.buffer, e.byteOffset + o, SEGMENT_ENTRY_SIZE)
  return {
    cid: e.subarray(o, o + CID_LENGTH),
    pack: b.readUInt32LE(36),
    offset: Number(b.readBigUInt64LE(40)),
    storedLength: b.readUInt32LE(48),
    rawLength: b.readUInt32LE(52),
    codec: b[56]!,
    kind: b[57]!,
    depth: b[58]!,
    flags: b[59]!,
  }
}

/** The position of `cid` in a segment's entries, or -1. */
export function findInSegment(s: Segment, cid: Uint8Array): number {
  let lo = 0
  let hi = s.count - 1
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1
    const d = compareCid(s.entries, mid * SEGMENT_ENTRY_SIZE, cid, 0)
    if (d === 0) return mid
    if (d < 0) lo = mid + 1
    else hi = mid - 1
  }
  return -1
}

/** A checkpoint in a catalog segment or claim: its vtime (decimal text) and CID (base32 text). */
export interface RemoteCheckpoint {
  vtime: string
  cid: string
}

/** cs/NAME/…: the checkpoints one push added to a timeline and the index segments needed to read them. */
export interface CatalogSegment {
  ckpt: 'remote-catalog'
  v: 1
  timeline: string
  checkpoints: RemoteCheckpoint[]
  indexes: string[]
  /** checkpoints removed from the timeline (thinning): not listed, and never pushed again */
  dropped?: RemoteCheckpoint[]
}

export function encodeJson(v: unknown): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(v))
}

/** Parses a JSON object of the remote; CKPT_BAD_REMOTE naming the key when it is not one. */
export function decodeJson(bytes: Uint8Array, key: string): Record<string, unknown> {
  let v: unknown
  try {
    v = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes))
  } catch (err) {
    throw bad(`remote object ${key} is not JSON: ${(err as Error).message}`, { key })
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad(`remote object ${key} is not a JSON object`, { key })
  return v as Record<string, unknown>
}

function isCheckpoint(c: unknown): boolean {
  return typeof c === 'object' && c !== null && typeof (c as RemoteCheckpoint).vtime === 'string' && /^\d{1,20}$/.test((c as RemoteCheckpoint).vtime) && typeof (c as RemoteCheckpoint).cid === 'string'
}

export function decodeCatalogSegment(bytes: Uint8Array, key: string): CatalogSegment {
  const v = decodeJson(bytes, key)
  const ok =
    v.ckpt === 'remote-catalog' &&
    v.v === 1 &&
    typeof v.timeline === 'string' &&
    Array.isArray(v.checkpoints) &&
    v.checkpoints.every(isCheckpoint) &&
    Array.isArray(v.indexes) &&
    v.indexes.every((h: unknown) => typeof h === 'string' && HASH_HEX.test(h)) &&
    (v.dropped === undefined || (Array.isArray(v.dropped) && v.dropped.every(isCheckpoint)))
  if (!ok) throw bad(`remote object ${key} is not a catalog segment`, { key })
  return v as unknown as CatalogSegment
}

export function decodeConfig(bytes: Uint8Array): RemoteConfig {
  const v = decodeJson(bytes, CONFIG_KEY)
  if (v.format !== REMOTE_FORMAT) throw bad(`${CONFIG_KEY} is not a ckpt remote's format object`)
  if (v.version !== REMOTE_VERSION) throw new CkptError('CKPT_VERSION', `remote format version ${String(v.version)} is not supported (this build reads ${REMOTE_VERSION})`, { version: v.version })
  if (typeof v.id !== 'string' || !/^[0-9a-f]{32}$/.test(v.id) || typeof v.created !== 'number') throw bad(`${CONFIG_KEY} lacks its id or creation time`)
  return v as unknown as RemoteConfig
}
