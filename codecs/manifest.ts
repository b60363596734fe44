/**
 * The checkpoint manifest: one dag-cbor block per checkpoint, the root an IPLD tool walks from.
 * Format version 1 (SPEC.md §Manifest):
 *   { v: 1, timeline: string, lineage: string (32 hex digits), vtime: uint64, wall: uint (ms since epoch),
 *     parent: CID | null,
 *     meta: { string: string },
 *     regions: { name: { size: uint, chunk: uint, fanout: uint, root: CID | null } },
 *     blobs:   { name: { size: uint, chunks: [[CID, uint], ...] } } }
 * Generic dag-cbor is fine here: one manifest per checkpoint, a few hundred bytes.
 */
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import { fromCID, toCID, type CidBytes } from './cid.js'
import { CkptError } from './errors.js'

export const MANIFEST_VERSION = 1
export const LINEAGE_RE = /^[0-9a-f]{32}$/

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

export function encodeManifest(m: Manifest): Uint8Array {
  const regions: Record<string, unknown> = {}
  for (const [name, r] of Object.entries(m.regions)) {
    regions[name] = { size: r.size, chunk: r.chunkSize, fanout: r.fanout, root: r.root ? toCID(r.root) : null }
  }
  const blobs: Record<string, unknown> = {}
  for (const [name, b] of Object.entries(m.blobs)) {
    blobs[name] = { size: b.size, chunks: b.chunks.map((c) => [toCID(c.cid), c.length]) }
  }
  return dagCbor.encode({
    v: MANIFEST_VERSION,
    timeline: m.timeline,
    lineage: m.lineage,
    vtime: m.vtime <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(m.vtime) : m.vtime,
    wall: m.wall,
    parent: m.parent ? toCID(m.parent) : null,
    meta: m.meta,
    regions,
    blobs,
  })
}

function bad(why: string): CkptError {
  return new CkptError('CKPT_BAD_MANIFEST', `bad manifest: ${why}`)
}

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x) && !(x instanceof Uint8Array) && CID.asCID(x) === null
}

function uint(x: unknown, what: string): number {
  if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0) throw bad(`${what} is not an unsigned integer`)
  return x
}

function cidOrNull(x: unknown, what: string): CidBytes | null {
  if (x === null) return null
  const c = CID.asCID(x)
  if (!c) throw bad(`${what} is not a CID`)
  try {
    return fromCID(c)
  } catch {
    throw bad(`${what} is not a BLAKE3 CIDv1`)
  }
}

export function decodeManifest(bytes: Uint8Array): Manifest {
  let o: unknown
  try {
    o = dagCbor.decode(bytes)
  } catch (err) {
    throw new CkptError('CKPT_BAD_MANIFEST', 'manifest is not valid dag-cbor', {}, err)
  }
  if (!isRecord(o)) throw bad('not a map')
  if (o.v !== MANIFEST_VERSION) throw new CkptError('CKPT_VERSION', `manifest version ${String(o.v)} is not supported`)
  if (typeof o.timeline !== 'string') throw bad('timeline is not a string')
  if (typeof o.lineage !== 'string' || !LINEAGE_RE.test(o.lineage)) throw bad('lineage is not 32 lowercase hex digits')
  let vtime: bigint
  if (typeof o.vtime === 'bigint' && o.vtime >= 0n) vtime = o.vtime
  else vtime = BigInt(uint(o.vtime, 'vtime'))
  const meta: Record<string, string> = {}
  if (!isRecord(o.meta)) throw bad('meta is not a map')
  for (const [k, v] of Object.entries(o.meta)) {
    if (typeof v !== 'string') throw bad(`meta.${k} is not a string`)
    meta[k] = v
  }
  if (!isRecord(o.regions)) throw bad('regions is not a map')
  const regions: Record<string, RegionRoot> = {}
  for (const [name, r] of Object.entries(o.regions)) {
    if (!isRecord(r)) throw bad(`region ${name} is not a map`)
    regions[name] = {
      size: uint(r.size, `region ${name} size`),
      chunkSize: uint(r.chunk, `region ${name} chunk`),
      fanout: uint(r.fanout, `region ${name} fanout`),
      root: cidOrNull(r.root, `region ${name} root`),
    }
  }
  if (!isRecord(o.blobs)) throw bad('blobs is not a map')
  const blobs: Record<string, BlobRoot> = {}
  for (const [name, b] of Object.entries(o.blobs)) {
    if (!isRecord(b) || !Array.isArray(b.chunks)) throw bad(`blob ${name} is malformed`)
    const chunks = b.chunks.map((c: unknown, i: number) => {
      if (!Array.isArray(c) || c.length !== 2) throw bad(`blob ${name} chunk ${i} is malformed`)
      const cid = cidOrNull(c[0], `blob ${name} chunk ${i}`)
      if (!cid) throw bad(`blob ${name} chunk ${i} has no CID`)
      return { cid, length: uint(c[1], `blob ${name} chunk ${i} length`) }
    })
    blobs[name] = { size: uint(b.size, `blob ${name} size`), chunks }
  }
  return {
    timeline: o.timeline,
    lineage: o.lineage,
    vtime,
    wall: uint(o.wall, 'wall'),
    parent: cidOrNull(o.parent, 'parent'),
    meta,
    regions,
    blobs,
  }
}
