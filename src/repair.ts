/**
 * repairStore: healing a damaged store (SPEC.md §16.2). Three explicit remedies, applied in this
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
import { AT_REST, compressBlock } from '../codecs/compress.js'
import { CkptError, fsError, isCkptError } from '../codecs/errors.js'
import { ENTRY_KIND } from '../codecs/pack-format.js'
import { Repository, type CatalogOp, type UncoveredCheckpoint } from '../store/index.js'
import { fileSource, importBundle } from './bundle.js'
import { openStore, type CkptStore } from './store.js'
import { verifyStore, type CheckpointRef, type Finding, type VerifySummary } from './verify.js'

export interface RepairOptions {
  /** a store directory or a bundle file holding copies of the damaged blocks */
  from?: string
  rebuildIndex?: boolean
  /** with rebuildIndex: catalogue the checkpoints no catalog record covers, from their manifests */
  adopt?: boolean
  /** remove the checkpoints that remain damaged from the catalog */
  dropDamaged?: boolean
  /** re-hash every block when looking for damage (default true: repair runs verify --deep) */
  deep?: boolean
  onProgress?: (p: { phase: string; done: number; total: number }) => void
}

export interface RepairSummary {
  rebuiltIndex?: {
    packs: number
    /** blocks indexed */
    blocks: number
    /** packs brought back from the set-aside folder (packs/orphaned) */
    recovered: number
    /** catalog records replayed */
    records: number
    checkpoints: number
    timelines: number
    refs: number
    /** catalog entries kept from the old index that no record held */
    keptFromIndex: number
    /** checkpoints catalogued from their manifests (no records; or `adopt`) */
    adopted: number
    /** checkpoints found in the packs that no record covers (left out of the catalog unless `adopt`) */
    uncovered: UncoveredCheckpoint[]
    /** packs with damage in them, recorded as retired */
    damagedPacks: number[]
    /** catalog records that could not be read (holes in the record stream) */
    missingRecords: number
    /** the packs hold no catalog records (a store of format 1) */
    legacy: boolean
    /** where a damaged index LevelDB could not repair was set aside */
    setAside?: string
  }
  /** blocks fetched from `from` and written */
  fetched: string[]
  /** damaged or missing blocks no remedy could heal */
  stillDamaged: string[]
  /** checkpoints removed by dropDamaged */
  dropped: CheckpointRef[]
  /** checkpoints of a `from` bundle the catalog had lost, catalogued again */
  recatalogued: number
  /** blocks whose entry failed its checksum while their content was intact, stored anew */
  restored: string[]
  notes: string[]
  /** the store's state afterwards */
  after: VerifySummary
}

interface Checked {
  summary: VerifySummary
  findings: Finding[]
}

async function verifyAll(store: CkptStore, deep: boolean): Promise<Checked> {
  const it = verifyStore(store, { deep })
  const findings: Finding[] = []
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
  if (opts.adopt && !opts.rebuildIndex) throw new CkptError('CKPT_BAD_ARGUMENT', 'adopt goes with rebuildIndex')
  // a source that is not there is said before anything is done (not only when damage needs it)
  if (opts.from !== undefined) {
    const src = path.resolve(opts.from)
    let st: fs.Stats
    try {
      st = fs.statSync(src)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new CkptError('CKPT_NOT_FOUND', `the repair source ${src} does not exist`, { path: src }, err)
      throw fsError(err, `cannot read the repair source ${src}`, { path: src })
    }
    if (st.isDirectory() && !fs.existsSync(path.join(src, 'CKPT'))) throw new CkptError('CKPT_NOT_FOUND', `${src} is neither a store nor a bundle file`, { path: src })
    if (path.resolve(dir) === src) throw new CkptError('CKPT_BAD_ARGUMENT', 'the source of a repair must be another store or a bundle, not the store itself', { path: src })
  }
  const deep = opts.deep !== false
  const summary: RepairSummary = { fetched: [], stillDamaged: [], dropped: [], recatalogued: 0, restored: [], notes: [], after: undefined as unknown as VerifySummary }
  if (opts.rebuildIndex) summary.rebuiltIndex = await rebuildIndex(dir, opts)
  const store = await openStore(dir, { mustExist: true })
  let healCatalog = false
  try {
    let state = await verifyAll(store, deep)
    // blocks whose entry fails its checksum but whose content is intact: stored anew, whole
    if (state.summary.badChecksums.length > 0) {
      summary.restored = await restoreIntact(store, state.summary.badChecksums)
      state = await verifyAll(store, deep)
    }
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
    healCatalog = !opts.rebuildIndex && state.findings.some((f) => CATALOG_KINDS.has(f.kind) && f.severity !== 'info')
  } finally {
    await store.close()
  }
  if (healCatalog) {
    // the index's catalog and the records in the packs disagree (records lost with a damaged pack, a
    // pack the index does not list): the catalog is rebuilt from both — the records replayed, and
    // what the index knew that they lack and nothing removed kept — and written to the packs anew
    summary.rebuiltIndex = await rebuildIndex(dir, opts)
    summary.notes.push('the catalog in the index and the catalog records in the packs disagreed: the catalog was rebuilt from both and written to the packs anew')
    const again = await openStore(dir, { mustExist: true })
    try {
      const state = await verifyAll(again, deep)
      summary.stillDamaged = state.summary.damagedBlocks
      summary.after = state.summary
    } finally {
      await again.close()
    }
  }
  return summary
}

/** Findings that say the catalog and the packs' records disagree: a repair rebuilds the catalog from both. */
const CATALOG_KINDS = new Set<string>(['missing-record', 'bad-record', 'catalog-mismatch', 'unlisted-pack', 'orphan-pack'])

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
      const blocks = other.context().repo.blocks
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
  const { repo } = store.context()
  const comp = repo.blocks.compressor
  await store.context().exclusive(async () => {
    for (const [k, bytes] of got) {
      // stored whole (a tree node too: its old delta chain is what may be broken)
      const c = compressBlock(comp, bytes)
      const cid = need.get(k)!
      const kind = cid[1] === DAG_CBOR && (await repo.isManifest(cid)) ? ENTRY_KIND.manifest : ENTRY_KIND.block
      repo.blocks.put(cid, c.code, c.bytes, bytes.length, { kind, replace: true })
    }
    await repo.commit([])
  })
  return [...got.keys()].map((k) => cidToString(need.get(k)!))
}

/** Blocks that read back right (re-hashed) though their entry's checksum is damaged: written anew, whole. */
async function restoreIntact(store: CkptStore, cids: string[]): Promise<string[]> {
  const { repo } = store.context()
  const done: string[] = []
  const comp = repo.blocks.compressor
  await store.context().exclusive(async () => {
    for (const text of cids) {
      const cid = parseCid(text)
      let bytes: Uint8Array
      try {
        bytes = repo.blocks.get(cid)
      } catch (err) {
        if (!isCkptError(err)) throw err
        continue
      }
      const c = compressBlock(comp, bytes)
      const kind = cid[1] === DAG_CBOR && (await repo.isManifest(cid)) ? ENTRY_KIND.manifest : ENTRY_KIND.block
      repo.blocks.put(cid, c.code, c.bytes, bytes.length, { kind, replace: true })
      done.push(text)
    }
    await repo.commit([])
  })
  return done
}

// ------------------------------------------------------------------------------ retire

async function retireDamagedPacks(store: CkptStore, findings: Finding[]): Promise<number> {
  const { repo } = store.context()
  const packs = new Set<number>()
  for (const f of findings) {
    if (f.phase === 'structure' && f.pack !== undefined && ['truncated-pack', 'damaged-entry', 'bad-pack-footer', 'bad-pack-header'].includes(f.kind)) packs.add(f.pack)
  }
  return store.context().exclusive(() => repo.retirePacks(packs))
}

// ------------------------------------------------------------------------------ drop

async function dropCheckpoints(store: CkptStore, list: CheckpointRef[]): Promise<CheckpointRef[]> {
  const { repo } = store.context()
  const ops: CatalogOp[] = []
  const cids = new Set(list.map((c) => c.cid))
  for (const c of list) ops.push(repo.dropCheckpointOp({ timeline: c.timeline, vtime: BigInt(c.vtime), cid: parseCid(c.cid) }))
  for await (const r of repo.refs()) if (cids.has(cidToString(r.cid))) ops.push(repo.setRefOp(r.name, null))
  await store.context().exclusive(() => repo.commit(ops))
  return list
}

// ------------------------------------------------------------------------------ rebuild the index

async function rebuildIndex(dir: string, opts: RepairOptions): Promise<NonNullable<RepairSummary['rebuiltIndex']>> {
  const r = await Repository.rebuild(dir, { adopt: opts.adopt, onProgress: (done, total) => opts.onProgress?.({ phase: 'rebuilding the index', done, total }) })
  return {
    packs: r.packs,
    blocks: r.blocks,
    recovered: r.recovered,
    records: r.records,
    checkpoints: r.checkpoints,
    timelines: r.timelines,
    refs: r.refs,
    keptFromIndex: r.keptFromIndex,
    adopted: r.adopted,
    uncovered: r.uncovered,
    damagedPacks: r.damagedPacks,
    missingRecords: r.missingRecords,
    legacy: r.legacy,
    setAside: r.setAside,
  }
}
