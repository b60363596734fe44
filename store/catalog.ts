/**
 * The catalog in the index (SPEC.md §6, §7.1): timelines ('t'), checkpoint entries ('c') and records
 * ('k'), named refs ('r'), removed checkpoints not yet collected ('x'). It changes only through
 * CatalogOps, each commit's list also written as a catalog record in the packs: replaying the records
 * in seq order onto an empty catalog gives these very keys and values back.
 */
import { cidEquals, type CidBytes } from '../codecs/cid.js'
import { timelineJson, type CatalogOp } from '../codecs/catalog-record.js'
import { checkpointKey, checkpointKeyVtime, checkpointRecordKey, dec, enc, refKey, removedKey, removedRange, timelineKey, allCheckpointsRange, checkpointKeyTimeline, timelineRange, refRange, parseJson } from './keys.js'
import type { KV, KVOp } from './kv.js'

export type { CatalogOp } from '../codecs/catalog-record.js'

/** The part of a KV the catalog reads while it turns ops into index operations. */
export type KVReader = Pick<KV, 'get'>

const hex = (k: Uint8Array) => Buffer.from(k.buffer, k.byteOffset, k.byteLength).toString('latin1')

/**
 * Index operations for a list of catalog ops, applied in order on top of what `kv` holds (an op sees
 * the effect of the ones before it in the same list):
 *   timeline  put t(name) = its canonical JSON
 *   add       put c(t, v) = cid; put k(cid) = {t, v} unless k(cid) exists (a checkpoint keeps the
 *             record of where it was first catalogued); delete x(cid)
 *   drop      delete c(t, v) if it holds cid; delete k(cid) if it names (t, v); put x(cid) = {t, v}
 *   ref       put r(name) = cid, or delete it (cid null)
 */
export async function catalogKvOps(kv: KVReader, ops: readonly CatalogOp[]): Promise<KVOp[]> {
  const overlay = new Map<string, { key: Uint8Array; value: Uint8Array | undefined }>()
  const get = async (key: Uint8Array): Promise<Uint8Array | undefined> => {
    const o = overlay.get(hex(key))
    return o ? o.value : kv.get(key)
  }
  const put = (key: Uint8Array, value: Uint8Array) => overlay.set(hex(key), { key, value })
  const del = (key: Uint8Array) => overlay.set(hex(key), { key, value: undefined })
  for (const o of ops) {
    switch (o.op) {
      case 'timeline':
        put(timelineKey(o.record.name), enc.encode(timelineJson(o.record)))
        break
      case 'add': {
        put(checkpointKey(o.timeline, o.vtime), o.cid)
        const rk = checkpointRecordKey(o.cid)
        if ((await get(rk)) === undefined) put(rk, placeJson(o.timeline, o.vtime))
        const xk = removedKey(o.cid)
        if ((await get(xk)) !== undefined) del(xk)
        break
      }
      case 'drop': {
        const ck = checkpointKey(o.timeline, o.vtime)
        const at = await get(ck)
        if (at && cidEquals(at, o.cid)) del(ck)
        const rk = checkpointRecordKey(o.cid)
        const rec = await get(rk)
        if (rec && namesPlace(rec, o.timeline, o.vtime)) del(rk)
        put(removedKey(o.cid), placeJson(o.timeline, o.vtime))
        break
      }
      case 'ref':
        if (o.cid) put(refKey(o.name), o.cid)
        else del(refKey(o.name))
        break
    }
  }
  const out: KVOp[] = []
  for (const { key, value } of overlay.values()) out.push(value === undefined ? { type: 'del', key } : { type: 'put', key, value })
  return out
}

function placeJson(timeline: string, vtime: bigint): Uint8Array {
  return enc.encode(JSON.stringify({ timeline, vtime: vtime.toString() }))
}

function namesPlace(v: Uint8Array, timeline: string, vtime: bigint): boolean {
  try {
    const r = JSON.parse(dec.decode(v)) as { timeline?: unknown; vtime?: unknown }
    return r.timeline === timeline && r.vtime === vtime.toString()
  } catch {
    return false
  }
}

/**
 * The whole catalog as ops that rebuild it from nothing (a snapshot, SPEC.md §7.1): timelines; the
 * entries each checkpoint record names, then the other entries (so replay gives every CID the record
 * it has); removed checkpoints; refs. Entries that cannot be read (a malformed key or value) are
 * left out and counted.
 */
export async function catalogSnapshotOps(kv: KV): Promise<{ ops: CatalogOp[]; skipped: number }> {
  const ops: CatalogOp[] = []
  let skipped = 0
  for await (const [, v] of kv.iterate(timelineRange)) {
    try {
      ops.push({ op: 'timeline', record: parseJson(v) })
    } catch {
      skipped++
    }
  }
  const later: CatalogOp[] = []
  for await (const [k, v] of kv.iterate(allCheckpointsRange)) {
    const timeline = checkpointKeyTimeline(k)
    if (timeline === undefined || v.length !== 36) {
      skipped++
      continue
    }
    const vtime = checkpointKeyVtime(k)
    const cid = Uint8Array.prototype.slice.call(v) as CidBytes
    const rec = await kv.get(checkpointRecordKey(cid))
    const op: CatalogOp = { op: 'add', timeline, vtime, cid }
    if (rec && namesPlace(rec, timeline, vtime)) ops.push(op)
    else later.push(op)
  }
  ops.push(...later)
  for await (const [k, v] of kv.iterate(removedRange)) {
    try {
      const r = parseJson<{ timeline: string; vtime: string }>(v)
      ops.push({ op: 'drop', timeline: r.timeline, vtime: BigInt(r.vtime), cid: Uint8Array.prototype.slice.call(k, 1) as CidBytes })
    } catch {
      skipped++
    }
  }
  for await (const [k, v] of kv.iterate(refRange)) {
    if (v.length !== 36) {
      skipped++
      continue
    }
    ops.push({ op: 'ref', name: dec.decode(k.subarray(1)), cid: Uint8Array.prototype.slice.call(v) as CidBytes })
  }
  return { ops, skipped }
}


