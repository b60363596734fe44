/**
 * The catalog checked (verify's phase 2, SPEC.md §16.1): its raw entries must decode (timeline
 * records, checkpoint keys, refs), manifests no entry names are either recorded removals or
 * checkpoints a damaged index may have lost, and the catalog must be what the catalog records in
 * the packs give when replayed (SPEC.md §7.1).
 */
import { copyOf } from '../codecs/bytes.js'
import type { CatalogRecord, TimelineRecord } from '../codecs/catalog-record.js'
import { cidKey, cidToString, type CidBytes } from '../codecs/cid.js'
import { AT_REST, decompressBlock } from '../codecs/compress.js'
import { decodeManifest, type Manifest } from '../codecs/manifest.js'
import { catalogKvOps } from './catalog.js'
import type { Finding } from './findings.js'
import type { IndexTable } from './index-table.js'
import { allCheckpointsRange, checkpointKeyTimeline, checkpointKeyVtime, dec, manifestKey, manifestRange, refRange, removedKey, removedRange, timelineRange } from './keys.js'
import { MemoryKV } from './memory-kv.js'
import { replayPlan } from './rebuild.js'
import type { Repository } from './repository.js'

/** One checkpoint of the catalog, as the walk takes it. */
export interface CatalogItem {
  timeline: string
  vtime: bigint
  cid: CidBytes
}

/** What the catalog checks read (verify's state satisfies it). */
export interface CatalogCheckState {
  readonly repo: Repository
  readonly table: IndexTable
  /** at-rest payloads of dag-cbor entries by table index, from the pack check */
  readonly kept: Map<number, Uint8Array>
  /** catalog records found in the packs */
  readonly records: CatalogRecord[]
  indexFixable: boolean
  emit(f: Finding): Finding
}

/**
 * Every checkpoint the catalog lists, in key order (timeline, then vtime). With `report`, what does
 * not decode is a finding (a timeline record, a checkpoint key, a ref pointing nowhere), and so are
 * the manifests no entry names; the generator's return value is the list.
 */
export async function* readCatalog(s: CatalogCheckState, report: boolean): AsyncGenerator<Finding, CatalogItem[]> {
  const repo = s.repo
  const list: CatalogItem[] = []
  const impactOnly = !report
  const records = new Map<string, TimelineRecord>()
  for await (const [k, v] of repo.rawRange(timelineRange)) {
    const name = dec.decode(k.subarray(1))
    try {
      const rec = JSON.parse(dec.decode(v)) as TimelineRecord
      if (typeof rec !== 'object' || rec === null || rec.name !== name || typeof rec.regions !== 'object') throw new Error('malformed')
      records.set(name, rec)
    } catch {
      if (!impactOnly) yield s.emit({ phase: 'dag', kind: 'bad-catalog-entry', severity: 'error', message: `the record of timeline ${name} is unreadable (repair --rebuild-index cannot rebuild it; the timeline's checkpoints are still checked)` })
    }
  }
  const named = new Set<string>()
  for await (const [k, v] of repo.rawRange(allCheckpointsRange)) {
    const timeline = checkpointKeyTimeline(k)
    if (timeline === undefined || v.length !== 36) {
      if (!impactOnly) yield s.emit({ phase: 'dag', kind: 'bad-catalog-entry', severity: 'error', message: `catalog key ${Buffer.from(k).toString('hex').slice(0, 80)} is malformed or holds no CID` })
      continue
    }
    if (!records.has(timeline) && !named.has(timeline) && !impactOnly) {
      named.add(timeline)
      yield s.emit({ phase: 'dag', kind: 'bad-catalog-entry', severity: 'warning', message: `timeline ${timeline} has checkpoints but no timeline record` })
    }
    list.push({ timeline, vtime: checkpointKeyVtime(k), cid: copyOf(v) })
  }
  if (!impactOnly) {
    for await (const [k, v] of repo.rawRange(refRange)) {
      const name = dec.decode(k.subarray(1))
      if (v.length !== 36 || s.table.find(v) < 0) {
        yield s.emit({ phase: 'dag', kind: 'dangling-ref', severity: 'error', message: `ref ${name} points at ${v.length === 36 ? cidToString(v) : 'no CID'}, which is not in the store`, cid: v.length === 36 ? cidToString(v) : undefined })
      }
    }
    const listed = new Set(list.map((c) => cidKey(c.cid)))
    if (repo.format >= 2) yield* uncatalogued(s, listed)
    else yield* uncataloguedLegacy(s, listed)
  }
  return list
}

/**
 * A format-1 store has no removals recorded: manifests among the kept payloads that no entry names
 * are noted (a thinned recording leaves thousands until gc: the first few are named, the rest counted).
 */
function* uncataloguedLegacy(s: CatalogCheckState, listed: Set<string>): Generator<Finding> {
  // a thinned recording leaves thousands until gc: the first few are named, the rest counted
  let uncatalogued = 0
  for (const [i, payload] of s.kept) {
    if (s.table.codec[i] === AT_REST.nodeDelta || listed.has(cidKey(s.table.cid(i)))) continue
    let m: Manifest
    try {
      const raw = decompressBlock(s.table.codec[i]!, payload, s.table.raw[i]!)
      // a manifest is a CBOR map (major type 5); tree nodes are arrays, not worth decoding
      if (raw[0]! >> 5 !== 5) continue
      m = decodeManifest(raw)
    } catch {
      continue
    }
    const cid = cidToString(s.table.cid(i))
    if (++uncatalogued <= 3) yield s.emit({ phase: 'dag', kind: 'uncatalogued-checkpoint', severity: 'info', message: `checkpoint ${cid} (${m.timeline}@${m.vtime} by its manifest) is stored but not in the catalog: removed (ckpt gc reclaims it), or lost from a damaged index`, cid })
  }
  if (uncatalogued > 3) yield s.emit({ phase: 'dag', kind: 'uncatalogued-checkpoint', severity: 'info', message: `and ${uncatalogued - 3} more checkpoints stored but not in the catalog (removed or thinned: ckpt gc reclaims them)` })
}

/**
 * Manifests the index lists ('M') that no catalog entry names: removed ones ('x': gc collects them)
 * are counted in one note; the others may be checkpoints a lost catalog forgot (a warning, each
 * of the first three named).
 */
async function* uncatalogued(s: CatalogCheckState, listed: Set<string>): AsyncGenerator<Finding> {
  const repo = s.repo
  let removed = 0
  let lost = 0
  const pinned = new Set<string>()
  for await (const r of repo.refs()) pinned.add(cidKey(r.cid))
  for await (const [k] of repo.rawRange(manifestRange)) {
    const cid = copyOf(k, 1)
    if (listed.has(cidKey(cid))) continue
    if ((await repo.rawGet(removedKey(cid))) !== undefined) {
      removed++
      continue
    }
    // a ref may still name it: the catalog knows it
    if (pinned.has(cidKey(cid))) continue
    lost++
    if (lost > 3) continue
    let where = ''
    try {
      const m = decodeManifest(repo.blocks.get(cid))
      where = ` (${m.timeline}@${m.vtime} by its manifest)`
    } catch {}
    s.indexFixable = true
    yield s.emit({ phase: 'dag', kind: 'uncatalogued-checkpoint', severity: 'warning', message: `checkpoint ${cidToString(cid)}${where} is stored but in no timeline, and no removal of it is recorded: the catalog may have lost it (ckpt repair --rebuild-index --adopt catalogues it; ckpt rm CID removes it for good)`, cid: cidToString(cid) })
  }
  if (lost > 3) yield s.emit({ phase: 'dag', kind: 'uncatalogued-checkpoint', severity: 'warning', message: `and ${lost - 3} more checkpoints stored but in no timeline, with no removal recorded` })
  if (removed > 0) yield s.emit({ phase: 'dag', kind: 'uncatalogued-checkpoint', severity: 'info', message: `${removed} removed checkpoint${removed === 1 ? ' is' : 's are'} still stored (thinned or removed: ckpt gc reclaims ${removed === 1 ? 'it' : 'them'})` })
}

/**
 * The catalog against the records in the packs (SPEC.md §7.1): the records replayed from the
 * newest snapshot must give exactly the index's timelines, entries, checkpoint records, removals
 * and refs. A difference means the index and the packs disagree on what the store holds: rebuild.

/**
 * The catalog against the records in the packs (SPEC.md §7.1): the records replayed from the
 * newest snapshot must give exactly the index's timelines, entries, checkpoint records, removals
 * and refs. A difference means the index and the packs disagree on what the store holds: rebuild.
 */
export async function* checkCatalogAgainstRecords(s: CatalogCheckState): AsyncGenerator<Finding> {
  const repo = s.repo
  if (repo.format < 2 || s.records.length === 0) return
  const plan = replayPlan(s.records)
  const pos = repo.catalogPosition
  // holes between the records found, and the index's last commits whose records are gone
  const missing = plan.missing + (pos && pos.seq > plan.seq ? pos.seq - plan.seq : 0)
  if (missing > 0) {
    s.indexFixable = true
    yield s.emit({ phase: 'dag', kind: 'missing-record', severity: 'warning', message: `${missing} catalog record${missing === 1 ? '' : 's'} after the newest snapshot ${missing === 1 ? 'is' : 'are'} not in the packs (damage): the packs alone could not rebuild the catalog; ckpt repair writes it to the packs anew` })
  }
  const replayed = new MemoryKV()
  for (const r of plan.apply) await replayed.batch(await catalogKvOps(replayed, r.ops))
  const diffs: string[] = []
  let count = 0
  for (const [name, range] of [
    ['timeline', timelineRange],
    ['checkpoint', allCheckpointsRange],
    ['ref', refRange],
    ['removal', removedRange],
    ['checkpoint record', { gte: Uint8Array.of(0x6b), lt: Uint8Array.of(0x6c) }],
  ] as const) {
    const a = new Map<string, string>()
    for await (const [k, v] of repo.rawRange(range)) a.set(Buffer.from(k).toString('hex'), Buffer.from(v).toString('hex'))
    for await (const [k, v] of replayed.iterate(range)) {
      const key = Buffer.from(k).toString('hex')
      const have = a.get(key)
      a.delete(key)
      if (have === Buffer.from(v).toString('hex')) continue
      // the removal of a manifest gc has collected since: nothing to compare (a rebuild drops it too)
      if (have === undefined && k[0] === 0x78 && (await repo.rawGet(manifestKey(k.subarray(1)))) === undefined) continue
      count++
      if (diffs.length < 3) diffs.push(`${name} ${describeKey(k)} ${have === undefined ? 'is in the records, not in the index' : 'differs'}`)
    }
    for (const key of a.keys()) {
      count++
      if (diffs.length < 3) diffs.push(`${name} ${describeKey(Buffer.from(key, 'hex'))} is in the index, not in the records`)
    }
  }
  if (pos && plan.seq > pos.seq) {
    count++
    diffs.unshift(`the packs hold commit ${plan.seq}, the index ends at ${pos.seq}`)
  }
  if (count === 0) return
  s.indexFixable = true
  yield s.emit({ phase: 'dag', kind: 'catalog-mismatch', severity: 'warning', message: `the index's catalog and the catalog records in the packs differ in ${count} place${count === 1 ? '' : 's'}: ${diffs.slice(0, 3).join('; ')}` })
}

function describeKey(k: Uint8Array): string {
  try {
    if (k[0] === 0x63) return `${checkpointKeyTimeline(k)}@${checkpointKeyVtime(k)}`
    if (k[0] === 0x78 || k[0] === 0x6b) return cidToString(copyOf(k, 1))
    return JSON.stringify(dec.decode(k.subarray(1)))
  } catch {
    return Buffer.from(k).toString('hex').slice(0, 40)
  }
}

