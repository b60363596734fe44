/**
 * push (SPEC.md §22.4): the checkpoints of some timelines that a remote lacks, and the blocks they
 * need that it lacks, in the write order that keeps a remote valid at every moment:
 *
 *   1. packs     new packs of the blocks the remote's index does not list (content-named: a retry
 *                writes the same name, a crash leaves at most unreferenced packs)
 *   2. index     one segment listing them, with its deps (the segments its blocks reach into)
 *   3. catalog   per timeline: its record (once), a claim per checkpoint (create-only: the first
 *                pusher of a vtime wins, the other gets CKPT_REMOTE_CONFLICT), then a catalog
 *                segment naming the claimed checkpoints and the index segments they need. A reader
 *                sees a checkpoint only through a catalog segment, so only complete ones.
 */
import { cidKey, cidToString, DAG_CBOR, type CidBytes } from '../codecs/cid.js'
import { blake3 } from '../codecs/blake3.js'
import { AT_REST, compressBlock } from '../codecs/compress.js'
import { deltaBaseCid } from '../codecs/node-delta.js'
import { CkptError } from '../codecs/errors.js'
import type { Manifest } from '../codecs/manifest.js'
import { ENTRY_KIND } from '../codecs/pack-format.js'
import {
  catalogKey,
  claimKey,
  claimPrefix,
  decodeJson,
  encodeJson,
  encodeSegment,
  segmentKey,
  timelineKey,
  toHex,
  type CatalogSegment,
  type SegmentEntry,
  type SegmentPack,
} from '../codecs/remote-format.js'
import { RemoteBlocks, type CheckpointEntry, type TimelineRecord } from '../store/index.js'
import type { StoreContext } from './context.js'
import { changedSlots, childCid } from './node-compare.js'
import { Geometry } from './region-tree.js'
import { baseRoot } from './bundle-shared.js'
import { openRemote, type OpenedRemote } from './remote.js'
import { selectCheckpoints } from './remote-select.js'
import { catalogSegments, droppedCheckpoints, remoteCheckpoints, syncRemoteIndex } from './remote-catalog.js'
import { RemotePackWriter } from './remote-pack-writer.js'
import { doomedObjects } from './remote-gc-state.js'
import { pushRefs } from './remote-refs.js'

/** claims made at once (a conflict stops the timeline after its batch) */
const CLAIM_BATCH = 16

export interface PushOptions {
  signal?: AbortSignal
  onProgress?: (p: { phase: 'index' | 'walk' | 'packs' | 'catalog'; done: number; total: number }) => void
  env?: Record<string, string | undefined>
}

export interface PushConflict {
  timeline: string
  vtime: string
  local: string
  remote: string
}

export interface PushSummary {
  remote: string
  /** per timeline: checkpoints now on the remote from this push, and those it had already */
  timelines: { name: string; pushed: number; present: number; conflict?: PushConflict }[]
  conflicts: PushConflict[]
  /** refs sent (those whose checkpoints are on the remote and whose value there differed) */
  refs: string[]
  blocks: number
  packs: number
  packBytes: number
  /** the index segment written (none when every block was there) */
  segment?: string
  requests: { puts: number; gets: number; lists: number; heads: number }
  bytesOut: number
  ms: number
}

export async function push(ctx: StoreContext, url: string, refs: readonly string[] | undefined, opts: PushOptions = {}): Promise<PushSummary> {
  const t0 = performance.now()
  const r = await openRemote(url, { create: true, env: opts.env, ...ctx.repo.blocks.remote?.capability(url) })
  try {
    return await ctx.exclusive(() => pushTo(ctx, r, refs, opts, t0))
  } finally {
    ctx.repo.blocks.remote?.learn(r.config.id, { conditionalCreate: r.objects.conditionalCreateKnown })
    await r.objects.close()
  }
}

async function pushTo(ctx: StoreContext, r: OpenedRemote, refs: readonly string[] | undefined, opts: PushOptions, t0: number): Promise<PushSummary> {
  const { signal } = opts
  const selected = await selectCheckpoints(ctx, refs)
  opts.onProgress?.({ phase: 'index', done: 0, total: 1 })
  const table = await syncRemoteIndex(ctx, r, signal)
  const plans: TimelinePlan[] = []
  for (const [name, entries] of selected) plans.push(await planTimeline(ctx, r, name, entries, signal))
  const walk = new PushWalk(ctx, table, r.config.id, await doomedObjects(r, signal))
  const todo = plans.flatMap((p) => p.toClaim.concat(p.toComplete))
  for (let k = 0; k < todo.length; k++) {
    signal?.throwIfAborted()
    opts.onProgress?.({ phase: 'walk', done: k, total: todo.length })
    await walk.checkpoint(todo[k]!)
  }
  const packs = await uploadPacks(ctx, r, walk, opts)
  let segment: string | undefined
  if (packs.entries.length) {
    const bytes = encodeSegment(packs.list, [...walk.deps].sort(), packs.entries)
    segment = toHex(blake3(bytes))
    await r.objects.put(segmentKey(segment), bytes, { signal })
    table.saveSegment(r.config.id, segment, bytes)
  }
  const indexes = [...new Set([...(segment ? [segment] : []), ...walk.deps])].sort()
  const summary: PushSummary['timelines'] = []
  const conflicts: PushConflict[] = []
  const onRemote = new Map<string, Set<string>>()
  for (let k = 0; k < plans.length; k++) {
    opts.onProgress?.({ phase: 'catalog', done: k, total: plans.length })
    const res = await writeCatalog(r, plans[k]!, indexes, signal)
    onRemote.set(plans[k]!.name, new Set([...plans[k]!.there, ...res.listed]))
    summary.push(res.summary)
    if (res.summary.conflict) conflicts.push(res.summary.conflict)
  }
  const only = refs && refs.length ? new Set(refs.filter((x) => x.startsWith('ref:')).map((x) => x.slice(4))) : undefined
  const refsSent = await pushRefs(ctx, r, (tl, _v, cid) => onRemote.get(tl)?.has(cid) === true, only, signal)
  const st = r.objects.stats
  const result: PushSummary = {
    remote: r.url,
    timelines: summary,
    conflicts,
    refs: refsSent,
    blocks: packs.entries.length,
    packs: packs.list.length,
    packBytes: packs.list.reduce((n, p) => n + p.size, 0),
    ...(segment ? { segment } : {}),
    requests: { puts: st.puts, gets: st.gets, lists: st.lists, heads: st.heads },
    bytesOut: st.bytesOut,
    ms: Math.round(performance.now() - t0),
  }
  if (conflicts.length) {
    const c = conflicts[0]!
    throw new CkptError(
      'CKPT_REMOTE_CONFLICT',
      `${conflicts.length === 1 ? 'a timeline conflicts' : `${conflicts.length} timelines conflict`} with ${r.url}: ${c.timeline} has ${c.remote} at vtime ${c.vtime} there, ${c.local} here; the timeline was pushed up to it, the others whole (details.summary)`,
      { conflicts, summary: result },
    )
  }
  return result
}

interface TimelinePlan {
  name: string
  record: TimelineRecord
  /** on the remote: none yet (its record is written first) */
  newTimeline: boolean
  /** checkpoints the remote lacks, in vtime order */
  toClaim: CheckpointEntry[]
  /** checkpoints claimed by this store's earlier push that no catalog segment lists yet (a push that stopped) */
  toComplete: CheckpointEntry[]
  present: number
  /** CIDs (text) of this timeline the remote lists already */
  there: string[]
  /** the remote has another checkpoint here: the timeline is pushed up to it only */
  conflict?: PushConflict
}

async function planTimeline(ctx: StoreContext, r: OpenedRemote, name: string, entries: CheckpointEntry[], signal?: AbortSignal): Promise<TimelinePlan> {
  const record = (await ctx.repo.getTimeline(name))!
  const there = await r.objects.get(timelineKey(name), { signal })
  if (there) {
    const rec = decodeJson(there, timelineKey(name))
    if (rec.lineage !== record.lineage) {
      const first = entries[0]
      const conflict = { timeline: name, vtime: first ? first.vtime.toString() : '0', local: `lineage ${record.lineage}`, remote: `lineage ${String(rec.lineage)}` }
      return { name, record, newTimeline: false, toClaim: [], toComplete: [], present: 0, there: [], conflict }
    }
  }
  const segs = await catalogSegments(r, name, signal, ctx.repo.blocks.remote)
  const listed = remoteCheckpoints(segs)
  const dropped = droppedCheckpoints(segs)
  const claimed = new Set<string>()
  for await (const o of r.objects.list(claimPrefix(name), { signal })) claimed.add(o.key)
  const plan: TimelinePlan = { name, record, newTimeline: !there, toClaim: [], toComplete: [], present: 0, there: [] }
  for (const e of entries) {
    const v = e.vtime.toString()
    const cid = cidToString(e.cid)
    const theirs = listed.get(v)
    // a checkpoint the remote thinned away is not pushed again
    if (theirs === cid || dropped.get(v) === cid) {
      plan.present++
      if (theirs === cid) plan.there.push(cid)
      continue
    }
    if (theirs === undefined && !claimed.has(claimKey(name, e.vtime))) {
      plan.toClaim.push(e)
      continue
    }
    // claimed but not catalogued (a push that stopped), or catalogued as another checkpoint
    const claim = theirs ?? (await readClaim(r, name, e.vtime, signal))
    if (claim === cid) plan.toComplete.push(e)
    else {
      plan.conflict = { timeline: name, vtime: v, local: cid, remote: claim ?? '?' }
      break
    }
  }
  return plan
}

async function readClaim(r: OpenedRemote, name: string, vtime: bigint, signal?: AbortSignal): Promise<string | undefined> {
  const b = await r.objects.get(claimKey(name, vtime), { signal })
  if (!b) return undefined
  const v = decodeJson(b, claimKey(name, vtime))
  return typeof v.cid === 'string' ? v.cid : undefined
}

/**
 * The blocks of the checkpoints pushed that the remote lacks, in post-order (a node after its
 * children). A subtree whose root the remote lists is skipped whole: the segment that lists it, and
 * that segment's deps, reach every block below it (they become this push's deps).
 */
class PushWalk {
  /** blocks to upload, in order, with their entry kind */
  readonly blocks: { cid: CidBytes; kind: number }[] = []
  readonly deps = new Set<string>()
  private readonly taken = new Set<string>()
  private readonly last = new Map<string, Manifest>()

  constructor(
    private readonly ctx: StoreContext,
    private readonly table: RemoteBlocks,
    private readonly id: string,
    /** segments and packs a remote gc is about to delete (never depended on: their blocks go again) */
    private readonly doomed: ReadonlySet<string>,
  ) {}

  /** true: the block still has to be seen to (neither on the remote nor taken) */
  private need(cid: CidBytes, subtree = false): boolean {
    const key = cidKey(cid)
    if (this.taken.has(key)) return false
    const seg = this.table.segmentOf(this.id, cid, this.doomed, { subtree })
    if (seg) {
      this.depend(seg)
      return false
    }
    this.taken.add(key)
    return true
  }

  /** delta chain length of the node deltas this push sent, by CID key */
  readonly sentDepth = new Map<string, number>()

  /**
   * The delta chain length a node delta's base has on the remote, when it can be read there: it went
   * in this push, or a segment this push may depend on lists it (a dep then); -1 when neither.
   */
  baseDepth(base: CidBytes): number {
    const sent = this.sentDepth.get(cidKey(base))
    if (sent !== undefined) return sent
    if (this.taken.has(cidKey(base))) return -1 // goes later in this push: not known yet
    const seg = this.table.segmentOf(this.id, base, this.doomed)
    if (!seg) return -1
    this.depend(seg)
    return this.table.locate(base)?.depth ?? 0
  }

  /** A segment this push's blocks reach into: it and its deps become this push's deps. */
  private depend(seg: string): void {
    if (this.deps.has(seg)) return
    this.deps.add(seg)
    for (const d of this.table.depsOf(seg)) this.deps.add(d)
  }

  private tree(cid: CidBytes | null, base: CidBytes | null, level: number): void {
    if (!cid || (base && cidKey(cid) === cidKey(base)) || !this.need(cid, true)) return
    const blocks = this.ctx.repo.blocks
    // pushed in timeline order: the versions between (thinned checkpoints') are not cached
    const e = blocks.getNode(cid, false)
    const be = base ? blocks.getNode(base, false) : undefined
    const same = be !== undefined && be.count === e.count
    for (const s of changedSlots(e, be)) {
      if (!e.codecs[s]) continue
      const c = childCid(e, s)
      if (level === 1) {
        if (this.need(c)) this.blocks.push({ cid: c, kind: ENTRY_KIND.block })
      } else this.tree(c, same && be!.codecs[s] ? childCid(be!, s) : null, level - 1)
    }
    this.blocks.push({ cid, kind: ENTRY_KIND.block })
  }

  async checkpoint(e: CheckpointEntry): Promise<void> {
    const m = await this.ctx.manifestOf(e.cid)
    // the previous checkpoint of the timeline walked here: everything equal to it is seen to
    const base = this.last.get(e.timeline)
    if (this.need(e.cid)) {
      for (const name of Object.keys(m.regions).sort()) {
        const reg = m.regions[name]!
        const geo = new Geometry(reg.size, reg.chunkSize, reg.fanout)
        this.tree(reg.root, baseRoot(base, name, reg), geo.height)
      }
      for (const name of Object.keys(m.blobs).sort()) for (const c of m.blobs[name]!.chunks) if (this.need(c.cid)) this.blocks.push({ cid: c.cid, kind: ENTRY_KIND.block })
      this.blocks.push({ cid: e.cid, kind: ENTRY_KIND.manifest })
    }
    this.last.set(e.timeline, m)
  }
}

/**
 * The longest node-delta chain a push makes on a remote: a lazy reader resolves a chain one entry
 * after another, each possibly a round trip, so chains stay short there (4: a node is whole every
 * fifth version at most), where local ones may be 32 long.
 */
export const REMOTE_MAX_DEPTH = 4

/** Frames the walk's blocks into packs of ~32 MiB and uploads them, a few at once. */
async function uploadPacks(ctx: StoreContext, r: OpenedRemote, walk: PushWalk, opts: PushOptions): Promise<{ list: SegmentPack[]; entries: SegmentEntry[] }> {
  const blocks = ctx.repo.blocks
  const out = new RemotePackWriter(r.objects, opts.signal)
  for (let k = 0; k < walk.blocks.length; k++) {
    if (k % 4096 === 0) opts.onProgress?.({ phase: 'packs', done: k, total: walk.blocks.length })
    const { cid, kind } = walk.blocks[k]!
    const { loc, payload } = blocks.readStored(cid)
    const depth = loc.codec === AT_REST.nodeDelta ? walk.baseDepth(deltaBaseCid(payload)) + 1 : 0
    if (depth > 0 && depth <= REMOTE_MAX_DEPTH) {
      // a node stored as a change of another goes as it is when its base is on the remote or went
      // before it, and the chain a reader resolves there stays short (each hop may be a round trip)
      await out.add(cid, loc.codec, loc.rawLength, payload, kind, depth)
      walk.sentDepth.set(cidKey(cid), depth)
    } else if (loc.codec === AT_REST.nodeDelta) {
      // otherwise it goes as itself
      const raw = blocks.getNodeBytes(cid, false).bytes
      const c = compressBlock(blocks.compressor, raw)
      await out.add(cid, c.code, raw.length, c.bytes, kind)
      walk.sentDepth.set(cidKey(cid), 0)
    } else if (loc.codec === AT_REST.chunkDelta) {
      // a chunk stored against an earlier version goes whole: its base may be nothing the remote has
      const raw = blocks.getAt(cid, loc)
      const c = compressBlock(blocks.compressor, raw)
      await out.add(cid, c.code, raw.length, c.bytes, kind)
    } else {
      await out.add(cid, loc.codec, loc.rawLength, payload, kind)
      // a whole tree node: a later delta of it starts a chain here
      if (cid[1] === DAG_CBOR) walk.sentDepth.set(cidKey(cid), 0)
    }
  }
  await out.finish()
  return { list: out.packs, entries: out.entries }
}

/** The catalog step of one timeline: its record, its claims, then the catalog segment that lists them. */
async function writeCatalog(r: OpenedRemote, plan: TimelinePlan, indexes: string[], signal?: AbortSignal): Promise<{ summary: PushSummary['timelines'][number]; listed: string[] }> {
  const { name } = plan
  let conflict = plan.conflict
  if (plan.newTimeline && (plan.toClaim.length || plan.toComplete.length)) {
    const rec = encodeJson({ name, lineage: plan.record.lineage, regions: plan.record.regions, created: plan.record.created, ...(plan.record.forkedFrom ? { forkedFrom: plan.record.forkedFrom } : {}) })
    if (!(await r.objects.put(timelineKey(name), rec, { ifNoneMatch: true, signal }))) {
      const there = decodeJson((await r.objects.get(timelineKey(name), { signal }))!, timelineKey(name))
      if (there.lineage !== plan.record.lineage) {
        const c = { timeline: name, vtime: '0', local: `lineage ${plan.record.lineage}`, remote: `lineage ${String(there.lineage)}` }
        return { summary: { name, pushed: 0, present: plan.present, conflict: c }, listed: [] }
      }
    }
  }
  const listed: CheckpointEntry[] = [...plan.toComplete]
  for (let k = 0; k < plan.toClaim.length && !conflict; k += CLAIM_BATCH) {
    const batch = plan.toClaim.slice(k, k + CLAIM_BATCH)
    const won = await Promise.all(
      batch.map((e) => r.objects.put(claimKey(name, e.vtime), encodeJson({ cid: cidToString(e.cid), at: Date.now() }), { ifNoneMatch: true, signal })),
    )
    for (let j = 0; j < batch.length; j++) {
      const e = batch[j]!
      if (won[j]) {
        listed.push(e)
        continue
      }
      const theirs = await readClaim(r, name, e.vtime, signal)
      if (theirs === cidToString(e.cid)) listed.push(e)
      else if (!conflict) conflict = { timeline: name, vtime: e.vtime.toString(), local: cidToString(e.cid), remote: theirs ?? '?' }
    }
    if (conflict) {
      // claims this push won past the conflict are its own and will not be listed: taken back, so
      // they block no one (nobody else can hold a claim this push created)
      const at = BigInt(conflict.vtime)
      for (let j = 0; j < batch.length; j++) if (won[j] && batch[j]!.vtime > at) await r.objects.delete(claimKey(name, batch[j]!.vtime))
    }
  }
  // only what precedes the first conflict is listed: a timeline on the remote has no gaps of this store's making
  const upTo = conflict ? BigInt(conflict.vtime) : undefined
  const final = listed.filter((e) => upTo === undefined || e.vtime < upTo).sort((a, b) => (a.vtime < b.vtime ? -1 : a.vtime > b.vtime ? 1 : 0))
  if (final.length) {
    const seg: CatalogSegment = { ckpt: 'remote-catalog', v: 1, timeline: name, checkpoints: final.map((e) => ({ vtime: e.vtime.toString(), cid: cidToString(e.cid) })), indexes }
    const bytes = encodeJson(seg)
    await r.objects.put(catalogKey(name, final[0]!.vtime, final[final.length - 1]!.vtime, toHex(blake3(bytes))), bytes, { signal })
  }
  return {
    summary: { name, pushed: final.length - plan.toComplete.length, present: plan.present + plan.toComplete.length, ...(conflict ? { conflict } : {}) },
    listed: final.map((e) => cidToString(e.cid)),
  }
}

