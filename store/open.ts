/**
 * Opening a store directory, below the Repository object: the CKPT marker, whether an index that
 * opened can be used as it is (SPEC.md §7.2), and rebuilding it from the packs in place (by the next
 * writer) or explicitly (`repair --rebuild-index`, SPEC.md §16.2).
 */
import fs from 'node:fs'
import path from 'node:path'
import { type CatalogOp, type TimelineRecord } from '../codecs/catalog-record.js'
import { cidToString, parseCid as parseCidText, type CidBytes } from '../codecs/cid.js'
import { CkptError, errnoCode, fsError, isCkptError } from '../codecs/errors.js'
import type { Manifest } from '../codecs/manifest.js'
import { ENTRY_HEADER_SIZE } from '../codecs/pack-format.js'
import { decodeLocation, decodePackRecord, type PackRecord } from './block-store.js'
import { catalogKvOps, catalogSnapshotOps } from './catalog.js'
import { blockKey, dec, jsonValue, manifestRange, META_CATALOG, META_NEEDS_SNAPSHOT, META_REBUILDING, metaKey, packKeyNo, packRange, parseJson, timelineRange } from './keys.js'
import type { KV, KVOp } from './kv.js'
import { LevelKV } from './level-kv.js'
import { readHolder } from './lock.js'
import { replaceFileSync, syncDirectory } from './replace-file.js'
import { FilePackIO, type PackIO } from './pack-io.js'
import { adoptOps, keepFromOldCatalog, manifestOf, packHealth, rebuildFromPacks, type RebuildSummary } from './rebuild.js'

export const STORE_FORMAT = 'ckpt-store'
/**
 * the store format this build writes (2: catalog records in the packs; 3: node deltas may also be in
 * form 2, SPEC.md §3.2; 4: chunks may be stored as chunk deltas, at-rest codec 4, §5.1); 1 to 3 are
 * read, and upgraded by a writer
 */
export const STORE_VERSION = 4
export const STORE_VERSIONS: readonly number[] = [1, 2, 3, 4]

export interface CatalogMeta {
  seq: number
  snapshot: number
}

/** Reads (or, unless mustExist, creates) the CKPT marker; its format version must be one this build reads. */
export function openMarker(dir: string, mustExist: boolean): { version: number; created: boolean } {
  const marker = path.join(dir, 'CKPT')
  let created = false
  if (fs.existsSync(dir) && !fs.statSync(dir).isDirectory()) {
    throw new CkptError('CKPT_BAD_STORE', `${dir} is not a directory`, { dir })
  }
  if (!fs.existsSync(marker)) {
    if (mustExist) throw new CkptError('CKPT_BAD_STORE', `${dir} is not a ckpt store (no CKPT marker)`, { dir })
    if (fs.existsSync(dir) && fs.readdirSync(dir).length > 0) {
      throw new CkptError('CKPT_BAD_STORE', `${dir} exists, is not empty and is not a ckpt store`, { dir })
    }
    try {
      fs.mkdirSync(dir, { recursive: true })
      writeMarker(dir, STORE_VERSION)
    } catch (err) {
      throw fsError(err, `cannot create a store in ${dir}`, { dir })
    }
    created = true
  }
  let m: { format?: string; version?: number }
  try {
    m = JSON.parse(fs.readFileSync(marker, 'utf8'))
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code && code !== 'ENOENT' && errnoCode(err) !== 'CKPT_IO') throw fsError(err, `cannot read ${marker}`, { dir })
    throw new CkptError('CKPT_BAD_STORE', `${marker} is unreadable`, { dir }, err)
  }
  if (m.format !== STORE_FORMAT) throw new CkptError('CKPT_BAD_STORE', `${dir} is not a ckpt store`, { dir })
  if (typeof m.version !== 'number' || !STORE_VERSIONS.includes(m.version)) {
    throw new CkptError('CKPT_VERSION', `store format version ${m.version} is not supported (this build reads ${STORE_VERSIONS.join(' and ')})`, { dir })
  }
  return { version: m.version, created }
}

/** The marker, written whole or not at all (a crash must not leave an empty one). */
export function writeMarker(dir: string, version: number): void {
  const marker = path.join(dir, 'CKPT')
  replaceFileSync(marker, (tmp) => fs.writeFileSync(tmp, JSON.stringify({ format: STORE_FORMAT, version }) + '\n'), `${marker}.tmp-${process.pid}`)
}

export async function readCatalogMeta(kv: KV): Promise<CatalogMeta | undefined> {
  const v = await kv.get(metaKey(META_CATALOG))
  if (!v) return undefined
  const m = parseJson<{ seq?: unknown; snapshot?: unknown }>(v)
  if (typeof m.seq !== 'number' || typeof m.snapshot !== 'number') throw new CkptError('CKPT_BAD_INDEX', 'the index\'s catalog position is malformed', { state: 'corrupt' })
  return { seq: m.seq, snapshot: m.snapshot }
}

/**
 * Why an index that opened should not be used as it is (undefined: it is fine): a rebuild that did
 * not finish, no pack records while pack files exist (emptied or replaced), or packs holding
 * commits past the index's (restored from an old copy, a lost write).
 */
export async function indexProblem(kv: LevelKV, version: number, openPacks: () => PackIO): Promise<CkptError | undefined> {
  if ((await kv.get(metaKey(META_REBUILDING))) !== undefined) return new CkptError('CKPT_BAD_INDEX', 'a rebuild of the index did not finish', { state: 'rebuilding' })
  const records = new Map<number, PackRecord>()
  for await (const [k, v] of kv.iterate(packRange)) records.set(packKeyNo(k), decodePackRecord(v))
  const io = openPacks()
  try {
    const files = io.list()
    if (version < 2) {
      if (records.size === 0 && files.length > 0) return new CkptError('CKPT_BAD_INDEX', `the index lists no pack, but ${files.length} pack file${files.length === 1 ? ' is' : 's are'} there`, { state: 'empty' })
      return undefined
    }
    const meta = await readCatalogMeta(kv)
    const h = packHealth(io, records, meta?.seq ?? 0)
    if (h.stale) return new CkptError('CKPT_BAD_INDEX', `the index is behind the packs: ${h.stale}`, { state: 'stale' })
    // no catalog position or no pack record (a new store's index has both after its first commit):
    // fine while the pack files hold at most that first commit, which a crash interrupted
    const unknown = files.filter((n) => !records.has(n) && !h.leftovers.includes(n))
    if ((!meta && records.size > 0) || ((!meta || records.size === 0) && unknown.length > 0)) {
      return new CkptError('CKPT_BAD_INDEX', `the index ${!meta ? 'has no catalog position' : 'lists no pack'}, but ${files.length} pack file${files.length === 1 ? ' is' : 's are'} there`, { state: 'empty' })
    }
    return undefined
  } finally {
    io.close()
  }
}

export function describeState(state: string | undefined, problem: CkptError): string {
  switch (state) {
    case 'missing':
      return 'missing'
    case 'empty':
      return `empty (${problem.message})`
    case 'stale':
      return `behind the packs (${problem.message.replace(/^the index is behind the packs: /, '')})`
    case 'rebuilding':
      return 'half rebuilt'
    default:
      return problem.message
  }
}

/**
 * Rebuilds the index in place from the packs, under the index's own lock: a marker says a rebuild is
 * under way (a crash leaves it, and the next writer rebuilds again), everything else is cleared, the
 * packs are scanned and their catalog records replayed, the marker goes. `old` is the catalog the
 * index held before, when it could still be read: entries the records lack are kept from it (a store
 * of format 1 has no records at all: its catalog is then the old one, or else the manifests found in
 * the packs). Says in `needsSnapshot` whether the catalog now holds what no record does.
 */
export async function rebuildInPlace(
  kv: KV,
  openPacks: () => PackIO,
  version: number,
  opts: { onProgress?: (done: number, total: number) => void; old?: CatalogOp[] } = {},
): Promise<RebuildSummary & { needsSnapshot: boolean }> {
  await kv.batch([{ type: 'put', key: metaKey(META_REBUILDING), value: jsonValue({ pid: process.pid, since: new Date().toISOString() }) }], { sync: true })
  let ops: KVOp[] = []
  for await (const [k] of kv.iterate({})) {
    if (k[0] === 0x6d && dec.decode(k.subarray(1)) === META_REBUILDING) continue
    ops.push({ type: 'del', key: Uint8Array.prototype.slice.call(k) })
    if (ops.length >= 10_000) {
      await kv.batch(ops)
      ops = []
    }
  }
  await kv.batch(ops)
  const io = openPacks()
  let summary: RebuildSummary
  let needsSnapshot = false
  try {
    summary = await rebuildFromPacks(io, kv, opts)
    if (summary.legacy) {
      if (opts.old && opts.old.some((o) => o.op === 'add')) {
        await kv.batch(await catalogKvOps(kv, opts.old))
        summary.keptFromIndex = opts.old.length
      } else summary.adopted = await adoptManifests(kv, io)
      // the catalog starts its record stream here (a format-1 store is upgraded after the open)
      if (version >= 2) await kv.batch([{ type: 'put', key: metaKey(META_CATALOG), value: jsonValue({ seq: 0, snapshot: 0 }) }])
      needsSnapshot = version >= 2
    } else if (opts.old) {
      needsSnapshot = (await keepFromOldCatalog(kv, summary, opts.old)) > 0
    }
  } finally {
    io.close()
  }
  const done: KVOp[] = [{ type: 'del', key: metaKey(META_REBUILDING) }]
  if (needsSnapshot) done.push({ type: 'put', key: metaKey(META_NEEDS_SNAPSHOT), value: jsonValue(true) })
  await kv.batch(done, { sync: true })
  return { ...summary, needsSnapshot }
}

/** Pack files an older version set aside at open (packs/orphaned) go back where their number is free. */
function bringBackSetAside(packsDir: string): number {
  const orphanDir = path.join(packsDir, 'orphaned')
  let recovered = 0
  if (!fs.existsSync(orphanDir)) return 0
  for (const f of fs.readdirSync(orphanDir).sort()) {
    const m = /^(\d{8})\.pack\.\d+$/.exec(f)
    if (!m) continue
    const target = path.join(packsDir, `${m[1]}.pack`)
    if (fs.existsSync(target)) continue
    fs.renameSync(path.join(orphanDir, f), target)
    recovered++
  }
  if (fs.readdirSync(orphanDir).length === 0) fs.rmdirSync(orphanDir)
  return recovered
}

/** `repair --adopt`: the manifests no record covers, catalogued from their own fields. */
async function adoptUncovered(kv: KV, openPacks: () => PackIO, summary: RebuildSummary): Promise<number> {
  const io = openPacks()
  try {
    const adopted = await adoptCids(kv, io, summary.uncovered.map((u) => parseCidText(u.cid)))
    const done = new Set(adopted.map(cidToString))
    summary.adopted += adopted.length
    summary.uncovered = summary.uncovered.filter((u) => !done.has(u.cid))
    return adopted.length
  } finally {
    io.close()
  }
}

/**
 * A store without catalog records (format 1): its catalog from the manifests in the packs, each in
 * the timeline it names (two histories of one name: the second becomes NAME~LINEAGE8). Returns the
 * checkpoints catalogued.
 */
export async function adoptManifests(kv: KV, io: PackIO): Promise<number> {
  const cids: CidBytes[] = []
  for await (const [k] of kv.iterate(manifestRange)) cids.push(Uint8Array.prototype.slice.call(k, 1) as CidBytes)
  return (await adoptCids(kv, io, cids)).length
}

/** Catalogues these manifests (the ones that read back) by their own fields; returns their CIDs. */
async function adoptCids(kv: KV, io: PackIO, cids: CidBytes[]): Promise<CidBytes[]> {
  const list: { cid: CidBytes; m: Manifest }[] = []
  for (const cid of cids) {
    const v = kv.getSync(blockKey(cid))
    if (!v) continue
    const loc = decodeLocation(v)
    try {
      const m = manifestOf({ cid, codec: loc.codec, rawLength: loc.rawLength, payload: io.read(loc.pack, loc.offset + ENTRY_HEADER_SIZE, loc.storedLength) })
      if (m) list.push({ cid, m })
    } catch {}
  }
  // oldest first within a timeline, so a CID's checkpoint record names where it first was
  list.sort((a, b) => (a.m.timeline < b.m.timeline ? -1 : a.m.timeline > b.m.timeline ? 1 : a.m.vtime < b.m.vtime ? -1 : a.m.vtime > b.m.vtime ? 1 : 0))
  const existing = new Map<string, { lineage: string }>()
  for await (const [, v] of kv.iterate(timelineRange)) {
    try {
      const t = parseJson<TimelineRecord>(v)
      existing.set(t.name, { lineage: t.lineage })
    } catch {}
  }
  await kv.batch(await catalogKvOps(kv, adoptOps(list, (name) => existing.get(name))))
  return list.map((x) => x.cid)
}

/**
 * `repair --rebuild-index` (SPEC.md §16.2): the index rebuilt from the packs, explicitly. Packs an
 * older version set aside (packs/orphaned) come back first. An index LevelDB says is damaged is
 * repaired by LevelDB, else set aside (index.broken-<ms>) and recreated; one the OS will not let us
 * open (full disk, permissions, read-only) is an error, never set aside. `adopt`: checkpoints whose
 * manifests no catalog record covers are catalogued from their manifests.
 */
export async function rebuildIndex(
  dir: string,
  opts: { adopt?: boolean; onProgress?: (done: number, total: number) => void } = {},
): Promise<RebuildSummary & { recovered: number; setAside?: string; adoptedNow: number }> {
  const { version } = openMarker(dir, true)
  const indexDir = path.join(dir, 'index')
  const packsDir = path.join(dir, 'packs')
  const recovered = bringBackSetAside(packsDir)
  const openPacks = () => new FilePackIO(packsDir, true)
  let setAside: string | undefined
  const tryOpen = async (create: boolean): Promise<{ kv?: LevelKV; old?: CatalogOp[]; error?: CkptError }> => {
    let kv: LevelKV
    try {
      kv = await LevelKV.open(indexDir, { create })
    } catch (err) {
      if (!isCkptError(err)) throw err
      return { error: err }
    }
    // usable: every entry reads (LevelDB finds damaged blocks only when it reads them)
    try {
      for await (const _ of kv.iterate({})) {
        // reading is the test
      }
      return { kv, old: (await catalogSnapshotOps(kv)).ops }
    } catch (err) {
      await kv.close()
      if (!isCkptError(err)) throw err
      return { error: err }
    }
  }
  let got = await tryOpen(false)
  const stateOf = (e?: CkptError) => e?.details.state as string | undefined
  if (stateOf(got.error) === 'locked') {
    const h = readHolder(dir)
    throw new CkptError('CKPT_LOCKED', `store ${dir} is locked by ${h ? `process ${h.pid} on ${h.host}` : 'another process'}`, { dir, holder: h }, got.error)
  }
  // a full disk, a permission, a read-only medium: said as such, the index never set aside for it
  if (stateOf(got.error) === 'unavailable') throw got.error
  if (stateOf(got.error) === 'missing') got = await tryOpen(true)
  else if (got.error) {
    // damaged: LevelDB's own repair first, then a new index (the damaged one kept aside)
    try {
      await LevelKV.repair(indexDir)
    } catch {}
    got = await tryOpen(false)
    const st = stateOf(got.error)
    if (got.error && st !== 'unavailable' && st !== 'locked') {
      setAside = `${indexDir}.broken-${Date.now()}`
      try {
        fs.renameSync(indexDir, setAside)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw fsError(err, 'cannot set the damaged index aside', { dir })
        setAside = undefined
      }
      got = await tryOpen(true)
    }
  }
  if (got.error) throw got.error
  const held = got.kv!
  // the new index is built in a directory of its own, never over the old one's files: LevelDB reads
  // without checking its blocks' checksums, so damage it did not report (a flipped sequence number,
  // a key) could otherwise shadow what the rebuild writes. The old index stays whole and locked until
  // the new one is complete; a crash before the swap leaves it as it was (and index.new is redone).
  const freshDir = `${indexDir}.new`
  fs.rmSync(freshDir, { recursive: true, force: true })
  const kv = await LevelKV.open(freshDir, { create: true })
  let built = false
  try {
    const summary = await rebuildInPlace(kv, openPacks, version, { old: got.old, onProgress: opts.onProgress })
    let adoptedNow = 0
    if (opts.adopt && summary.uncovered.length > 0) {
      adoptedNow = await adoptUncovered(kv, openPacks, summary)
      if (adoptedNow > 0) summary.needsSnapshot = true
    }
    if (summary.needsSnapshot) await kv.batch([{ type: 'put', key: metaKey(META_NEEDS_SNAPSHOT), value: jsonValue(true) }], { sync: true })
    built = true
    return { ...summary, recovered, setAside, adoptedNow }
  } finally {
    await kv.close()
    try {
      if (built) swapIndex(indexDir, freshDir)
    } finally {
      await held.close()
      if (!built) fs.rmSync(freshDir, { recursive: true, force: true })
    }
  }
}

/** The rebuilt index (freshDir) takes the place of the old one, which is then deleted. */
function swapIndex(indexDir: string, freshDir: string): void {
  const old = `${indexDir}.old-${Date.now()}`
  try {
    fs.renameSync(indexDir, old)
    fs.renameSync(freshDir, indexDir)
    syncDirectory(path.dirname(indexDir))
  } catch (err) {
    throw fsError(err, 'cannot put the rebuilt index in place', { dir: indexDir })
  }
  fs.rmSync(old, { recursive: true, force: true })
}

/**
 * Opens a store's LevelDB index and finds out whether it can be used as it is: `problem` says why
 * not (its details.state: missing, empty, stale, rebuilding, corrupt, unavailable). A lock held by
 * another process is CKPT_LOCKED naming the holder.
 */
export async function openIndex(dir: string, version: number, created: boolean, readOnly: boolean, openPacks: () => PackIO): Promise<{ kv?: LevelKV; problem?: CkptError }> {
  const indexDir = path.join(dir, 'index')
  // the index: open it, and find out whether it can be used as it is
  let kv: LevelKV | undefined
  let problem: CkptError | undefined
  try {
    // LevelDB writes into the directory (a LOG) even when it then finds no database there: a reader
    // asks first, and touches nothing when there is none
    if (readOnly && !fs.existsSync(path.join(indexDir, 'CURRENT'))) throw new CkptError('CKPT_BAD_INDEX', `the index ${indexDir} is missing`, { dir: indexDir, state: 'missing' })
    kv = await LevelKV.open(indexDir, { create: created })
  } catch (err) {
    if (!isCkptError(err)) throw err
    if (err.code === 'CKPT_LOCKED') {
      const h = readHolder(dir)
      const who = h ? `process ${h.pid} on ${h.host} (since ${h.since})` : 'another process'
      throw new CkptError('CKPT_LOCKED', `store ${dir} is locked by ${who}`, { dir, holder: h }, err)
    }
    problem = err
  }
  if (kv && !created) {
    try {
      problem = await indexProblem(kv, version, openPacks)
    } catch (err) {
      await kv.close()
      kv = undefined
      if (!isCkptError(err)) throw err
      // the index opened but does not read as an index (malformed values, LevelDB finding damage)
      problem = err.details.state === undefined ? new CkptError(err.code === 'CKPT_BAD_INDEX' ? 'CKPT_BAD_INDEX' : err.code, err.message, { ...err.details, state: err.code === 'CKPT_BAD_INDEX' ? 'corrupt' : 'unavailable' }, err) : err
    }
  }
  return { kv, problem }
}
