/**
 * Garbage collection (SPEC.md §15): reclaim the blocks no live checkpoint, ref or open timeline
 * reaches, with memory bounded whatever the store's size.
 *
 *   mark    from the roots (every catalog entry, every ref, the heads of open timeline handles) the
 *           DAG is walked into a SeenSet (exact in memory up to a cap, then a temporary LevelDB), each
 *           checkpoint against the previous one of its timeline so shared subtrees are not walked
 *           again. A live node stored as a delta keeps its base chain live.
 *   sweep   one pass over the index sums live bytes per pack. A pack with nothing live is deleted; one
 *           whose live share is under the threshold (default 50%) is rewritten: its live entries are
 *           copied as they are (no decompression) into the open pack, then one synced batch points
 *           the index at the copies, drops the dead entries and the old pack's record, and only then
 *           is the old file deleted. Packs set aside at open (packs/orphaned) are deleted.
 *
 * gc takes the store's pipeline for its duration (checkpoint() calls queue behind it and apply
 * backpressure): nothing writes while it marks and moves, so nothing it marks goes stale. A crash at
 * any point leaves a store that opens with nothing live lost: before the batch the index still names
 * the old copies; after it, the old pack is a leftover no record names (the next writer deletes it).
 *
 * gc deletes nothing while the catalog looks incomplete (CKPT_CATALOG_SUSPECT, SPEC.md §15): a
 * manifest nothing reaches that no removal record explains, or a pack file no index record names
 * that may hold what the index lost. Before it rewrites packs it writes the catalog to the packs as
 * a snapshot, so the older catalog records in the packs it rewrites can go.
 */
import os from 'node:os'
import path from 'node:path'
import { cidEquals, DAG_CBOR, toCID, type CidBytes } from '../codecs/cid.js'
import { AT_REST, compressBlock, defaultCompressor } from '../codecs/compress.js'
import { CkptError } from '../codecs/errors.js'
import type { Manifest } from '../codecs/manifest.js'
import { deltaBaseCid, encodeNodeDelta } from '../codecs/node-delta.js'
import { encodedNodeLength, encodeNode, type NodeEntries } from '../codecs/tree-node.js'
import { decodeLocation, encodeLocation, type PackRecord } from '../store/block-store.js'
import { allCheckpointsRange, blockKeyCid, blockRange, manifestKey, manifestRange, recordKeySeq, recordRange, removedKey } from '../store/keys.js'
import { cidToString } from '../codecs/cid.js'
import type { KVOp } from '../store/kv.js'
import { ENTRY_HEADER_SIZE, ENTRY_KIND, FOOTER_SIZE, PACK_HEADER_SIZE } from '../store/pack-format.js'
import { scanPack } from '../store/pack-scan.js'
import { SeenSet } from '../store/seen-set.js'
import v8 from 'node:v8'
import vm from 'node:vm'
import { changedSlots, childCid } from './node-compare.js'
import { Geometry, MAX_DELTA_DEPTH } from './region-tree.js'
import type { CkptStore } from './store.js'

export interface GcOptions {
  /** rewrite packs whose live share is below this (0..1, default 0.5); 0 rewrites none, 1 all but full ones */
  threshold?: number
  /**
   * at most this share of dead bytes (of the live bytes) left in packs kept: past it, the packs with
   * the most dead bytes are rewritten too (default 0.02; restic's prune keeps 5%; 1 turns this off)
   */
  maxUnused?: number
  /** only report what would be reclaimed */
  dryRun?: boolean
  onProgress?: (p: { phase: 'mark' | 'sweep'; done: number; total: number }) => void
}

export interface GcSummary {
  roots: number
  liveBlocks: number
  /** pack bytes of live entries */
  liveBytes: number
  /** of which tree nodes and manifests (the DAG's own cost) */
  liveNodeBytes: number
  /** of which nodes live only as the base of a live node's delta chain (a dry run; gc stores such nodes anew) */
  baseOnlyBytes: number
  /** index entries of unreachable blocks removed */
  deadBlocks: number
  /** live nodes whose delta base was dead, stored anew (against a live base, or whole) */
  nodesReencoded: number
  reencodedBytes: number
  packsBefore: number
  packsAfter: number
  packsDeleted: number
  packsRewritten: number
  /** packs due for a rewrite left as they are: a live entry in them did not read back intact */
  packsSkipped: number
  /** live blocks found damaged while copying (ckpt verify names them; ckpt repair --from heals) */
  damagedLiveBlocks: number
  /** live bytes copied out of rewritten packs */
  rewrittenBytes: number
  bytesBefore: number
  bytesAfter: number
  /** pack bytes freed (deleted files minus copies written) */
  reclaimedBytes: number
  /** pack entry bytes before gc that nothing live reaches (entries of dead blocks, unindexed entries) */
  deadBytes: number
  /** dead bytes left in packs kept (above the threshold) */
  deadBytesKept: number
  orphansRemoved: number
  /** catalog records no longer needed (older than the newest snapshot): out of the index, their bytes go with their packs */
  recordsDropped: number
  /** bytes of catalog records gc wrote (its snapshot and its commits' records) */
  recordBytes: number
  /** pack bytes of the catalog records still needed (the newest snapshot and what follows it), besides liveBytes */
  liveRecordBytes: number
  dryRun: boolean
  /** mark; sweep (all of it); of which rewrite: reading, copying and committing the packs that go */
  ms: { mark: number; sweep: number; rewrite: number }
}

export async function collectGarbage(store: CkptStore, opts: GcOptions = {}): Promise<GcSummary> {
  const threshold = opts.threshold ?? 0.5
  if (typeof threshold !== 'number' || !(threshold >= 0 && threshold <= 1)) throw new CkptError('CKPT_BAD_ARGUMENT', 'gc threshold must be between 0 and 1', { threshold })
  const maxUnused = opts.maxUnused ?? 0.02
  if (typeof maxUnused !== 'number' || !(maxUnused >= 0 && maxUnused <= 1)) throw new CkptError('CKPT_BAD_ARGUMENT', 'gc maxUnused must be between 0 and 1', { maxUnused })
  return store.exclusive(async () => {
    const { repo } = store.internals()
    const blocks = repo.blocks
    const t0 = performance.now()
    unlistedPacks(store)
    // a store opened read-only (a dry run) is never written to: the sets spill to the system's temporary directory
    const tmpName = `gc-${process.pid}-${Date.now().toString(36)}`
    const tmp = repo.memory ? undefined : repo.readOnly ? path.join(os.tmpdir(), `ckpt-${tmpName}`) : path.join(repo.dir, 'tmp', tmpName)
    // sized for half the indexed blocks (an estimate; no pass over the index): a live set larger than that spills to disk (still exact)
    const live = await SeenSet.create(tmp, blocks.estimatedCount() >> 1)
    // bases of live deltas kept for their own sake, apart from `live`: a node in `live` has had its
    // whole subtree marked, a base alone has not (a later tree holding that node must still walk it)
    const bases = await SeenSet.create(tmp && `${tmp}-bases`, 1024)
    const isLive = (cid: CidBytes) => live.has(cid) || bases.has(cid)
    // the walk needs the previous checkpoint's nodes at hand (a few hundred per region), no more
    const cacheWas = blocks.setNodeCacheSize(GC_NODE_CACHE)
    let reencoded = 0
    let reencodedBytes = 0
    try {
      // ------------------------------------------------------------------ mark
      const roots: { timeline: string; cid: CidBytes }[] = []
      for await (const [k, v] of repo.kv.iterate(allCheckpointsRange)) if (v.length === 36) roots.push({ timeline: Buffer.from(k.subarray(1, k.length - 9)).toString('utf8'), cid: Uint8Array.prototype.slice.call(v) })
      for await (const r of repo.refs()) roots.push({ timeline: '', cid: r.cid })
      for (const h of await store.openHeads()) roots.push({ timeline: '', cid: h })
      const mark = (cid: CidBytes) => {
        if (!live.has(cid)) live.add(cid)
      }
      // a node kept alive keeps its delta chain's bases alive
      const markChain = (cid: CidBytes) => {
        let c: CidBytes | undefined = cid
        for (let hops = 0; c && hops < 300; hops++) {
          const loc = blocks.locate(c)
          if (!loc || loc.codec !== AT_REST.nodeDelta) return
          const base = deltaBaseCid(blocks.readAt(c, loc))
          if (isLive(base)) return
          bases.add(base)
          c = base
        }
      }
      // A live node stored as a delta whose base is not live (a thinned checkpoint's node) would keep
      // its chain of dead bases alive: it is stored anew instead, as a delta against the node at its
      // place in the previous live checkpoint (live, its own chain live: it was walked first) or whole.
      // A dry run only marks the chains, and says how many bytes they hold.
      const reencode = (cid: CidBytes, e: NodeEntries, base: CidBytes | null, be: NodeEntries | undefined) => {
        const size = encodedNodeLength(e)
        if (base && be && live.has(base)) {
          const bl = blocks.locate(base)
          const depth = bl ? (bl.codec === AT_REST.nodeDelta ? bl.depth : 0) : MAX_DELTA_DEPTH
          if (depth < REENCODE_DEPTH) {
            const delta = encodeNodeDelta(base, be, e, size >> 1)
            if (delta) {
              blocks.replace(cid, AT_REST.nodeDelta, delta, size, depth + 1)
              reencoded++
              reencodedBytes += ENTRY_HEADER_SIZE + delta.length
              return
            }
          }
        }
        const bytes = encodeNode(e)
        const c = compressBlock(defaultCompressor(), bytes)
        blocks.replace(cid, c.code, c.bytes, bytes.length, 0)
        reencoded++
        reencodedBytes += ENTRY_HEADER_SIZE + c.bytes.length
      }
      const walk = (cid: CidBytes | null, base: CidBytes | null, level: number) => {
        if (!cid || (base && cidEquals(cid, base)) || live.has(cid)) return
        live.add(cid)
        const loc = blocks.locate(cid)
        const deadBase = loc !== undefined && loc.codec === AT_REST.nodeDelta && !live.has(deltaBaseCid(blocks.readAt(cid, loc, true)))
        if (deadBase && opts.dryRun) markChain(cid)
        const e = blocks.getNode(cid)
        const be = base ? blocks.getNode(base) : undefined
        if (deadBase && !opts.dryRun) reencode(cid, e, base, be)
        for (const s of changedSlots(e, be)) {
          if (!e.codecs[s]) continue
          const child = childCid(e, s)
          if (level === 1) mark(child)
          else walk(child, be && be.count === e.count && be.codecs[s] ? childCid(be, s) : null, level - 1)
        }
      }
      const prevOf = new Map<string, Manifest>()
      let done = 0
      for (const r of roots) {
        if (live.has(r.cid)) {
          done++
          continue
        }
        live.add(r.cid)
        const m = await store.manifest(toCID(r.cid))
        const prev = r.timeline ? prevOf.get(r.timeline) : undefined
        for (const [name, reg] of Object.entries(m.regions)) {
          const b = prev?.regions[name]
          const same = b && b.size === reg.size && b.chunkSize === reg.chunkSize && b.fanout === reg.fanout
          walk(reg.root, same ? b.root : null, new Geometry(reg.size, reg.chunkSize, reg.fanout).height)
        }
        for (const b of Object.values(m.blobs)) for (const c of b.chunks) mark(c.cid)
        if (r.timeline) prevOf.set(r.timeline, m)
        await live.flush()
        await bases.flush()
        if (++done % COLLECT_EVERY_ROOTS === 0) fullCollection()
        opts.onProgress?.({ phase: 'mark', done, total: roots.length })
      }
      await live.flush(true)
      await bases.flush(true)
      // nothing is deleted while a manifest nothing reaches is not explained by a removal record
      await unexplainedManifests(store, isLive)
      // the nodes stored anew are durable, and the index names them, before anything is deleted
      if (reencoded > 0) await repo.commitWith([])
      const tMark = performance.now() - t0

      // ------------------------------------------------------------------ sweep: live bytes per pack
      const packs = new Map([...blocks.packRecords()].map(([n, r]) => [n, { rec: r, live: 0 }]))
      let liveBlocks = 0
      let liveBytes = 0
      let liveNodeBytes = 0
      let baseOnlyBytes = 0
      let deadOps: KVOp[] = []
      let deadIndexed = 0
      const liveNodesAt = new Map<number, Set<number>>()
      let scanned = 0
      for await (const [k, v] of repo.kv.iterate(blockRange)) {
        if (++scanned % COLLECT_EVERY_ENTRIES === 0) fullCollection()
        if (v.length !== 22) continue
        const loc = decodeLocation(v)
        const cid = blockKeyCid(k)
        if (!isLive(cid)) {
          // unreachable: out of the index now (its bytes go when its pack is rewritten), so nothing
          // (a later checkpoint's dedup, verify) relies on a block whose delta base may be gone
          if (!opts.dryRun) {
            // (a dead manifest keeps its listing and its removal until its bytes are gone with their
            // pack: while they are in a pack, a rebuild finds them, and must know them removed)
            deadOps.push({ type: 'del', key: Uint8Array.prototype.slice.call(k) })
            deadIndexed++
            if (deadOps.length >= COMMIT_OPS) {
              await repo.kv.batch(deadOps)
              deadOps = []
            }
          }
          continue
        }
        liveBlocks++
        liveBytes += ENTRY_HEADER_SIZE + loc.storedLength
        if (cid[1] === DAG_CBOR) {
          // where the index places each live node, for the rewrite (a node's other copies stay put)
          let at = liveNodesAt.get(loc.pack)
          if (!at) liveNodesAt.set(loc.pack, (at = new Set()))
          at.add(loc.offset)
          liveNodeBytes += ENTRY_HEADER_SIZE + loc.storedLength
          if (!live.has(cid)) baseOnlyBytes += ENTRY_HEADER_SIZE + loc.storedLength
        }
        const p = packs.get(loc.pack)
        if (p) p.live += ENTRY_HEADER_SIZE + loc.storedLength
      }
      await repo.kv.batch(deadOps, { sync: true })
      deadOps = []
      // the catalog as one snapshot in the packs (when it changed since the last): the records older
      // than it are no longer needed to rebuild it, and go with the packs rewritten below. Written
      // after the deletions above: the removals of the manifests collected are gone from it
      const recordBytes0 = repo.recordBytesWritten
      let snapshot = repo.catalogPosition?.snapshot ?? 0
      if (!opts.dryRun && repo.catalogPosition && repo.catalogPosition.seq > snapshot) {
        snapshot = await repo.writeSnapshot()
        const open = packs.get(blocks.openPackNo())
        if (open) open.rec = blocks.packRecords().get(blocks.openPackNo())!
        else if (blocks.openPackNo() >= 0) packs.set(blocks.openPackNo(), { rec: blocks.packRecords().get(blocks.openPackNo())!, live: 0 })
      }
      // catalog records: live from the snapshot on (their bytes count like live blocks'), older ones dead
      const liveRecordsAt = new Map<number, Map<number, Uint8Array>>()
      let recordsDropped = 0
      let liveRecordBytes = 0
      for await (const [k, v] of repo.kv.iterate(recordRange)) {
        if (v.length !== 22) continue
        const { seq } = recordKeySeq(k)
        if (seq < snapshot) {
          if (!opts.dryRun) deadOps.push({ type: 'del', key: Uint8Array.prototype.slice.call(k) })
          recordsDropped++
          continue
        }
        const loc = decodeLocation(v)
        const p = packs.get(loc.pack)
        if (p) p.live += ENTRY_HEADER_SIZE + loc.storedLength
        liveRecordBytes += ENTRY_HEADER_SIZE + loc.storedLength
        let at = liveRecordsAt.get(loc.pack)
        if (!at) liveRecordsAt.set(loc.pack, (at = new Map()))
        at.set(loc.offset, Uint8Array.prototype.slice.call(k))
      }
      await repo.kv.batch(deadOps, { sync: true })
      deadOps = []
      const deadOf = (p: { rec: { committedLength: number; sealed?: boolean }; live: number }) =>
        Math.max(0, p.rec.committedLength - PACK_HEADER_SIZE - (p.rec.sealed ? FOOTER_SIZE : 0) - p.live)
      const bytesBefore = [...packs.values()].reduce((n, p) => n + p.rec.committedLength, 0)
      const deadBytes = [...packs.values()].reduce((n, p) => n + deadOf(p), 0)

      // ------------------------------------------------------------------ which packs go
      // the open pack too: when it is due for a rewrite it is sealed first, the copies go to a new one
      const due = (p: { rec: PackRecord; live: number }) => {
        const dead = deadOf(p)
        return p.live === 0 || (dead > 0 && p.live / (p.live + dead) < threshold) || p.rec.retired === true
      }
      const open = blocks.openPackNo()
      const op = packs.get(open)
      if (op && due(op) && !opts.dryRun) {
        await blocks.maybeSeal(true)
        op.rec = blocks.packRecords().get(open)!
      }
      const chosen: number[] = []
      const kept: number[] = []
      let deadBytesKept = 0
      for (const [n, p] of [...packs].sort((x, y) => x[0] - y[0])) {
        if (n === blocks.openPackNo() && !(opts.dryRun && due(p))) {
          deadBytesKept += deadOf(p)
          continue
        }
        if (due(p) && (blocks.io.exists(n) || p.live === 0)) chosen.push(n)
        else {
          deadBytesKept += deadOf(p)
          if (blocks.io.exists(n) && deadOf(p) > 0) kept.push(n)
        }
      }
      // too much dead left in packs above the threshold: the deadest of them go too
      kept.sort((a, b) => deadOf(packs.get(b)!) - deadOf(packs.get(a)!))
      for (const n of kept) {
        if (deadBytesKept <= maxUnused * liveBytes) break
        chosen.push(n)
        deadBytesKept -= deadOf(packs.get(n)!)
      }
      chosen.sort((a, b) => a - b)

      let packsDeleted = 0
      let packsRewritten = 0
      let packsSkipped = 0
      let rewrittenBytes = 0
      let newBytes = 0
      let freed = 0
      let damagedLive = 0
      let sweepDone = 0
      if (opts.dryRun) {
        for (const n of chosen) {
          const p = packs.get(n)!
          if (p.live === 0) packsDeleted++
          else packsRewritten++
          rewrittenBytes += p.live
          freed += p.rec.committedLength
        }
      }
      const tRewrite0 = performance.now()
      // pack by pack: the file is read front to back (each entry's checksum checked); a live entry the
      // index places there is copied as it is into the open pack; a dead block's index entry is
      // deleted. A commit (every 64 MiB of copies or 16k deletions, and after each pack) makes the
      // copies durable and moves the index to them; a pack's record goes in the commit after its
      // last copy, and its file after that commit. Memory stays bounded whatever the pack sizes.
      let ops: KVOp[] = []
      let dropPacks: number[] = []
      let pendingCopies = 0
      const commit = async () => {
        await repo.commitWith(ops, { dropPacks })
        for (const n of dropPacks) blocks.io.remove(n)
        ops = []
        dropPacks = []
        pendingCopies = 0
        fullCollection()
      }
      for (const n of opts.dryRun ? [] : chosen) {
        const p = packs.get(n)!
        let copied = 0
        let damaged = !blocks.io.exists(n)
        // dead manifests whose bytes go with this pack: their listing and removal go too
        const goneManifests: CidBytes[] = []
        if (!damaged) {
          let marked = true
          const nodesHere = liveNodesAt.get(n)
          const recordsHere = liveRecordsAt.get(n)
          const scan = scanPack(blocks.io.reader(n), n, {
            end: p.rec.sealed || p.rec.retired ? undefined : p.rec.committedLength,
            sealed: p.rec.sealed && !p.rec.retired,
            footerOptional: p.rec.retired,
            // only what is copied needs its checksum checked
            check: (cid, kind) => (kind === ENTRY_KIND.record ? liveRecordsAt.has(n) : isLive(cid)),
          })
          for (const ev of scan) {
            if (ev.kind === 'damage' || ev.kind === 'bad-header' || ev.kind === 'bad-footer') damaged = true
            if (ev.kind === 'header') marked = ev.version >= 2
            if (ev.kind !== 'entry') continue
            const e = ev.entry
            if (e.kind === ENTRY_KIND.record) {
              // the records the index places here from the snapshot on move with the pack; older
              // ones (and other copies) stay behind
              const key = recordsHere?.get(e.offset)
              if (!key) continue
              const loc = blocks.copyRecordEntry(Uint8Array.prototype.slice.call(e.bytes), e.rawLength, e.codec)
              ops.push({ type: 'put', key, value: encodeLocation(loc) })
              copied += e.bytes.length
              pendingCopies += e.bytes.length
              continue
            }
            // a dead block's index entry went in the pass above
            if (!isLive(e.cid)) {
              const manifest = e.kind === ENTRY_KIND.manifest || (!marked && e.cid[1] === DAG_CBOR && e.codec !== AT_REST.nodeDelta)
              if (manifest) goneManifests.push(Uint8Array.prototype.slice.call(e.cid) as CidBytes)
              continue
            }
            // a node whose index entry names another copy stays where it is: the copy here may be an old
            // one, a delta of a base gc let go (stored anew in the mark). A chunk has no base: any intact
            // copy of it will do, and the index moves to the new one (no lookup per chunk)
            if (blocks.isStaged(e.cid)) continue // a second copy of a chunk already copied
            if (e.cid[1] === DAG_CBOR && !nodesHere?.has(e.offset)) continue
            blocks.copyRawEntry(Uint8Array.prototype.slice.call(e.cid), e.bytes, e.rawLength, e.codec, e.depth)
            copied += e.bytes.length
            pendingCopies += e.bytes.length
            if (pendingCopies >= COMMIT_BYTES || ops.length >= COMMIT_OPS) await commit()
          }
        }
        let keep = false
        if (damaged) {
          // entries the scan could not read: what the index still places in this pack after the copies
          await commit()
          for await (const [k, v] of repo.kv.iterate(blockRange)) {
            if (v.length !== 22 || decodeLocation(v).pack !== n) continue
            // gc never turns damage into loss: the pack stays (verify names the block, repair heals it)
            damagedLive++
            keep = true
          }
        }
        rewrittenBytes += copied
        newBytes += copied
        if (keep) packsSkipped++
        else {
          for (const cid of goneManifests) ops.push({ type: 'del', key: manifestKey(cid) }, { type: 'del', key: removedKey(cid) })
          dropPacks.push(n)
          freed += p.rec.committedLength
          if (copied > 0) packsRewritten++
          else packsDeleted++
        }
        await commit()
        opts.onProgress?.({ phase: 'sweep', done: ++sweepDone, total: chosen.length })
      }
      const tRewrite = performance.now() - tRewrite0
      // pack files no index record names that hold nothing the index lacks: crash leftovers
      let orphansRemoved = 0
      if (!opts.dryRun) {
        for (const n of repo.leftovers) {
          if (blocks.packRecords().has(n)) continue
          blocks.io.remove(n)
          orphansRemoved++
        }
        repo.leftovers = []
      }
      const bytesAfter = [...blocks.packRecords().values()].reduce((n, r) => n + r.committedLength, 0)
      return {
        roots: roots.length,
        liveBlocks,
        liveBytes,
        liveNodeBytes,
        baseOnlyBytes,
        deadBlocks: deadIndexed,
        nodesReencoded: reencoded,
        reencodedBytes,
        packsBefore: packs.size,
        packsAfter: opts.dryRun ? packs.size - packsDeleted : blocks.packRecords().size,
        packsDeleted,
        packsRewritten,
        packsSkipped,
        damagedLiveBlocks: damagedLive,
        rewrittenBytes,
        bytesBefore,
        bytesAfter: opts.dryRun ? bytesBefore - freed + rewrittenBytes : bytesAfter,
        reclaimedBytes: freed - (opts.dryRun ? rewrittenBytes : newBytes),
        deadBytes,
        deadBytesKept,
        orphansRemoved,
        recordsDropped,
        liveRecordBytes,
        recordBytes: repo.recordBytesWritten - recordBytes0,
        dryRun: opts.dryRun === true,
        ms: { mark: tMark, sweep: performance.now() - t0 - tMark, rewrite: tRewrite },
      }
    } finally {
      blocks.setNodeCacheSize(cacheWas)
      await live.close()
      await bases.close()
    }
  })
}

/**
 * Pack files gc cannot judge: set aside by an older version (packs/orphaned) or of format 1 with no
 * index record. They may hold what a lost index knew: CKPT_CATALOG_SUSPECT until a repair takes them
 * back in.
 */
function unlistedPacks(store: CkptStore): void {
  const { repo } = store.internals()
  const io = repo.blocks.io
  const records = repo.blocks.packRecords()
  const unknown = io.list().filter((n) => !records.has(n) && !repo.leftovers.includes(n))
  const aside = io.quarantined()
  if (unknown.length === 0 && aside.length === 0) return
  const what = [...unknown.map((n) => io.describe(n)), ...aside]
  throw suspect(store, `${what.length} pack file${what.length === 1 ? '' : 's'} the index does not list (${what.slice(0, 3).join(', ')}${what.length > 3 ? ', …' : ''}) may hold checkpoints the catalog lost`, { packs: what })
}

/** Manifests (checkpoints) nothing reaches that no removal record explains: the catalog may have lost them. */
async function unexplainedManifests(store: CkptStore, isLive: (cid: CidBytes) => boolean): Promise<void> {
  const { repo } = store.internals()
  const lost: string[] = []
  let count = 0
  for await (const [k] of repo.kv.iterate(manifestRange)) {
    const cid = Uint8Array.prototype.slice.call(k, 1) as CidBytes
    if (isLive(cid) || (await repo.isRemoved(cid))) continue
    count++
    if (lost.length < 5) lost.push(cidToString(cid))
  }
  if (count === 0) return
  throw suspect(store, `${count} checkpoint${count === 1 ? '' : 's'} stored in the packs (${lost.join(', ')}${count > lost.length ? ', …' : ''}) ${count === 1 ? 'is' : 'are'} in no timeline and no removal record explains ${count === 1 ? 'it' : 'them'}`, { checkpoints: lost, count })
}

function suspect(store: CkptStore, what: string, details: Record<string, unknown>): CkptError {
  const advice = `ckpt repair --store ${store.dir} --rebuild-index`
  return new CkptError(
    'CKPT_CATALOG_SUSPECT',
    `gc deletes nothing: ${what}. Rebuild the catalog from the packs first (${advice}); checkpoints that are really unwanted can then be removed with ckpt rm CID`,
    { ...details, advice },
  )
}

/** a node stored anew by gc stays this far under the delta depth ingest allows (25..32) */
const REENCODE_DEPTH = MAX_DELTA_DEPTH - 12
/** decoded nodes gc keeps cached while it walks */
const GC_NODE_CACHE = 768
/** copies made durable (fdatasync + one index batch) at least every this many bytes */
/**
 * A full V8 collection, asked for every so often while gc scans the index: the scan makes garbage
 * (a key and a value per entry) faster than V8 collects its old generation on its own, and peak RSS
 * is one of gc's promises. The flag is V8's own `--expose-gc`, read once; without it this does nothing.
 */
const fullCollection: () => void = (() => {
  try {
    v8.setFlagsFromString('--expose-gc')
    const f = vm.runInNewContext('gc') as unknown
    return typeof f === 'function' ? (f as () => void) : () => {}
  } catch {
    return () => {}
  }
})()
/** index entries (pass 1) or checkpoints (mark) between two full collections */
const COLLECT_EVERY_ENTRIES = 1 << 16
const COLLECT_EVERY_ROOTS = 16
const COMMIT_BYTES = 64 << 20
/** index deletions in one batch, at most */
const COMMIT_OPS = 1 << 14
