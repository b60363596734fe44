/**
 * repairStore: healing a damaged store (SPEC.md §12.2). Three explicit remedies, applied in this
 * order when several are asked for:
 *
 *   rebuildIndex  the index is rebuilt from the self-describing packs: every intact entry (its
 *                 checksum holds) is indexed where it is; entries the index placed where no intact
 *                 copy is are re-pointed or removed; pack records are rewritten; packs set aside at
 *                 open come back. An index LevelDB that will not open is repaired by LevelDB, or
 *                 replaced, and then the catalog too is rebuilt from the manifests in the packs.
 *   from          blocks that are damaged or missing are fetched by CID from another store or a
 *                 bundle, verified against their CID, and written anew (the index points at the new
 *                 copy; the damaged bytes stay as garbage for gc).
 *   dropDamaged   checkpoints that still cannot be read are removed from the catalog, and said.
 *
 * Every step commits atomically; a crash in the middle leaves a store that opens, and running the
 * repair again finishes it.
 */
import fs from 'node:fs'
import path from 'node:path'
import { blake3 } from '../codecs/blake3.js'
import { CarReader } from '../codecs/car.js'
import { decompressBundle } from '../codecs/bundle-compress.js'
import { cidDigest, cidEquals, cidKey, cidToString, DAG_CBOR, parseCid, type CidBytes } from '../codecs/cid.js'
import { AT_REST, compressBlock, decompressBlock, defaultCompressor } from '../codecs/compress.js'
import { CkptError, isCkptError } from '../codecs/errors.js'
import { decodeManifest, type Manifest } from '../codecs/manifest.js'
import { decodeLocation, decodePackRecord, encodeLocation, encodePackRecord, type BlockLocation } from '../store/block-store.js'
import { allCheckpointsRange, blockKey, blockKeyCid, blockRange, checkpointKey, checkpointKeyTimeline, checkpointKeyVtime, checkpointRecordKey, packKey, packRange, refKey, timelineKey } from '../store/keys.js'
import { copyOf } from '../codecs/bytes.js'
import type { KVOp } from '../store/kv.js'
import { LevelKV } from '../store/level-kv.js'
import { packFileName } from '../store/pack-io.js'
import { fileReader, scanPack } from '../store/pack-scan.js'
import type { TimelineRecord } from '../store/repository.js'
import { fileSource, importBundle } from './bundle.js'
import { openStore, type CkptStore } from './store.js'
import { verifyStore, type CheckpointRef, type VerifySummary } from './verify.js'

export interface RepairOptions {
  /** a store directory or a bundle file holding copies of the damaged blocks */
  from?: string
  rebuildIndex?: boolean
  /** remove the checkpoints that remain damaged from the catalog */
  dropDamaged?: boolean
  /** re-hash every block when looking for damage (default true: repair runs verify --deep) */
  deep?: boolean
  onProgress?: (p: { phase: string; done: number; total: number }) => void
}

export interface RepairSummary {
  rebuiltIndex?: {
    /** index entries written (new or re-pointed) and removed */
    indexed: number
    removed: number
    packs: number
    /** packs brought back from the set-aside folder */
    recovered: number
    /** the index had to be recreated: catalog entries rebuilt from manifests */
    catalogRebuilt: boolean
    checkpoints: number
  }
  /** blocks fetched from `from` and written */
  fetched: string[]
  /** damaged or missing blocks no remedy could heal */
  stillDamaged: string[]
  /** checkpoints removed by dropDamaged */
  dropped: CheckpointRef[]
  /** checkpoints of a `from` bundle the catalog had lost, catalogued again */
  recatalogued: number
  notes: string[]
  /** the store's state afterwards */
  after: VerifySummary
}

interface Checked {
  summary: VerifySummary
  findings: import('./verify.js').Finding[]
}

async function verifyAll(store: CkptStore, deep: boolean): Promise<Checked> {
  const it = verifyStore(store, { deep })
  const findings: import('./verify.js').Finding[] = []
  for (;;) {
    const r = await it.next()
    if (r.done) return { summary: r.value, findings }
    findings.push(r.value)
  }
}

/** Repairs the store in `dir`, which must not be open elsewhere (the repair takes the store's lock). */
export async function repairStore(dir: string, opts: RepairOptions): Promise<RepairSummary> {
  if (!opts.from && !opts.rebuildIndex && !opts.dropDamaged) {
    throw new CkptError('CKPT_BAD_ARGUMENT', 'say what to repair: from (a store or bundle), rebuildIndex or dropDamaged')
  }
  const deep = opts.deep !== false
  const summary: RepairSummary = { fetched: [], stillDamaged: [], dropped: [], recatalogued: 0, notes: [], after: undefined as unknown as VerifySummary }
  if (opts.rebuildIndex) summary.rebuiltIndex = await rebuildIndex(dir, opts)
  const store = await openStore(dir, { mustExist: true })
  try {
    let state = await verifyAll(store, deep)
    if (opts.from && state.summary.damagedBlocks.length > 0) {
      summary.fetched = await fetchBlocks(store, opts.from, state.summary.damagedBlocks)
      state = await verifyAll(store, deep)
    }
    // a bundle also carries catalog entries: ones a damaged index lost come back (idempotent)
    const lost = state.findings.some((f) => f.kind === 'uncatalogued-checkpoint')
    if (opts.from && lost && fs.existsSync(opts.from) && fs.statSync(opts.from).isFile()) {
      try {
        const r = await importBundle(store, fileSource(opts.from))
        summary.recatalogued = r.checkpoints
        if (r.checkpoints > 0) state = await verifyAll(store, deep)
      } catch (err) {
        if (!isCkptError(err)) throw err
        summary.notes.push(`the bundle's checkpoints were not catalogued again: ${err.code}: ${err.message}`)
      }
    }
    // packs with damage in them are taken out of use (no more appends, no footer expected)
    if (await retireDamagedPacks(store, state.findings)) state = await verifyAll(store, deep)
    if (opts.dropDamaged && state.summary.damagedCheckpoints.length > 0) {
      summary.dropped = await dropCheckpoints(store, state.summary.damagedCheckpoints)
      state = await verifyAll(store, deep)
    }
    summary.stillDamaged = state.summary.damagedBlocks
    summary.after = state.summary
  } finally {
    await store.close()
  }
  return summary
}

// ------------------------------------------------------------------------------ from a copy

async function fetchBlocks(store: CkptStore, from: string, wanted: string[]): Promise<string[]> {
  const need = new Map<string, CidBytes>()
  for (const w of wanted) {
    const c = parseCid(w)
    need.set(cidKey(c), c)
  }
  const got = new Map<string, Uint8Array>()
  const src = path.resolve(from)
  if (path.resolve(store.dir) === src) throw new CkptError('CKPT_BAD_ARGUMENT', 'the source of a repair must be another store or a bundle, not the store itself', { path: src })
  if (fs.existsSync(path.join(src, 'CKPT'))) {
    const other = await openStore(src, { mustExist: true, threads: 0 })
    try {
      const blocks = other.internals().repo.blocks
      for (const [k, c] of need) {
        try {
          got.set(k, c[1] === DAG_CBOR && blocks.locate(c)?.codec === AT_REST.nodeDelta ? blocks.getNodeBytes(c, false).bytes : blocks.get(c))
        } catch (err) {
          if (!isCkptError(err)) throw err
        }
      }
    } finally {
      await other.close()
    }
  } else if (fs.existsSync(src) && fs.statSync(src).isFile()) {
    const reader = new CarReader(decompressBundle(fileSource(src)))
    await reader.header()
    for await (const s of reader.sections()) {
      if (s.cid.length !== 36) continue
      const k = cidKey(s.cid)
      if (!need.has(k) || got.has(k)) continue
      if (cidEquals(blake3(s.block), cidDigest(s.cid))) got.set(k, Uint8Array.prototype.slice.call(s.block))
      if (got.size === need.size) break
    }
  } else {
    throw new CkptError('CKPT_NOT_FOUND', `${src} is neither a store nor a bundle file`, { path: src })
  }
  if (got.size === 0) return []
  const { repo } = store.internals()
  const comp = defaultCompressor()
  await store.exclusive(async () => {
    for (const [k, bytes] of got) {
      // stored whole (a tree node too: its old delta chain is what may be broken)
      const c = compressBlock(comp, bytes)
      repo.blocks.replace(need.get(k)!, c.code, c.bytes, bytes.length)
    }
    await repo.commit([])
  })
  return [...got.keys()].map((k) => cidToString(need.get(k)!))
}

// ------------------------------------------------------------------------------ retire

async function retireDamagedPacks(store: CkptStore, findings: import('./verify.js').Finding[]): Promise<number> {
  const { repo } = store.internals()
  const packs = new Set<number>()
  for (const f of findings) {
    if (f.phase === 'structure' && f.pack !== undefined && ['truncated-pack', 'damaged-entry', 'bad-pack-footer', 'bad-pack-header'].includes(f.kind)) packs.add(f.pack)
  }
  const ops: KVOp[] = []
  const gone = new Set<number>()
  for (const [n] of repo.blocks.packRecords()) if (!repo.blocks.io.exists(n)) gone.add(n)
  for (const n of packs) {
    const rec = repo.blocks.packRecords().get(n)
    if (!rec || rec.retired || gone.has(n)) continue
    ops.push({ type: 'put', key: packKey(n), value: encodePackRecord({ ...rec, sealed: true, retired: true, committedLength: repo.blocks.io.size(n) }) })
  }
  // a pack that is gone: its record, and the index entries still placing blocks in it, go too (the
  // blocks a copy had are indexed elsewhere by now; the others are lost either way)
  if (gone.size > 0) {
    for (const n of gone) ops.push({ type: 'del', key: packKey(n) })
    for await (const [k, v] of repo.kv.iterate(blockRange)) {
      if (v.length === 22 && gone.has(decodeLocation(v).pack)) ops.push({ type: 'del', key: copyOf(k) })
    }
  }
  if (ops.length === 0) return 0
  await store.exclusive(() => repo.kv.batch(ops, { sync: true }))
  repo.blocks.reloadPackRecords(await readPackRecords(repo))
  return ops.length
}

async function readPackRecords(repo: import('../store/repository.js').Repository): Promise<Map<number, import('../store/block-store.js').PackRecord>> {
  const m = new Map<number, import('../store/block-store.js').PackRecord>()
  for await (const [k, v] of repo.kv.iterate(packRange)) m.set(new DataView(k.buffer, k.byteOffset, k.byteLength).getUint32(1), decodePackRecord(v))
  return m
}

// ------------------------------------------------------------------------------ drop

async function dropCheckpoints(store: CkptStore, list: CheckpointRef[]): Promise<CheckpointRef[]> {
  const { repo } = store.internals()
  const ops: KVOp[] = []
  const cids = new Set(list.map((c) => c.cid))
  for (const c of list) {
    const cid = parseCid(c.cid)
    ops.push({ type: 'del', key: checkpointKey(c.timeline, BigInt(c.vtime)) })
    const rec = await repo.checkpointRecord(cid)
    if (rec && rec.timeline === c.timeline && rec.vtime === BigInt(c.vtime)) ops.push({ type: 'del', key: checkpointRecordKey(cid) })
  }
  for await (const r of repo.refs()) if (cids.has(cidToString(r.cid))) ops.push({ type: 'del', key: refKey(r.name) })
  await store.exclusive(() => repo.kv.batch(ops, { sync: true }))
  return list
}

// ------------------------------------------------------------------------------ rebuild the index

async function rebuildIndex(dir: string, opts: RepairOptions): Promise<NonNullable<RepairSummary['rebuiltIndex']>> {
  if (!fs.existsSync(path.join(dir, 'CKPT'))) throw new CkptError('CKPT_BAD_STORE', `${dir} is not a ckpt store (no CKPT marker)`, { dir })
  const indexDir = path.join(dir, 'index')
  let catalogRebuilt = false
  // an index LevelDB that does not open: LevelDB's own repair first, then a fresh one
  // usable: it opens, and every entry reads (LevelDB finds damaged blocks only when it reads them)
  const opens = async (): Promise<boolean> => {
    let kv: LevelKV
    try {
      kv = await LevelKV.open(indexDir)
    } catch (err) {
      if (isCkptError(err, 'CKPT_LOCKED')) throw err
      return false
    }
    try {
      for await (const _ of kv.iterate({})) {
        // reading is the test
      }
      return true
    } catch (err) {
      if (!isCkptError(err)) throw err
      return false
    } finally {
      await kv.close()
    }
  }
  if (!(await opens())) {
    try {
      await LevelKV.repair(indexDir)
    } catch {}
    if (!(await opens())) {
      fs.renameSync(indexDir, `${indexDir}.broken-${Date.now()}`)
      catalogRebuilt = true
    }
  }
  // an iterator may pass over a damaged block that a lookup then trips on: then LevelDB's repair,
  // and if even that does not do, a new index
  for (let attempt = 0; ; attempt++) {
    try {
      return await rebuildWith(dir, indexDir, catalogRebuilt, opts)
    } catch (err) {
      if (!isCkptError(err, 'CKPT_BAD_INDEX') || attempt === 2) throw err
      if (attempt === 0) {
        try {
          await LevelKV.repair(indexDir)
        } catch {}
      } else {
        fs.renameSync(indexDir, `${indexDir}.broken-${Date.now()}`)
        catalogRebuilt = true
      }
    }
  }
}

async function rebuildWith(dir: string, indexDir: string, catalogRebuilt: boolean, opts: RepairOptions): Promise<NonNullable<RepairSummary['rebuiltIndex']>> {
  const kv = await LevelKV.open(indexDir)
  try {
    const packsDir = path.join(dir, 'packs')
    fs.mkdirSync(packsDir, { recursive: true })
    // set-aside packs come back where their number is free
    let recovered = 0
    const orphanDir = path.join(packsDir, 'orphaned')
    if (fs.existsSync(orphanDir)) {
      for (const f of fs.readdirSync(orphanDir).sort()) {
        const m = /^(\d{8})\.pack\.\d+$/.exec(f)
        if (!m) continue
        const target = path.join(packsDir, `${m[1]}.pack`)
        if (fs.existsSync(target)) continue
        fs.renameSync(path.join(orphanDir, f), target)
        recovered++
      }
    }
    const files = fs
      .readdirSync(packsDir)
      .filter((f) => /^\d{8}\.pack$/.test(f))
      .sort()
    // every intact entry, first copy wins (a later duplicate is garbage)
    const found = new Map<string, BlockLocation>()
    const records: KVOp[] = []
    const manifests: { cid: CidBytes; loc: BlockLocation; payload: Uint8Array }[] = []
    let done = 0
    for (const f of files) {
      const n = Number.parseInt(f, 10)
      const file = path.join(packsDir, f)
      let sealed = false
      let end = 16
      let entries = 0
      for (const ev of scanPack(fileReader(file), n, { sealed: true })) {
        if (ev.kind === 'footer') sealed = true
        else if (ev.kind === 'entry') {
          const e = ev.entry
          const k = cidKey(e.cid)
          const loc = { pack: n, offset: e.offset, storedLength: e.storedLength, rawLength: e.rawLength, codec: e.codec, depth: e.depth }
          if (!found.has(k)) found.set(k, loc)
          entries++
          end = e.offset + 52 + e.storedLength
          if (catalogRebuilt && e.cid[1] === DAG_CBOR && e.codec !== AT_REST.nodeDelta) manifests.push({ cid: Uint8Array.prototype.slice.call(e.cid), loc, payload: Uint8Array.prototype.slice.call(e.payload) })
        }
      }
      const size = fs.statSync(file).size
      const rec = Buffer.alloc(13)
      rec.writeBigUInt64LE(BigInt(sealed ? size : end), 0)
      rec[8] = sealed ? 1 : 0
      rec.writeUInt32LE(entries, 9)
      records.push({ type: 'put', key: packKey(n), value: rec })
      done++
      opts.onProgress?.({ phase: 'rebuilding the index', done, total: files.length })
    }
    const ops: KVOp[] = []
    let indexed = 0
    let removed = 0
    const kept = new Set<string>()
    for await (const [k, v] of kv.iterate(blockRange)) {
      const cid = Uint8Array.prototype.slice.call(blockKeyCid(k)) as Uint8Array
      const key = cidKey(cid)
      const want = found.get(key)
      let ok = false
      if (want && v.length === 22) {
        const have = decodeLocation(v)
        ok = have.pack === want.pack && have.offset === want.offset && have.storedLength === want.storedLength && have.rawLength === want.rawLength && have.codec === want.codec && have.depth === want.depth
      }
      if (ok) {
        kept.add(key)
        continue
      }
      if (want) {
        ops.push({ type: 'put', key: blockKey(cid), value: encodeLocation(want) })
        kept.add(key)
        indexed++
      } else {
        ops.push({ type: 'del', key: Uint8Array.prototype.slice.call(k) })
        removed++
      }
    }
    for (const [key, loc] of found) {
      if (kept.has(key)) continue
      ops.push({ type: 'put', key: blockKey(Buffer.from(key, 'latin1')), value: encodeLocation(loc) })
      indexed++
    }
    // pack records no file backs are dropped
    for await (const [k] of kv.iterate(packRange)) {
      const n = new DataView(k.buffer, k.byteOffset, k.byteLength).getUint32(1)
      if (!files.includes(packFileName(n))) ops.push({ type: 'del', key: Uint8Array.prototype.slice.call(k) })
    }
    let checkpoints = 0
    if (catalogRebuilt) checkpoints = catalogFromManifests(manifests, ops)
    else await mendCatalog(kv, packsDir, found, ops)
    for (let i = 0; i < ops.length; i += 10_000) await kv.batch(ops.slice(i, i + 10_000))
    await kv.batch(records, { sync: true })
    return { indexed, removed, packs: files.length, recovered, catalogRebuilt, checkpoints }
  } finally {
    await kv.close()
  }
}

/** A block's bytes read straight from its pack entry, decompressed and verified; undefined if not. */
function readBlock(packsDir: string, cid: CidBytes, loc: BlockLocation): Uint8Array | undefined {
  if (loc.codec === AT_REST.nodeDelta) return undefined
  try {
    const r = fileReader(path.join(packsDir, packFileName(loc.pack)))
    try {
      const payload = new Uint8Array(loc.storedLength)
      if (r.read(payload, loc.offset + 52) !== loc.storedLength) return undefined
      const raw = decompressBlock(loc.codec, payload, loc.rawLength)
      return cidEquals(blake3(raw), cidDigest(cid)) ? raw : undefined
    } finally {
      r.close?.()
    }
  } catch {
    return undefined
  }
}

/**
 * The catalog of a readable index made to agree with its checkpoints' manifests: a catalog key whose
 * vtime is not its manifest's is moved, checkpoint records ('k') rewritten where wrong or missing,
 * timeline records rewritten where unreadable or at odds with their checkpoints.
 */
async function mendCatalog(kv: LevelKV, packsDir: string, found: Map<string, BlockLocation>, ops: KVOp[]): Promise<void> {
  const enc = new TextEncoder()
  const firstOf = new Map<string, Manifest>()
  const records = new Map<string, { timeline: string; vtime: bigint }>()
  for await (const [k, v] of kv.iterate(allCheckpointsRange)) {
    const timeline = checkpointKeyTimeline(k)
    if (timeline === undefined || v.length !== 36) {
      ops.push({ type: 'del', key: copyOf(k) })
      continue
    }
    const cid = copyOf(v)
    const loc = found.get(cidKey(cid))
    const raw = loc && readBlock(packsDir, cid, loc)
    let m: Manifest | undefined
    try {
      m = raw ? decodeManifest(raw) : undefined
    } catch {}
    if (!m) continue // nothing to go by: verify keeps reporting it, repair --from or --drop-damaged
    let vtime = checkpointKeyVtime(k)
    if (m.vtime !== vtime) {
      ops.push({ type: 'del', key: copyOf(k) })
      ops.push({ type: 'put', key: checkpointKey(timeline, m.vtime), value: cid })
      vtime = m.vtime
    }
    if (!firstOf.has(timeline)) firstOf.set(timeline, m)
    if (!records.has(cidKey(cid))) records.set(cidKey(cid), { timeline, vtime })
  }
  for (const [key, want] of records) {
    const cid = Buffer.from(key, 'latin1')
    const v = await kv.get(checkpointRecordKey(cid))
    let ok = false
    try {
      const r = v && (JSON.parse(new TextDecoder().decode(v)) as { timeline?: string; vtime?: string })
      ok = !!r && r.timeline === want.timeline && r.vtime === want.vtime.toString()
    } catch {}
    if (!ok) ops.push({ type: 'put', key: checkpointRecordKey(cid), value: enc.encode(JSON.stringify({ timeline: want.timeline, vtime: want.vtime.toString() })) })
  }
  for (const [name, m] of firstOf) {
    const v = await kv.get(timelineKey(name))
    const regions = Object.fromEntries(Object.entries(m.regions).map(([k, r]) => [k, { size: r.size, chunkSize: r.chunkSize }]))
    let rec: TimelineRecord | undefined
    try {
      rec = v && (JSON.parse(new TextDecoder().decode(v)) as TimelineRecord)
    } catch {}
    const sorted = (o: Record<string, unknown>) => JSON.stringify(Object.entries(o).sort())
    if (rec && rec.name === name && rec.lineage === m.lineage && typeof rec.regions === 'object' && sorted(rec.regions) === sorted(regions)) continue
    const fixed: TimelineRecord = { name, lineage: m.lineage, regions, created: typeof rec?.created === 'number' ? rec.created : m.wall }
    ops.push({ type: 'put', key: timelineKey(name), value: enc.encode(JSON.stringify(fixed)) })
  }
}

/** Catalog entries and timeline records from the manifests found in the packs (a lost index). */
function catalogFromManifests(list: { cid: CidBytes; loc: BlockLocation; payload: Uint8Array }[], ops: KVOp[]): number {
  const timelines = new Map<string, TimelineRecord>()
  let n = 0
  for (const e of list) {
    let m: Manifest
    try {
      const raw = decompressBlock(e.loc.codec, e.payload, e.loc.rawLength)
      if (!cidEquals(blake3(raw), cidDigest(e.cid))) continue
      m = decodeManifest(raw)
    } catch {
      continue
    }
    let name = m.timeline
    const existing = timelines.get(name)
    // another history under the same name keeps its own timeline, named after its lineage
    if (existing && existing.lineage !== m.lineage) name = `${m.timeline}~${m.lineage.slice(0, 8)}`
    if (!timelines.has(name)) {
      const rec: TimelineRecord = { name, lineage: m.lineage, regions: Object.fromEntries(Object.entries(m.regions).map(([k, r]) => [k, { size: r.size, chunkSize: r.chunkSize }])), created: m.wall }
      timelines.set(name, rec)
      ops.push({ type: 'put', key: timelineKey(name), value: new TextEncoder().encode(JSON.stringify(rec)) })
    }
    ops.push({ type: 'put', key: checkpointKey(name, m.vtime), value: e.cid })
    ops.push({ type: 'put', key: checkpointRecordKey(e.cid), value: new TextEncoder().encode(JSON.stringify({ timeline: name, vtime: m.vtime.toString() })) })
    n++
  }
  return n
}
