/**
 * The pack side of garbage collection (SPEC.md §14), once the caller has marked what is live:
 *
 *   sweep     one pass over the index takes dead blocks out of it and sums live bytes per pack;
 *   snapshot  the catalog is written to the packs as a snapshot when it changed since the last, so
 *             older catalog records are dead too (their bytes counted like dead blocks');
 *   plan      the caller may have staged (not committed) nodes stored anew, so that the delta bases
 *             of removed checkpoints can go: two plans are weighed, with them (the bases dead, the
 *             nodes' old copies dead, their new bytes a cost) and without them (the bases live).
 *             The one that reclaims more is carried out: the staged nodes are committed, or dropped.
 *             When neither plan rewrites anything, nothing is written at all (no snapshot either):
 *             a gc that reclaims nothing never makes the store grow;
 *   choose    a pack is due when nothing in it is live, its live share is under the threshold, or it
 *             is retired; then the deadest others while dead bytes left exceed maxUnused of live.
 *             The open pack is a pack like the others: when it is due it is sealed, then rewritten;
 *   rewrite   each due pack is read front to back and its live entries (blocks, the records from
 *             the snapshot on) are copied byte for byte into the open pack; a commit moves the index
 *             to the copies and drops the pack's record, and only then is its file deleted.
 *
 * gc never turns damage into loss: a due pack in which a live entry does not read back intact stays.
 * Memory is bounded whatever the store's size: the live set is the caller's (a SeenSet), here only
 * the offsets of live nodes and records per pack, and at most 64 MiB / 16,384 operations uncommitted.
 */
import { DAG_CBOR, type CidBytes } from '../codecs/cid.js'
import { AT_REST } from '../codecs/compress.js'
import { decodeLocation, encodeLocation, type BlockStore, type PackRecord } from './block-store.js'
import { restageChunkDeltas } from './chunk-gc.js'
import { fullCollection } from './heap.js'
import { Slices } from './slices.js'
import { blockKeyCid, blockRange, manifestKey, META_CHUNK_DELTAS, metaKey, recordKeySeq, recordRange, removedKey } from './keys.js'
import type { KV, KVOp } from './kv.js'
import { ENTRY_HEADER_SIZE, ENTRY_KIND, FOOTER_SIZE, PACK_HEADER_SIZE, writeEntryHeader } from '../codecs/pack-format.js'
import { scanPack, type ScannedEntry } from './pack-scan.js'

export interface PackGcOptions {
  /** whether a block is live (marked, or a base a live delta needs); `at`: the CID is at cid[at] */
  isLive: (cid: Uint8Array, at?: number) => boolean
  /** whether a live block is live only as a delta base (reported, dry runs); `at` as for isLive */
  isBaseOnly: (cid: Uint8Array, at?: number) => boolean
  /** marks a chunk live only as the base of a live chunk delta staged anew (store/chunk-gc.ts) */
  keepBase: (cid: CidBytes) => void
  threshold: number
  maxUnused: number
  dryRun: boolean
  onProgress?: (p: { phase: 'sweep'; done: number; total: number }) => void
  /**
   * The caller's staged nodes (stored anew, not committed) were dropped: the plan that keeps their
   * delta bases reclaims more (or nothing is reclaimed at all).
   */
  onStagedDropped?: () => void
}

export interface PackGcSummary {
  liveBlocks: number
  liveBytes: number
  liveNodeBytes: number
  baseOnlyBytes: number
  deadBlocks: number
  packsBefore: number
  packsAfter: number
  packsDeleted: number
  packsRewritten: number
  packsSkipped: number
  damagedLiveBlocks: number
  rewrittenBytes: number
  bytesBefore: number
  bytesAfter: number
  reclaimedBytes: number
  deadBytes: number
  deadBytesKept: number
  orphansRemoved: number
  /** live chunk deltas whose base was dead, stored anew (store/chunk-gc.ts); 0 when the plan dropped them */
  chunksReencoded: number
  chunkReencodedBytes: number
  recordsDropped: number
  liveRecordBytes: number
  recordBytes: number
  /** the rewrite's share of the time, ms */
  rewriteMs: number
  /** the CPU time the rewrite took (all of the process's threads), ms */
  rewriteCpuMs: number
}

/** What pack gc needs of the repository besides its index and blocks. */
export interface PackGcHost {
  readonly kv: KV
  readonly blocks: BlockStore
  readonly catalogPosition: { seq: number; snapshot: number } | undefined
  readonly recordBytesWritten: number
  leftovers: number[]
  writeSnapshot(): Promise<number>
  commitWith(extra: KVOp[], opts?: { dropPacks?: number[] }): Promise<void>
}

/** copies made durable (fdatasync + one index batch) at least every this many bytes */
const COMMIT_BYTES = 64 << 20
/** index operations in one batch, at most (the caller's; the copies' own are counted apart) */
const COMMIT_OPS = 1 << 14
/** copies in one batch, at most (an index entry each) */
const COMMIT_COPIES = 1 << 16
/** the copies start going to disk (fdatasync in the background) every this many bytes, so a commit has little left to wait for */
const SYNC_EARLY_BYTES = 16 << 20
/** index entries between two full V8 collections while the index is scanned */
const COLLECT_EVERY_ENTRIES = 1 << 16

interface PackState {
  rec: PackRecord
  /** entry bytes live whatever the plan */
  live: number
  /** entry bytes live only while the staged nodes are not committed: delta bases, the nodes' old copies */
  cond: number
  /** entry bytes of the catalog records a snapshot now would leave live (for the plans) */
  recLive: number
}

/** What a plan would do: the packs it rewrites or deletes, the dead bytes it leaves, the bytes it gains. */
interface Plan {
  chosen: number[]
  deadKept: number
  gain: number
}

export async function collectPacks(host: PackGcHost, opts: PackGcOptions): Promise<PackGcSummary> {
  return new PackCollector(host, opts).run()
}

class PackCollector {
  private readonly packs: Map<number, PackState>
  private readonly blocks: BlockStore
  private readonly s: PackGcSummary
  /** one read window for the scans of every pack rewritten, one after the other */
  private readonly window = { buf: Buffer.alloc(0) }
  /** where the index places each live node, per pack (a node's other copies stay put) */
  private readonly liveNodesAt = new Map<number, Set<number>>()
  /** the nodes live only without the staged ones (delta bases, the old copies of nodes stored anew), per pack */
  private readonly condNodesAt = new Map<number, Set<number>>()
  /** where the staged nodes are (the open pack) */
  private readonly stagedNodesAt = new Map<number, Set<number>>()
  /** index keys of the blocks live only as delta bases: deleted once the staged nodes are committed */
  private baseKeys = new KeyList()
  /** entry bytes of the staged nodes' old copies (liveBytes counts them until the plan is known) */
  private stagedOld = 0
  private stagedNew = 0
  /** the live records' keys by offset, per pack */
  private readonly liveRecordsAt = new Map<number, Map<number, Uint8Array>>()
  private snapshot = 0
  /** whether the plan carried out drops the delta bases (the staged nodes committed) */
  private basesDead = false
  /** blocks live only as delta bases */
  private bases = 0
  /** whether the plan was carried out (the counts hold its choice) */
  private carried = false

  constructor(
    private readonly host: PackGcHost,
    private readonly opts: PackGcOptions,
  ) {
    this.blocks = host.blocks
    // a pack the staged nodes started holds nothing committed yet: it joins once they are
    this.packs = new Map([...this.blocks.packRecords()].filter(([, r]) => r.committedLength > 0 || r.sealed).map(([n, r]) => [n, { rec: r, live: 0, cond: 0, recLive: 0 }]))
    this.s = {
      liveBlocks: 0,
      liveBytes: 0,
      liveNodeBytes: 0,
      baseOnlyBytes: 0,
      deadBlocks: 0,
      packsBefore: this.packs.size,
      packsAfter: 0,
      packsDeleted: 0,
      packsRewritten: 0,
      packsSkipped: 0,
      damagedLiveBlocks: 0,
      rewrittenBytes: 0,
      bytesBefore: [...this.packs.values()].reduce((n, p) => n + p.rec.committedLength, 0),
      bytesAfter: 0,
      reclaimedBytes: 0,
      deadBytes: 0,
      deadBytesKept: 0,
      orphansRemoved: 0,
      chunksReencoded: 0,
      chunkReencodedBytes: 0,
      recordsDropped: 0,
      liveRecordBytes: 0,
      recordBytes: 0,
      rewriteMs: 0,
      rewriteCpuMs: 0,
    }
  }

  async run(): Promise<PackGcSummary> {
    const recordBytes0 = this.host.recordBytesWritten
    // a store that never held a chunk delta has none to look for (one pass over the index saved)
    if (await this.host.kv.get(metaKey(META_CHUNK_DELTAS))) {
      const chunks = await restageChunkDeltas(this.host.kv, this.blocks, this.opts)
      this.s.chunksReencoded = chunks.reencoded
      this.s.chunkReencodedBytes = chunks.reencodedBytes
    }
    await this.sweep()
    const willSnapshot = !this.opts.dryRun && this.host.catalogPosition !== undefined && this.host.catalogPosition.seq > (this.host.catalogPosition.snapshot ?? 0)
    await this.recordsForPlans(willSnapshot)
    const mode = this.weigh()
    // the sweep's garbage goes before the commit of the staged nodes makes its own (peak RSS)
    fullCollection()
    await this.carryOut(mode)
    fullCollection()
    if (mode !== 'none' && willSnapshot) await this.writeSnapshot()
    await this.records()
    this.s.deadBytes = [...this.packs.values()].reduce((n, p) => n + this.deadOf(p), 0)
    const chosen = mode === 'none' ? this.keepAll() : await this.choose()
    const t = performance.now()
    const cpu = process.cpuUsage()
    let freed = 0
    if (this.opts.dryRun) freed = this.wouldRewrite(chosen)
    else if (chosen.length) freed = await this.rewrite(chosen)
    this.s.rewriteMs = performance.now() - t
    const used = process.cpuUsage(cpu)
    this.s.rewriteCpuMs = (used.user + used.system) / 1000
    if (!this.opts.dryRun) this.deleteLeftovers()
    // the index's files keep the entries gc deleted or moved until LevelDB compacts them: now, so the
    // store is as small on disk as its packs say
    if (!this.opts.dryRun && (chosen.length > 0 || this.s.deadBlocks > 0)) await this.host.kv.compact?.()
    const after = [...this.blocks.packRecords().values()].reduce((n, r) => n + r.committedLength, 0)
    this.s.packsAfter = this.opts.dryRun ? this.packs.size - this.s.packsDeleted : this.blocks.packRecords().size
    this.s.bytesAfter = this.opts.dryRun ? this.s.bytesBefore - freed + this.s.rewrittenBytes : after
    // what the store shrank by: the nodes stored anew and the snapshot gc wrote count against it
    this.s.reclaimedBytes = this.s.bytesBefore - this.s.bytesAfter
    this.s.recordBytes = this.host.recordBytesWritten - recordBytes0
    return this.s
  }

  /** Entry bytes of a pack nothing live reaches (headers and footers count for neither). */
  private deadOf(p: PackState, live = p.live): number {
    return Math.max(0, p.rec.committedLength - PACK_HEADER_SIZE - (p.rec.sealed ? FOOTER_SIZE : 0) - live)
  }

  private nodeAt(m: Map<number, Set<number>>, pack: number, offset: number): void {
    let at = m.get(pack)
    if (!at) m.set(pack, (at = new Set()))
    at.add(offset)
  }

  /**
   * One pass over the index: a dead block's entry goes (its bytes go when its pack is rewritten), so
   * nothing (a later checkpoint's dedup, verify) relies on a block whose delta base may be gone; live
   * bytes are summed per pack. A dead manifest keeps its listing and removal while its bytes are in a
   * pack: a rebuild finds them there, and must know them removed. Blocks live only as delta bases,
   * and the old copies of the nodes the caller staged anew, are set apart: which of them stay
   * depends on the plan.
   */
  private async sweep(): Promise<void> {
    const { isLive, isBaseOnly, dryRun } = this.opts
    const blocks = this.blocks
    let deadOps: KVOp[] = []
    let scanned = 0
    for await (const [k, v] of this.host.kv.iterate(blockRange)) {
      if (++scanned % COLLECT_EVERY_ENTRIES === 0) fullCollection()
      if (v.length !== 22) continue
      const loc = decodeLocation(v)
      const cid = blockKeyCid(k)
      const bytes = ENTRY_HEADER_SIZE + loc.storedLength
      if (!isLive(cid)) {
        if (dryRun) continue
        deadOps.push({ type: 'del', key: Uint8Array.prototype.slice.call(k) })
        this.s.deadBlocks++
        if (deadOps.length >= COMMIT_OPS) {
          await this.host.kv.batch(deadOps)
          deadOps = []
        }
        continue
      }
      const p = this.packs.get(loc.pack)
      if (isBaseOnly(cid)) {
        // live only as the base of a live delta: needed while that delta is what the index holds
        this.s.baseOnlyBytes += bytes
        this.bases++
        if (p) p.cond += bytes
        this.nodeAt(this.condNodesAt, loc.pack, loc.offset)
        if (!dryRun) this.baseKeys.push(k)
        continue
      }
      this.s.liveBlocks++
      this.s.liveBytes += bytes
      if (cid[1] !== DAG_CBOR) {
        const staged = loc.codec === AT_REST.chunkDelta && blocks.isStaged(cid) ? blocks.locate(cid) : undefined
        if (staged) {
          // a chunk delta stored anew (its base was dead): the old copy stays only if the new one is dropped
          if (p) p.cond += bytes
          this.stagedOld += bytes
          this.stagedNew += ENTRY_HEADER_SIZE + staged.storedLength
        } else if (p) p.live += bytes
        continue
      }
      this.s.liveNodeBytes += bytes
      const staged = blocks.isStaged(cid) ? blocks.locate(cid) : undefined
      if (staged) {
        // stored anew by the caller (not committed): the old copy stays only if the new one is dropped
        if (p) p.cond += bytes
        this.nodeAt(this.condNodesAt, loc.pack, loc.offset)
        this.nodeAt(this.stagedNodesAt, staged.pack, staged.offset)
        this.stagedOld += bytes
        this.stagedNew += ENTRY_HEADER_SIZE + staged.storedLength
      } else {
        if (p) p.live += bytes
        this.nodeAt(this.liveNodesAt, loc.pack, loc.offset)
      }
    }
    await this.host.kv.batch(deadOps, { sync: true })
  }

  /**
   * The records' live bytes per pack as the plans see them: with a snapshot to write, every record
   * there is now is dead once it is written; else those from the newest snapshot on are live.
   */
  private async recordsForPlans(willSnapshot: boolean): Promise<void> {
    const from = willSnapshot ? Number.POSITIVE_INFINITY : (this.host.catalogPosition?.snapshot ?? 0)
    for await (const [k, v] of this.host.kv.iterate(recordRange)) {
      if (v.length !== 22 || recordKeySeq(k).seq < from) continue
      const loc = decodeLocation(v)
      const p = this.packs.get(loc.pack)
      if (p) p.recLive += ENTRY_HEADER_SIZE + loc.storedLength
    }
  }

  /**
   * Packs due, in pack order, and what rewriting them gains, with the delta bases dead (the staged
   * nodes committed: their bytes a cost) or live (dropped). Pure arithmetic.
   */
  private plan(basesDead: boolean): Plan {
    const liveOf = (p: PackState) => p.live + p.recLive + (basesDead ? 0 : p.cond)
    let liveBytes = this.s.liveBytes + this.s.liveRecordBytes
    for (const p of this.packs.values()) liveBytes += p.recLive
    if (!this.carried) liveBytes += basesDead ? this.stagedNew - this.stagedOld : this.s.baseOnlyBytes
    const chosen: number[] = []
    const kept: { n: number; dead: number }[] = []
    let deadKept = 0
    let gain = basesDead ? -this.stagedNew : 0
    for (const [n, p] of [...this.packs].sort((x, y) => x[0] - y[0])) {
      const live = liveOf(p)
      const dead = this.deadOf(p, live)
      if (this.due(p, live, dead) && (this.blocks.io.exists(n) || live === 0)) {
        chosen.push(n)
        gain += p.rec.committedLength - live
      } else {
        deadKept += dead
        if (this.blocks.io.exists(n) && dead > 0) kept.push({ n, dead })
      }
    }
    // too much dead left in packs above the threshold: the deadest of them go too
    kept.sort((a, b) => b.dead - a.dead)
    for (const k of kept) {
      if (deadKept <= this.opts.maxUnused * liveBytes) break
      chosen.push(k.n)
      deadKept -= k.dead
      gain += this.packs.get(k.n)!.rec.committedLength - liveOf(this.packs.get(k.n)!)
    }
    return { chosen: chosen.sort((a, b) => a - b), deadKept, gain }
  }

  /**
   * Which plan is carried out: with the staged nodes ('dead': their delta bases go), without them
   * ('live'), or none when neither rewrites a pack. A dry run stores nothing anew: its bases stay live.
   */
  private weigh(): 'dead' | 'live' | 'none' {
    const live = this.plan(false)
    if (this.opts.dryRun) return 'live'
    const staged = this.blocks.stagedEntryCount > 0 || this.baseKeys.length > 0
    const dead = staged ? this.plan(true) : live
    if (dead.chosen.length && dead.gain >= live.gain) return 'dead'
    if (live.chosen.length) return 'live'
    return 'none'
  }

  /** The plan's effect on the index and the counts: staged nodes committed (bases unindexed) or dropped. */
  private async carryOut(mode: 'dead' | 'live' | 'none'): Promise<void> {
    this.basesDead = mode === 'dead'
    if (this.basesDead) {
      // the nodes stored anew are durable, and the index names them, before anything is deleted
      if (this.blocks.stagedEntryCount > 0) await this.host.commitWith([])
      this.refreshOpen()
      for (const [n, at] of this.stagedNodesAt) for (const o of at) this.nodeAt(this.liveNodesAt, n, o)
      const open = this.packs.get(this.blocks.openPackNo())
      if (open) open.live += this.stagedNew
      this.s.liveBytes += this.stagedNew - this.stagedOld
      // then the bases no live node needs any more leave the index (a crash before: indexed garbage)
      for (let i = 0; i < this.baseKeys.length; i += COMMIT_OPS) {
        await this.host.kv.batch(this.baseKeys.slice(i, i + COMMIT_OPS).map((key) => ({ type: 'del' as const, key })), { sync: i + COMMIT_OPS >= this.baseKeys.length })
      }
      this.s.deadBlocks += this.baseKeys.length
    } else {
      if (this.blocks.stagedEntryCount > 0 || this.stagedNew > 0) {
        this.blocks.abort()
        this.opts.onStagedDropped?.()
        this.s.chunksReencoded = 0
        this.s.chunkReencodedBytes = 0
      }
      for (const [n, at] of this.condNodesAt) for (const o of at) this.nodeAt(this.liveNodesAt, n, o)
      for (const p of this.packs.values()) p.live += p.cond
      this.s.liveBytes += this.s.baseOnlyBytes
      this.s.liveBlocks += this.bases
    }
    this.carried = true
    for (const p of this.packs.values()) p.cond = 0
    this.baseKeys = new KeyList()
    this.stagedNodesAt.clear()
    this.condNodesAt.clear()
  }

  /** The open pack's record as the block store now has it (it may have been started, or grown, by gc's commits). */
  private refreshOpen(): void {
    const open = this.blocks.openPackNo()
    const rec = open >= 0 ? this.blocks.packRecords().get(open) : undefined
    if (!rec || rec.committedLength === 0) return
    const p = this.packs.get(open)
    if (p) p.rec = rec
    else this.packs.set(open, { rec, live: 0, cond: 0, recLive: 0 })
  }

  /**
   * The catalog as one snapshot in the packs (it changed since the last): records older than it are
   * dead (out of the index now, their bytes going with their packs).
   */
  private async writeSnapshot(): Promise<void> {
    await this.host.writeSnapshot()
    this.refreshOpen()
  }

  /** The records from the newest snapshot on are live bytes of their packs; older ones leave the index. */
  private async records(): Promise<void> {
    const host = this.host
    this.snapshot = host.catalogPosition?.snapshot ?? 0
    const deadOps: KVOp[] = []
    for await (const [k, v] of host.kv.iterate(recordRange)) {
      if (v.length !== 22) continue
      if (recordKeySeq(k).seq < this.snapshot) {
        if (!this.opts.dryRun) deadOps.push({ type: 'del', key: Uint8Array.prototype.slice.call(k) })
        this.s.recordsDropped++
        continue
      }
      const loc = decodeLocation(v)
      const p = this.packs.get(loc.pack)
      if (p) p.live += ENTRY_HEADER_SIZE + loc.storedLength
      this.s.liveRecordBytes += ENTRY_HEADER_SIZE + loc.storedLength
      let at = this.liveRecordsAt.get(loc.pack)
      if (!at) this.liveRecordsAt.set(loc.pack, (at = new Map()))
      at.set(loc.offset, Uint8Array.prototype.slice.call(k))
    }
    for (const p of this.packs.values()) p.recLive = 0
    await host.kv.batch(deadOps, { sync: true })
  }

  private due(p: PackState, live = p.live, dead = this.deadOf(p)): boolean {
    return live === 0 || (dead > 0 && live / (live + dead) < this.opts.threshold) || p.rec.retired === true
  }

  /** No pack is rewritten: every dead byte is kept. */
  private keepAll(): number[] {
    for (const p of this.packs.values()) this.s.deadBytesKept += this.deadOf(p)
    return []
  }

  /** The packs to rewrite or delete, in pack order (the final plan). The open pack, when chosen, is sealed first. */
  private async choose(): Promise<number[]> {
    const { chosen, deadKept } = this.plan(this.basesDead)
    this.s.deadBytesKept = deadKept
    const open = this.blocks.openPackNo()
    if (open >= 0 && chosen.includes(open) && !this.opts.dryRun) {
      await this.blocks.maybeSeal(true)
      this.packs.get(open)!.rec = this.blocks.packRecords().get(open)!
    }
    return chosen
  }

  /** A dry run's figures for the chosen packs: the bytes freed. */
  private wouldRewrite(chosen: number[]): number {
    let freed = 0
    for (const n of chosen) {
      const p = this.packs.get(n)!
      if (p.live === 0) this.s.packsDeleted++
      else this.s.packsRewritten++
      this.s.rewrittenBytes += p.live
      freed += p.rec.committedLength
    }
    return freed
  }

  /**
   * Pack by pack, front to back (the checksum of every entry copied checked): live entries the index
   * places there are copied as they are into the open pack. A commit (every 64 MiB of copies or
   * 16,384 operations, and after each pack) makes the copies durable and moves the index to them; a
   * pack's record goes in the commit after its last copy, and its file after that commit.
   */
  private async rewrite(chosen: number[]): Promise<number> {
    const w = new Rewriter(this.host)
    let freed = 0
    let done = 0
    for (const n of chosen) {
      const p = this.packs.get(n)!
      const r = await this.copyLive(w, n, p)
      this.s.rewrittenBytes += r.copied
      if (r.keep) this.s.packsSkipped++
      else {
        // the pack's record goes with the next commit (its copies are in it), its file after that
        for (const cid of r.goneManifests) w.ops.push({ type: 'del', key: manifestKey(cid) }, { type: 'del', key: removedKey(cid) })
        w.dropPacks.push(n)
        freed += p.rec.committedLength
        if (r.copied > 0) this.s.packsRewritten++
        else this.s.packsDeleted++
      }
      if (w.due()) await w.commit()
      this.opts.onProgress?.({ phase: 'sweep', done: ++done, total: chosen.length })
    }
    await w.commit()
    return freed
  }

  /** The live entries of one pack copied; whether the pack must stay (damage a live entry sits in). */
  private async copyLive(w: Rewriter, n: number, p: PackState): Promise<{ copied: number; keep: boolean; goneManifests: CidBytes[] }> {
    const blocks = this.blocks
    const { isLive } = this.opts
    let copied = 0
    let damaged = !blocks.io.exists(n)
    // dead manifests whose bytes go with this pack: their listing and removal go too
    const goneManifests: CidBytes[] = []
    if (!damaged) {
      let marked = true
      // the copy of a pack's live entries hands the event loop back every slice (see gc's mark)
      const slices = new Slices()
      const nodesHere = this.liveNodesAt.get(n)
      const recordsHere = this.liveRecordsAt.get(n)
      const scan = scanPack(blocks.io.reader(n), n, {
        end: p.rec.sealed || p.rec.retired ? undefined : p.rec.committedLength,
        sealed: p.rec.sealed && !p.rec.retired,
        footerOptional: p.rec.retired,
        window: this.window,
        // only what is copied needs its checksum checked: a live chunk, a live node where the index places it
        check: (buf, at, kind, offset) => (kind === ENTRY_KIND.record ? recordsHere !== undefined : buf[at + 1] === DAG_CBOR ? nodesHere?.has(offset) === true : this.chunkWanted(buf, at, n, offset)),
      })
      for (const ev of scan) {
        if (slices.due()) await slices.next()
        if (ev.kind === 'damage' || ev.kind === 'bad-header' || ev.kind === 'bad-footer') damaged = true
        if (ev.kind === 'header') marked = ev.version >= 2
        if (ev.kind !== 'entry') continue
        const e = ev.entry
        // the entry's CID is read where it lies (no view of it made): scanPack's entries say where
        const buf = e.buf ?? e.bytes
        const cidAt = (e.at ?? 0) + 12
        const node = buf[cidAt + 1] === DAG_CBOR
        if (e.kind === ENTRY_KIND.record) {
          // the records the index places here (from the snapshot on) move; older ones and other copies stay behind
          const key = recordsHere?.get(e.offset)
          if (!key) continue
          const loc = blocks.copyEntry(e.bytes, e)
          w.ops.push({ type: 'put', key, value: encodeLocation(loc) })
        } else if (!(e.wanted ?? (node ? isLive(buf, cidAt) : this.chunkWanted(buf, cidAt, n, e.offset)))) {
          // not copied (the scan's check said so, its checksum was then not checked): dead, or a node
          // the index places elsewhere
          const manifest = e.kind === ENTRY_KIND.manifest || (!marked && node && e.codec !== AT_REST.nodeDelta)
          if (manifest && !isLive(buf, cidAt)) goneManifests.push(Uint8Array.prototype.slice.call(e.cid) as CidBytes)
          continue
        } else {
          // a node whose index entry names another copy stays where it is (that copy may be an old
          // one, a delta of a base gc let go); any intact copy of a chunk will do
          if (node ? !nodesHere?.has(e.offset) : blocks.isStaged(buf, cidAt)) continue
          // a manifest of a version-1 pack (kind 0) is marked as one where it goes (kind 1): the
          // packs alone must still tell it from a tree node once its old pack is gone
          const unmarkedManifest = !marked && node && e.codec !== AT_REST.nodeDelta && (await this.host.kv.get(manifestKey(e.cid))) !== undefined
          if (unmarkedManifest) blocks.copyEntry(markManifest(e), { rawLength: e.rawLength, codec: e.codec, depth: e.depth, kind: ENTRY_KIND.manifest })
          else blocks.copyEntry(e.bytes, e)
        }
        const size = ENTRY_HEADER_SIZE + e.storedLength
        copied += size
        w.copied(size)
        if (w.due()) await w.commit()
      }
    }
    let keep = false
    if (damaged) {
      // what the index still places in this pack after the copies: gc never turns damage into loss
      await w.commit()
      for await (const [, v] of this.host.kv.iterate(blockRange)) {
        if (v.length !== 22 || decodeLocation(v).pack !== n) continue
        this.s.damagedLiveBlocks++
        keep = true
      }
    }
    return { copied, keep, goneManifests }
  }

  /**
   * Whether the chunk entry whose CID is at buf[at] (pack n, `offset`) is copied: a live chunk stored
   * whole, any intact copy; one stored as a chunk delta, only where the index places it (a copy staged
   * anew replaced it, its base may be going); in the plan that drops them, not a base a delta stored
   * anew no longer needs.
   */
  private chunkWanted(buf: Uint8Array, at: number, n: number, offset: number): boolean {
    const { isLive, isBaseOnly } = this.opts
    if (!isLive(buf, at) || (this.basesDead && isBaseOnly(buf, at))) return false
    if (buf[at - 4] !== AT_REST.chunkDelta) return true
    const loc = this.blocks.locate(buf.subarray(at, at + 36))
    return loc !== undefined && loc.pack === n && loc.offset === offset
  }

  /** Pack files no index record names that hold nothing the index lacks (crash leftovers). */
  private deleteLeftovers(): void {
    for (const n of this.host.leftovers) {
      if (this.blocks.packRecords().has(n)) continue
      this.blocks.io.remove(n)
      this.s.orphansRemoved++
    }
    this.host.leftovers = []
  }
}

/** Index keys of one length (block keys), packed in one growing buffer: a few bytes each, not an object each. */
class KeyList {
  private buf = new Uint8Array(0)
  private size = 0
  private width = 0
  length = 0

  push(key: Uint8Array): void {
    if (this.length === 0) this.width = key.length
    if (key.length !== this.width) throw new Error('KeyList: keys of one length only')
    if (this.size + key.length > this.buf.length) {
      const next = new Uint8Array(Math.max(1 << 16, this.buf.length * 2))
      next.set(this.buf.subarray(0, this.size))
      this.buf = next
    }
    this.buf.set(key, this.size)
    this.size += key.length
    this.length++
  }

  /** Copies of keys [from, to). */
  slice(from: number, to: number): Uint8Array[] {
    const out: Uint8Array[] = []
    for (let i = from; i < Math.min(to, this.length); i++) out.push(this.buf.slice(i * this.width, (i + 1) * this.width))
    return out
  }
}

/**
 * The copies of a rewrite not yet committed, and the packs whose records go with the next commit.
 * Copies go to disk in the background as they are made (an fdatasync every SYNC_EARLY_BYTES), so the
 * commit's own fdatasync, which makes them durable, has little left to do.
 */
class Rewriter {
  ops: KVOp[] = []
  dropPacks: number[] = []
  pending = 0
  private unsynced = 0
  private syncs: Promise<void>[] = []

  constructor(private readonly host: PackGcHost) {}

  /** `bytes` more were copied. */
  copied(bytes: number): void {
    this.pending += bytes
    this.unsynced += bytes
    if (this.unsynced < SYNC_EARLY_BYTES) return
    this.unsynced = 0
    // a failure here is the commit's to report (its own fdatasync fails the same way)
    this.syncs.push(this.host.blocks.syncEarly().catch(() => {}))
  }

  /**
   * Whether the copies so far are due for a commit: bytes, the caller's operations, the copies' index
   * entries, or the open pack at its target size (the commit seals it).
   */
  due(): boolean {
    const b = this.host.blocks
    if (this.pending >= COMMIT_BYTES || this.ops.length >= COMMIT_OPS || b.stagedEntryCount >= COMMIT_COPIES) return true
    const open = b.packRecords().get(b.openPackNo())
    return open !== undefined && open.committedLength + b.stagedBytes >= b.packTarget
  }

  async commit(): Promise<void> {
    // the pack file is not sealed (closed) under a background fdatasync
    await Promise.all(this.syncs)
    this.syncs = []
    this.unsynced = 0
    await this.host.commitWith(this.ops, { dropPacks: this.dropPacks })
    for (const n of this.dropPacks) this.host.blocks.io.remove(n)
    this.ops = []
    this.dropPacks = []
    this.pending = 0
  }
}

/** A copy of a kind-0 entry of a version-1 pack as a manifest entry (kind 1), its checksum made anew. */
function markManifest(e: ScannedEntry): Uint8Array {
  const out = Uint8Array.prototype.slice.call(e.bytes)
  writeEntryHeader(out, 0, e.cid, e.codec, e.depth, e.rawLength, e.storedLength, ENTRY_KIND.manifest)
  return out
}
