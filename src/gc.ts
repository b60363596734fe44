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
 * the old copies; after it, the old pack is an orphan the next open sets aside.
 */
import path from 'node:path'
import { cidEquals, toCID, type CidBytes } from '../codecs/cid.js'
import { AT_REST } from '../codecs/compress.js'
import { CkptError } from '../codecs/errors.js'
import type { Manifest } from '../codecs/manifest.js'
import { deltaBaseCid } from '../codecs/node-delta.js'
import { decodeLocation } from '../store/block-store.js'
import { allCheckpointsRange, blockKey, blockKeyCid, blockRange } from '../store/keys.js'
import type { KVOp } from '../store/kv.js'
import { ENTRY_HEADER_SIZE, FOOTER_SIZE, PACK_HEADER_SIZE } from '../store/pack-format.js'
import { scanPack } from '../store/pack-scan.js'
import { SeenSet } from '../store/seen-set.js'
import fs from 'node:fs'
import { changedSlots, childCid } from './node-compare.js'
import { Geometry } from './region-tree.js'
import type { CkptStore } from './store.js'

export interface GcOptions {
  /** rewrite packs whose live share is below this (0..1, default 0.5); 0 rewrites none, 1 all but full ones */
  threshold?: number
  /** only report what would be reclaimed */
  dryRun?: boolean
  onProgress?: (p: { phase: 'mark' | 'sweep'; done: number; total: number }) => void
}

export interface GcSummary {
  roots: number
  liveBlocks: number
  /** pack bytes of live entries */
  liveBytes: number
  packsBefore: number
  packsAfter: number
  packsDeleted: number
  packsRewritten: number
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
  dryRun: boolean
  ms: { mark: number; sweep: number }
}

export async function collectGarbage(store: CkptStore, opts: GcOptions = {}): Promise<GcSummary> {
  const threshold = opts.threshold ?? 0.5
  if (typeof threshold !== 'number' || !(threshold >= 0 && threshold <= 1)) throw new CkptError('CKPT_BAD_ARGUMENT', 'gc threshold must be between 0 and 1', { threshold })
  return store.exclusive(async () => {
    const { repo } = store.internals()
    const blocks = repo.blocks
    const t0 = performance.now()
    const tmp = repo.memory ? undefined : path.join(repo.dir, 'tmp', `gc-${process.pid}-${Date.now().toString(36)}`)
    const live = await SeenSet.create(tmp, blocks.count)
    // bases of live deltas kept for their own sake, apart from `live`: a node in `live` has had its
    // whole subtree marked, a base alone has not (a later tree holding that node must still walk it)
    const bases = await SeenSet.create(tmp && `${tmp}-bases`, 1024)
    const isLive = (cid: CidBytes) => live.has(cid) || bases.has(cid)
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
      const walk = (cid: CidBytes | null, base: CidBytes | null, level: number) => {
        if (!cid || (base && cidEquals(cid, base)) || live.has(cid)) return
        live.add(cid)
        markChain(cid)
        const e = blocks.getNode(cid)
        const be = base ? blocks.getNode(base) : undefined
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
        opts.onProgress?.({ phase: 'mark', done: ++done, total: roots.length })
      }
      await live.flush(true)
      await bases.flush(true)
      const tMark = performance.now() - t0

      // ------------------------------------------------------------------ sweep: live bytes per pack
      const packs = new Map([...blocks.packRecords()].map(([n, r]) => [n, { rec: r, live: 0 }]))
      let liveBlocks = 0
      let liveBytes = 0
      for await (const [k, v] of repo.kv.iterate(blockRange)) {
        if (v.length !== 22) continue
        const loc = decodeLocation(v)
        if (!isLive(blockKeyCid(k))) continue
        liveBlocks++
        liveBytes += ENTRY_HEADER_SIZE + loc.storedLength
        const p = packs.get(loc.pack)
        if (p) p.live += ENTRY_HEADER_SIZE + loc.storedLength
      }
      const deadOf = (p: { rec: { committedLength: number; sealed?: boolean }; live: number }) =>
        Math.max(0, p.rec.committedLength - PACK_HEADER_SIZE - (p.rec.sealed ? FOOTER_SIZE : 0) - p.live)
      const bytesBefore = [...packs.values()].reduce((n, p) => n + p.rec.committedLength, 0)
      const deadBytes = [...packs.values()].reduce((n, p) => n + deadOf(p), 0)
      // the open pack too: when it is due for a rewrite it is sealed first, the copies go to a new one
      let open = blocks.openPackNo()
      const op = packs.get(open)
      const opDead = op ? deadOf(op) : 0
      if (op && !opts.dryRun && opDead > 0 && op.live / (op.live + opDead) < threshold) {
        await blocks.maybeSeal(true)
        op.rec = blocks.packRecords().get(open)!
        open = -1
      } else if (opts.dryRun) open = -1
      let packsDeleted = 0
      let packsRewritten = 0
      let rewrittenBytes = 0
      let deadBytesKept = 0
      let newBytes = 0
      let freed = 0
      let sweepDone = 0
      const todo = [...packs].filter(([n]) => n !== open).sort((a, b) => a[0] - b[0])
      for (const [n, p] of todo) {
        const size = p.rec.committedLength
        const dead = deadOf(p)
        // the live share of the pack's entry bytes (headers and footers are neither)
        const share = p.live + dead > 0 ? p.live / (p.live + dead) : 0
        const rewrite = p.live === 0 || (dead > 0 && share < threshold) || p.rec.retired === true
        if (!rewrite) {
          deadBytesKept += dead
          continue
        }
        if (opts.dryRun) {
          if (p.live === 0) packsDeleted++
          else {
            packsRewritten++
            rewrittenBytes += p.live
          }
          freed += size - p.live
          continue
        }
        // copy the live entries the index places here; drop the index entries of the dead ones
        const ops: KVOp[] = []
        let copied = 0
        let damaged = !blocks.io.exists(n) || p.rec.retired === true
        if (blocks.io.exists(n)) {
          for (const ev of scanPack(blocks.io.reader(n), n, { end: p.rec.sealed || p.rec.retired ? undefined : size, sealed: p.rec.sealed && !p.rec.retired, footerOptional: p.rec.retired })) {
            if (ev.kind === 'damage' || ev.kind === 'bad-footer' || ev.kind === 'bad-header') damaged = true
            if (ev.kind !== 'entry') continue
            const e = ev.entry
            const indexed = blocks.locate(e.cid)
            if (!indexed || indexed.pack !== n || indexed.offset !== e.offset) continue
            if (isLive(e.cid)) {
              blocks.copyEntry(Uint8Array.prototype.slice.call(e.cid), e)
              copied += ENTRY_HEADER_SIZE + e.storedLength
            } else ops.push({ type: 'del', key: blockKey(e.cid) })
          }
        }
        // a damaged pack: index entries still placing blocks in it (ones the scan could not reach) go too
        if (damaged) {
          for await (const [k, v] of repo.kv.iterate(blockRange)) {
            if (v.length === 22 && decodeLocation(v).pack === n && !blocks.isStaged(blockKeyCid(k))) ops.push({ type: 'del', key: Uint8Array.prototype.slice.call(k) })
          }
        }
        await repo.commitWith(ops, { dropPack: n })
        blocks.io.remove(n)
        if (copied > 0) {
          packsRewritten++
          rewrittenBytes += copied
          newBytes += copied
        } else packsDeleted++
        freed += size
        opts.onProgress?.({ phase: 'sweep', done: ++sweepDone, total: todo.length })
      }
      let orphansRemoved = 0
      if (!opts.dryRun) {
        for (const q of blocks.io.quarantined()) {
          fs.rmSync(q, { force: true })
          orphansRemoved++
        }
      }
      const bytesAfter = [...blocks.packRecords().values()].reduce((n, r) => n + r.committedLength, 0)
      return {
        roots: roots.length,
        liveBlocks,
        liveBytes,
        packsBefore: packs.size,
        packsAfter: opts.dryRun ? packs.size - packsDeleted : blocks.packRecords().size,
        packsDeleted,
        packsRewritten,
        rewrittenBytes,
        bytesBefore,
        bytesAfter: opts.dryRun ? bytesBefore - freed + rewrittenBytes : bytesAfter,
        reclaimedBytes: freed - (opts.dryRun ? rewrittenBytes : newBytes),
        deadBytes,
        deadBytesKept,
        orphansRemoved,
        dryRun: opts.dryRun === true,
        ms: { mark: tMark, sweep: performance.now() - t0 - tMark },
      }
    } finally {
      await live.close()
      await bases.close()
    }
  })
}
