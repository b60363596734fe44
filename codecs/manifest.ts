/**
 * The checkpoint manifest: one dag-cbor block per checkpoint, the root an IPLD tool walks from.
 * Format version 2 (SPEC.md §3.3), what ckpt writes:
 *   { v: 2, timeline: string, lineage: string (32 hex digits), vtime: uint64, wall: uint (ms since epoch),
 *     parentCid: bytes (a CID's 36 bytes) | null,
 *     meta: { string: string },
 *     regions: { name: { size: uint, chunk: uint, fanout: uint, root: CID | null } },
 *     blobs:   { name: { size: uint, chunks: [[CID, uint], ...] } } }
 * Version 1, still read (stores and bundles written before version 2), is the same map with
 * `parent: CID | null` (a link, tag 42) in place of `parentCid`. Version 2 keeps the history as the
 * parent CID's bytes — a byte string, not a link — so an IPLD walker (a pin, a dag export) reaches
 * only the checkpoint's own blocks: a checkpoint is a complete DAG on its own.
 * Generic dag-cbor is fine here: one manifest per checkpoint, a few hundred bytes.
 *
 * decodeManifest is the one judge of a manifest: import, verify, show, log, restore all decode through
 * it, so they all give the same verdict (CKPT_BAD_MANIFEST with the reason in the message and in
 * details.reason). It checks every constraint of SPEC.md §3.3 — names by the rule of codecs/names.ts,
 * numbers in range, CIDs of the right kind, exactly the listed fields — so whatever it returns is safe
 * to use: a Geometry can be built from every region, a Date from `wall`, a file name from a region or
 * blob name. Both versions decode to the same Manifest (the parent as CID bytes). encodeManifest
 * refuses (CKPT_BAD_ARGUMENT) to write a manifest the decoder would refuse.
 */
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import { CID_LENGTH, DAG_CBOR, fromCID, RAW, toCID, type CidBytes } from './cid.js'
import { CkptError } from './errors.js'
import { nameProblem, quoteName } from './names.js'

/** the manifest version ckpt writes */
export const MANIFEST_VERSION = 2
/** the manifest versions ckpt reads: 1 (`parent`, a link) and 2 (`parentCid`, the parent's CID as bytes) */
export type ManifestVersion = 1 | 2
export const LINEAGE_RE = /^[0-9a-f]{32}$/
/** vtime is an unsigned 64-bit integer */
export const MAX_MANIFEST_VTIME = 0xffffffffffffffffn
/** wall is ms since the epoch, at most what `new Date()` accepts (8.64e15 ms, year 275760) */
export const MAX_WALL = 8.64e15
/** a meta key is at most this many bytes (UTF-8) */
export const MAX_META_KEY = 256
/** a meta value is at most this many bytes (UTF-8) */
export const MAX_META_VALUE = 64 << 10
export const MIN_CHUNK_SIZE = 512
export const MAX_CHUNK_SIZE = 1 << 20
export const MIN_FANOUT = 2
/** a tree node holds at most 65,536 slots */
export const MAX_FANOUT = 65536
/** a blob chunk is one block: at most 16 MiB */
export const MAX_BLOB_CHUNK = 16 << 20

export interface RegionRoot {
  size: number
  chunkSize: number
  fanout: number
  root: CidBytes | null
}

export interface BlobRoot {
  size: number
  chunks: { cid: CidBytes; length: number }[]
}

export interface Manifest {
  timeline: string
  /**
   * The timeline's lineage: 128 random bits (32 lowercase hex digits) drawn when the timeline was
   * created (a fork draws its own). Two timelines of one name are one history only if they share it.
   */
  lineage: string
  vtime: bigint
  wall: number
  parent: CidBytes | null
  meta: Record<string, string>
  regions: Record<string, RegionRoot>
  blobs: Record<string, BlobRoot>
}

/** the top-level keys of each version: version 2 has `parentCid` (bytes) where version 1 has `parent` (a link) */
const TOP_KEYS: Record<ManifestVersion, string[]> = {
  1: ['blobs', 'lineage', 'meta', 'parent', 'regions', 'timeline', 'v', 'vtime', 'wall'],
  2: ['blobs', 'lineage', 'meta', 'parentCid', 'regions', 'timeline', 'v', 'vtime', 'wall'],
}
const REGION_KEYS = ['chunk', 'fanout', 'root', 'size']
const BLOB_KEYS = ['chunks', 'size']

/**
 * The manifest's dag-cbor bytes, in version 2 (what ckpt writes). `version` 1 writes the old form (the
 * parent as a link); only tests and fixtures ask for it.
 */
export function encodeManifest(m: Manifest, version: ManifestVersion = MANIFEST_VERSION): Uint8Array {
  const problem = manifestProblem(m)
  if (problem !== undefined) throw new CkptError('CKPT_BAD_ARGUMENT', `refusing to write an invalid manifest: ${problem}`, { reason: problem })
  if (version !== 1 && version !== 2) throw new CkptError('CKPT_BAD_ARGUMENT', `manifest version ${String(version)} cannot be written`)
  const regions: Record<string, unknown> = {}
  for (const [name, r] of Object.entries(m.regions)) {
    regions[name] = { size: r.size, chunk: r.chunkSize, fanout: r.fanout, root: r.root ? toCID(r.root) : null }
  }
  const blobs: Record<string, unknown> = {}
  for (const [name, b] of Object.entries(m.blobs)) {
    blobs[name] = { size: b.size, chunks: b.chunks.map((c) => [toCID(c.cid), c.length]) }
  }
  // the parent: version 2 its CID's bytes (a byte string generic walkers do not follow), version 1 a link
  const parent = version === 1 ? { parent: m.parent ? toCID(m.parent) : null } : { parentCid: m.parent ? Uint8Array.from(m.parent) : null }
  return dagCbor.encode({
    v: version,
    timeline: m.timeline,
    lineage: m.lineage,
    vtime: m.vtime <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(m.vtime) : m.vtime,
    wall: m.wall,
    ...parent,
    meta: m.meta,
    regions,
    blobs,
  })
}

function bad(why: string): CkptError {
  return new CkptError('CKPT_BAD_MANIFEST', `bad manifest: ${why}`, { reason: why })
}

function utf8Length(s: string): number {
  return Buffer.byteLength(s, 'utf8')
}

function isPlainMap(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x) && !(x instanceof Uint8Array) && CID.asCID(x) === null
}

/** A decoded CBOR map with exactly `keys` (a `__proto__` key would hide in the prototype: refused). */
function map(x: unknown, what: string, keys?: string[]): Record<string, unknown> {
  if (!isPlainMap(x)) throw bad(`${what} is not a map`)
  if (Object.getPrototypeOf(x) !== Object.prototype) throw bad(`${what} has a "__proto__" key`)
  if (keys) {
    for (const k of Object.keys(x)) if (!keys.includes(k)) throw bad(`${what} has an unknown field ${quoteName(k)}`)
    for (const k of keys) if (!Object.hasOwn(x, k)) throw bad(`${what} lacks the field ${k}`)
  }
  return x
}

function num(x: unknown, what: string): number {
  if (typeof x === 'bigint') throw bad(`${what} ${x} is out of range`)
  if (typeof x !== 'number' || !Number.isSafeInteger(x)) throw bad(`${what} is not an integer (${describe(x)})`)
  return x
}

function describe(x: unknown): string {
  if (typeof x === 'bigint') return `${x}`
  if (typeof x === 'number') return String(x)
  if (typeof x === 'string') return `the string ${quoteName(x, 40)}`
  if (x === null) return 'null'
  if (Array.isArray(x)) return 'an array'
  if (x instanceof Uint8Array) return 'bytes'
  if (CID.asCID(x)) return 'a CID'
  return typeof x
}

function cidOrNull(x: unknown, what: string): CidBytes | null {
  if (x === null) return null
  const c = CID.asCID(x)
  if (!c) throw bad(`${what} is not a CID (${describe(x)})`)
  try {
    return fromCID(c)
  } catch {
    throw bad(`${what} is not a CIDv1 raw/dag-cbor BLAKE3-256`)
  }
}

/** Version 2's parentCid: null, or the 36 bytes of a CIDv1 dag-cbor BLAKE3-256 (a byte string, not a link). */
function cidBytesOrNull(x: unknown, what: string): CidBytes | null {
  if (x === null) return null
  if (!(x instanceof Uint8Array)) throw bad(`${what} is not a byte string (${describe(x)})`)
  if (!isCid(x, DAG_CBOR)) throw bad(`${what} is not the ${CID_LENGTH} bytes of a CIDv1 dag-cbor BLAKE3-256`)
  return Uint8Array.from(x)
}

/** "\x69__proto__": the CBOR text string `__proto__` (the only key cborg's plain objects can hide). */
const PROTO_KEY = Buffer.from([0x69, ...Buffer.from('__proto__')])

export function decodeManifest(bytes: Uint8Array): Manifest {
  let o: unknown
  try {
    o = dagCbor.decode(bytes)
  } catch (err) {
    throw new CkptError('CKPT_BAD_MANIFEST', `manifest is not valid dag-cbor: ${(err as Error).message}`, { reason: 'not valid dag-cbor' }, err)
  }
  if (!isPlainMap(o)) throw bad('not a map')
  if (!Object.hasOwn(o, 'v')) throw bad('the manifest lacks the field v')
  if (o.v !== 1 && o.v !== 2) throw new CkptError('CKPT_VERSION', `manifest version ${describe(o.v)} is not supported`)
  const version: ManifestVersion = o.v
  const top = map(o, 'the manifest', TOP_KEYS[version])
  // a "__proto__" key with a string or number value vanishes on decoding: the bytes would say more
  // than the decoded manifest. Rare in honest bytes (a meta text holding it): then compare exactly.
  if (Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).indexOf(PROTO_KEY) >= 0) {
    const again = dagCbor.encode(o)
    if (again.length !== bytes.length || !Buffer.from(again).equals(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength))) throw bad('a map holds a "__proto__" key')
  }
  if (typeof top.timeline !== 'string') throw bad(`timeline is not a string (${describe(top.timeline)})`)
  if (typeof top.lineage !== 'string') throw bad(`lineage is not a string (${describe(top.lineage)})`)
  let vtime: bigint
  if (typeof top.vtime === 'bigint') vtime = top.vtime
  else vtime = BigInt(num(top.vtime, 'vtime'))
  if (typeof top.wall !== 'number') throw bad(`wall is not a number (${describe(top.wall)})`)
  // null-prototype maps: a lookup by a caller's name (`regions[name]`) never finds `toString` & co.
  const meta: Record<string, string> = Object.create(null)
  for (const [k, v] of Object.entries(map(top.meta, 'meta'))) {
    if (typeof v !== 'string') throw bad(`meta ${quoteName(k, 40)} is not a string (${describe(v)})`)
    meta[k] = v
  }
  const regions: Record<string, RegionRoot> = Object.create(null)
  for (const [name, r] of Object.entries(map(top.regions, 'regions'))) {
    const what = `region ${quoteName(name, 40)}`
    const e = map(r, what, REGION_KEYS)
    regions[name] = {
      size: num(e.size, `${what} size`),
      chunkSize: num(e.chunk, `${what} chunk`),
      fanout: num(e.fanout, `${what} fanout`),
      root: cidOrNull(e.root, `${what} root`),
    }
  }
  const blobs: Record<string, BlobRoot> = Object.create(null)
  for (const [name, b] of Object.entries(map(top.blobs, 'blobs'))) {
    const what = `blob ${quoteName(name, 40)}`
    const e = map(b, what, BLOB_KEYS)
    if (!Array.isArray(e.chunks)) throw bad(`${what} chunks is not an array (${describe(e.chunks)})`)
    const chunks = e.chunks.map((c: unknown, i: number) => {
      if (!Array.isArray(c) || c.length !== 2) throw bad(`${what} chunk ${i} is not a [CID, length] pair`)
      const cid = cidOrNull(c[0], `${what} chunk ${i}`)
      if (!cid) throw bad(`${what} chunk ${i} has no CID`)
      return { cid, length: num(c[1], `${what} chunk ${i} length`) }
    })
    blobs[name] = { size: num(e.size, `${what} size`), chunks }
  }
  const m: Manifest = {
    timeline: top.timeline,
    lineage: top.lineage,
    vtime,
    wall: top.wall,
    parent: version === 1 ? cidOrNull(top.parent, 'parent') : cidBytesOrNull(top.parentCid, 'parentCid'),
    meta,
    regions,
    blobs,
  }
  const problem = manifestProblem(m)
  if (problem !== undefined) throw bad(problem)
  return m
}

function isCid(x: unknown, codec: number): boolean {
  return x instanceof Uint8Array && x.length === CID_LENGTH && x[0] === 0x01 && x[1] === codec && x[2] === 0x1e && x[3] === 0x20
}

/** Why a region of this shape cannot exist (SPEC.md §3.3), or undefined. */
export function regionShapeProblem(size: unknown, chunkSize: unknown, fanout: unknown): string | undefined {
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 1) return `size ${String(size)} is not an integer from 1 to 2^53-1`
  if (typeof chunkSize !== 'number' || !Number.isInteger(chunkSize) || chunkSize < MIN_CHUNK_SIZE || chunkSize > MAX_CHUNK_SIZE || (chunkSize & (chunkSize - 1)) !== 0) {
    return `chunk size ${String(chunkSize)} is not a power of two from 512 B to 1 MiB`
  }
  if (typeof fanout !== 'number' || !Number.isInteger(fanout) || fanout < MIN_FANOUT || fanout > MAX_FANOUT) return `fan-out ${String(fanout)} is not an integer from 2 to 65536`
  return undefined
}

/** Why these meta labels cannot be stored (keys at most 256 bytes, values strings of at most 64 KiB), or undefined. */
export function metaProblem(meta: unknown): string | undefined {
  if (!isPlainMap(meta)) return 'meta is not a map of strings'
  for (const [k, v] of Object.entries(meta)) {
    if (utf8Length(k) > MAX_META_KEY) return `meta key ${quoteName(k, 40)} is longer than ${MAX_META_KEY} bytes`
    if (typeof v !== 'string') return `meta ${quoteName(k, 40)} is not a string`
    if (v.length > MAX_META_VALUE || utf8Length(v) > MAX_META_VALUE) return `meta ${quoteName(k, 40)} is longer than ${MAX_META_VALUE} bytes`
  }
  return undefined
}

/**
 * Why a manifest (decoded form) breaks a constraint of SPEC.md §3.3, or undefined: the one list of
 * rules both decodeManifest and encodeManifest apply.
 */
export function manifestProblem(m: Manifest): string | undefined {
  const tp = nameProblem('timeline', m.timeline)
  if (tp !== undefined) return `timeline name ${quoteName(m.timeline)} ${tp}`
  if (typeof m.lineage !== 'string' || !LINEAGE_RE.test(m.lineage)) return `lineage ${quoteName(m.lineage, 40)} is not 32 lowercase hex digits`
  if (typeof m.vtime !== 'bigint' || m.vtime < 0n || m.vtime > MAX_MANIFEST_VTIME) return `vtime ${String(m.vtime)} is not in [0, 2^64)`
  if (typeof m.wall !== 'number' || !Number.isInteger(m.wall) || m.wall < 0 || m.wall > MAX_WALL) return `wall ${String(m.wall)} is not an integer from 0 to 8.64e15 (ms since the epoch)`
  if (m.parent !== null && !isCid(m.parent, DAG_CBOR)) return 'parent is not a dag-cbor CID'
  const mp = metaProblem(m.meta)
  if (mp !== undefined) return mp
  if (!isPlainMap(m.regions)) return 'regions is not a map'
  for (const [name, r] of Object.entries(m.regions)) {
    const np = nameProblem('region', name)
    if (np !== undefined) return `region name ${quoteName(name)} ${np}`
    const sp = regionShapeProblem(r.size, r.chunkSize, r.fanout)
    if (sp !== undefined) return `region ${name}: ${sp}`
    if (r.root !== null && !isCid(r.root, DAG_CBOR)) return `region ${name}: root is not a dag-cbor CID`
  }
  if (!isPlainMap(m.blobs)) return 'blobs is not a map'
  for (const [name, b] of Object.entries(m.blobs)) {
    const np = nameProblem('blob', name)
    if (np !== undefined) return `blob name ${quoteName(name)} ${np}`
    if (typeof b.size !== 'number' || !Number.isSafeInteger(b.size) || b.size < 0) return `blob ${name}: size ${String(b.size)} is not an integer from 0 to 2^53-1`
    if (!Array.isArray(b.chunks)) return `blob ${name}: chunks is not an array`
    let total = 0
    for (let i = 0; i < b.chunks.length; i++) {
      const c = b.chunks[i]!
      if (!isCid(c.cid, RAW)) return `blob ${name}: chunk ${i} is not a raw CID`
      if (typeof c.length !== 'number' || !Number.isInteger(c.length) || c.length < 1 || c.length > MAX_BLOB_CHUNK) return `blob ${name}: chunk ${i} has length ${String(c.length)} (1 B to 16 MiB)`
      total += c.length
    }
    if (total !== b.size) return `blob ${name}: its chunks add up to ${total} bytes, its size says ${b.size}`
  }
  return undefined
}
