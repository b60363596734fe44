/**
 * Catalog records (SPEC.md §7.1): the catalog change of one commit, written as the last entry of that
 * commit in the pack stream (entry kind 2), so the packs alone say which checkpoints, timelines and
 * refs a store holds. A record is a dag-cbor map; its entry's CID is the BLAKE3 dag-cbor CID of these
 * bytes (a record is not a block: nothing links it and the index does not list it).
 *
 *   { "ckpt": "catalog", "v": 1, "seq": uint, "at": uint (ms since the epoch),
 *     "ops": [ op, ... ],
 *     "snapshot": { "part": uint, "parts": uint } }      only in the parts of a snapshot
 *
 *   op := { "op": "timeline", "name", "lineage", "regions": { NAME: { "size", "chunk" } }, "created",
 *           "policy"?: string, "forkedFrom"?: { "timeline", "vtime", "cid": CID } }
 *       | { "op": "add",  "timeline", "vtime", "cid": CID }   a checkpoint made visible
 *       | { "op": "drop", "timeline", "vtime", "cid": CID }   a checkpoint removed (thin, rm, repair)
 *       | { "op": "ref",  "name", "cid": CID | null }        a named ref set, or deleted (null)
 *
 * `seq` increases by one with every commit of the store. A snapshot (every part has the same seq)
 * replaces the whole catalog: part 0 starts from an empty one.
 */
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import { fromCID, toCID, type CidBytes } from './cid.js'
import { CkptError } from './errors.js'

export const RECORD_VERSION = 1

export interface RegionSpec {
  size: number
  chunkSize: number
}

/** A timeline's record in the catalog (index key family 't', SPEC.md §6). */
export interface TimelineRecord {
  name: string
  /** 32 hex digits, random at creation; manifests carry it (see Manifest.lineage) */
  lineage: string
  regions: Record<string, RegionSpec>
  /** ms since the epoch */
  created: number
  /** set when the timeline was forked from a checkpoint of another */
  forkedFrom?: { timeline: string; vtime: string; cid: string }
  /** retention policy applied after each checkpoint (SPEC.md §13), normalised text */
  policy?: string
}

export type CatalogOp =
  | { op: 'timeline'; record: TimelineRecord }
  | { op: 'add'; timeline: string; vtime: bigint; cid: CidBytes }
  | { op: 'drop'; timeline: string; vtime: bigint; cid: CidBytes }
  | { op: 'ref'; name: string; cid: CidBytes | null }

export interface CatalogRecord {
  seq: number
  /** ms since the epoch, when written */
  at: number
  ops: CatalogOp[]
  snapshot?: { part: number; parts: number }
}

/**
 * A timeline record's canonical JSON (the 't' value): keys in one fixed order and regions sorted, so
 * a catalog rebuilt from records holds the very bytes the original did.
 */
export function timelineJson(r: TimelineRecord): string {
  const regions: Record<string, RegionSpec> = {}
  for (const k of Object.keys(r.regions).sort()) regions[k] = { size: r.regions[k]!.size, chunkSize: r.regions[k]!.chunkSize }
  const o: Record<string, unknown> = { name: r.name, lineage: r.lineage, regions, created: r.created }
  if (r.policy !== undefined) o.policy = r.policy
  if (r.forkedFrom !== undefined) o.forkedFrom = { timeline: r.forkedFrom.timeline, vtime: r.forkedFrom.vtime, cid: r.forkedFrom.cid }
  return JSON.stringify(o)
}

const u64 = (v: bigint): number | bigint => (v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v)

function encodeOp(o: CatalogOp): unknown {
  switch (o.op) {
    case 'timeline': {
      const r = o.record
      const regions: Record<string, unknown> = {}
      for (const [k, v] of Object.entries(r.regions)) regions[k] = { size: v.size, chunk: v.chunkSize }
      const out: Record<string, unknown> = { op: 'timeline', name: r.name, lineage: r.lineage, regions, created: r.created }
      if (r.policy !== undefined) out.policy = r.policy
      if (r.forkedFrom !== undefined) out.forkedFrom = { timeline: r.forkedFrom.timeline, vtime: u64(BigInt(r.forkedFrom.vtime)), cid: CID.parse(r.forkedFrom.cid) }
      return out
    }
    case 'add':
    case 'drop':
      return { op: o.op, timeline: o.timeline, vtime: u64(o.vtime), cid: toCID(o.cid) }
    case 'ref':
      return { op: 'ref', name: o.name, cid: o.cid ? toCID(o.cid) : null }
    default:
      throw new TypeError(`not a catalog op: ${JSON.stringify(o)}`)
  }
}

export function encodeRecord(r: CatalogRecord): Uint8Array {
  const o: Record<string, unknown> = { ckpt: 'catalog', v: RECORD_VERSION, seq: r.seq, at: r.at, ops: r.ops.map(encodeOp) }
  if (r.snapshot) o.snapshot = { part: r.snapshot.part, parts: r.snapshot.parts }
  return dagCbor.encode(o)
}

function bad(why: string): CkptError {
  return new CkptError('CKPT_BAD_PACK', `bad catalog record: ${why}`)
}

function isMap(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x) && !(x instanceof Uint8Array) && CID.asCID(x) === null
}

function str(x: unknown, what: string): string {
  if (typeof x !== 'string') throw bad(`${what} is not a string`)
  return x
}

function uint(x: unknown, what: string): number {
  if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0) throw bad(`${what} is not an unsigned integer`)
  return x
}

function u64of(x: unknown, what: string): bigint {
  if (typeof x === 'bigint' && x >= 0n && x < 1n << 64n) return x
  return BigInt(uint(x, what))
}

function cid(x: unknown, what: string): CidBytes {
  const c = CID.asCID(x)
  if (!c) throw bad(`${what} is not a CID`)
  try {
    return fromCID(c)
  } catch {
    throw bad(`${what} is not a BLAKE3 CIDv1`)
  }
}

function decodeOp(x: unknown, i: number): CatalogOp {
  if (!isMap(x)) throw bad(`op ${i} is not a map`)
  switch (x.op) {
    case 'timeline': {
      if (!isMap(x.regions)) throw bad(`op ${i}: regions is not a map`)
      const regions: Record<string, RegionSpec> = {}
      for (const [k, v] of Object.entries(x.regions)) {
        if (!isMap(v)) throw bad(`op ${i}: region ${k} is not a map`)
        regions[k] = { size: uint(v.size, `region ${k} size`), chunkSize: uint(v.chunk, `region ${k} chunk`) }
      }
      const record: TimelineRecord = { name: str(x.name, 'name'), lineage: str(x.lineage, 'lineage'), regions, created: uint(x.created, 'created') }
      if (x.policy !== undefined) record.policy = str(x.policy, 'policy')
      if (x.forkedFrom !== undefined) {
        const f = x.forkedFrom
        if (!isMap(f)) throw bad(`op ${i}: forkedFrom is not a map`)
        record.forkedFrom = { timeline: str(f.timeline, 'forkedFrom.timeline'), vtime: u64of(f.vtime, 'forkedFrom.vtime').toString(), cid: toCID(cid(f.cid, 'forkedFrom.cid')).toString() }
      }
      return { op: 'timeline', record }
    }
    case 'add':
    case 'drop':
      return { op: x.op, timeline: str(x.timeline, 'timeline'), vtime: u64of(x.vtime, 'vtime'), cid: cid(x.cid, 'cid') }
    case 'ref':
      return { op: 'ref', name: str(x.name, 'name'), cid: x.cid === null ? null : cid(x.cid, 'cid') }
    default:
      throw new CkptError('CKPT_VERSION', `catalog record op ${JSON.stringify(String(x.op))} is not known to this version`)
  }
}

/** A catalog record from its dag-cbor bytes (CKPT_BAD_PACK if it is not one; CKPT_VERSION if of a later version). */
export function decodeRecord(bytes: Uint8Array): CatalogRecord {
  let o: unknown
  try {
    o = dagCbor.decode(bytes)
  } catch (err) {
    throw new CkptError('CKPT_BAD_PACK', 'a catalog record is not valid dag-cbor', {}, err)
  }
  if (!isMap(o) || o.ckpt !== 'catalog') throw bad('not a ckpt catalog record')
  if (o.v !== RECORD_VERSION) throw new CkptError('CKPT_VERSION', `catalog record version ${String(o.v)} is not supported`)
  if (!Array.isArray(o.ops)) throw bad('ops is not an array')
  const r: CatalogRecord = { seq: uint(o.seq, 'seq'), at: uint(o.at, 'at'), ops: o.ops.map(decodeOp) }
  if (o.snapshot !== undefined) {
    const s = o.snapshot
    if (!isMap(s)) throw bad('snapshot is not a map')
    const part = uint(s.part, 'snapshot part')
    const parts = uint(s.parts, 'snapshot parts')
    if (parts < 1 || part >= parts) throw bad('snapshot part out of range')
    r.snapshot = { part, parts }
  }
  return r
}
