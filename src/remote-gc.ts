/**
 * Remote upkeep (SPEC.md §22.7): thinning a remote's timeline, and gc of a remote.
 *
 * gc, under the remote's lock (locks/gc, stale after 30 min):
 *   mark      every block the listed (not dropped) checkpoints reach, reading tree nodes through this
 *             store's cache of the remote, a level of a tree at a time (one coalesced prefetch each)
 *   choose    one copy of each live block (the newest segment's, outside packs already proposed for deletion)
 *   plan      packs with nothing live are dead; packs less live than the threshold are repacked
 *             (their live blocks copied, verified, into new packs); packs no segment lists are
 *             unreferenced (a push that stopped). When anything is dead or repacked, or the index
 *             has many segments, one compacted segment lists every live block and one catalog
 *             segment per timeline lists its checkpoints, naming only it
 *   propose   what the new state no longer needs (old segments and catalog segments, dead,
 *             repacked and unreferenced packs) is written to gc/TIME-RAND.json, not deleted
 *   delete    proposals older than the margin (default 1 h) are carried out, each object only if
 *             a fresh mark still finds it unneeded: a push that ran during an earlier gc and made
 *             something live again keeps it
 */
import { cidKey, cidToString, parseCid } from '../codecs/cid.js'
import { blake3 } from '../codecs/blake3.js'
import { CkptError } from '../codecs/errors.js'
import { AT_REST } from '../codecs/compress.js'
import { deltaBaseCid } from '../codecs/node-delta.js'
import { entryCrcOk, entryPayload, ENTRY_HEADER_SIZE, isFault, openPayload } from '../codecs/pack-format.js'
import {
  catalogKey,
  encodeJson,
  encodeSegment,
  packKey,
  segmentEntry,
  segmentKey,
  toHex,
  ENTRY_FLAGS,
  type CatalogSegment,
  type RemoteCheckpoint,
  type SegmentEntry,
} from '../codecs/remote-format.js'
import type { RemoteBlocks } from '../store/index.js'
import type { StoreContext } from './context.js'
import { openRemote, type OpenedRemote } from './remote.js'
import { proposeDeletions, readDoomed, takeLock, type Doomed } from './remote-gc-state.js'
import { RemotePackWriter } from './remote-pack-writer.js'
import { mark } from './remote-mark.js'
import { remoteRefs } from './remote-refs.js'
import { catalogSegments, droppedCheckpoints, remoteCheckpoints, syncRemoteIndex } from './remote-catalog.js'
import { parsePolicy, planKeep } from './policy.js'

export interface RemoteGcOptions {
  /** proposals are carried out this long after they were made (ms, default 1 h); 0: at once (no push may run meanwhile) */
  margin?: number
  /** repack packs whose live share is below this (0..1, default 0.5) */
  threshold?: number
  /** only report what would be done */
  dryRun?: boolean
  env?: Record<string, string | undefined>
  signal?: AbortSignal
  onProgress?: (p: { phase: 'index' | 'mark' | 'repack' | 'delete'; done: number; total: number }) => void
}

export interface RemoteGcSummary {
  remote: string
  checkpoints: number
  liveBlocks: number
  liveBytes: number
  packBytes: number
  packs: { total: number; kept: number; repacked: number; dead: number; unreferenced: number }
  segments: { before: number; after: number }
  /** objects proposed for deletion by this run */
  proposed: { packs: number; segments: number; catalogs: number }
  /** objects deleted by this run (proposals past the margin, checked again) */
  deleted: { packs: number; segments: number; catalogs: number; bytes: number }
  dryRun: boolean
  ms: number
}

/** Segments past this many are compacted into one even when nothing is dead. */
const MAX_SEGMENTS = 16
const HOUR = 3_600_000

interface TimelineState {
  name: string
  segs: { key: string; seg: CatalogSegment }[]
  live: Map<string, string>
  dropped: Map<string, string>
}

export async function gcRemote(ctx: StoreContext, url: string, opts: RemoteGcOptions = {}): Promise<RemoteGcSummary> {
  const threshold = opts.threshold ?? 0.5
  const margin = opts.margin ?? HOUR
  if (!(threshold >= 0 && threshold <= 1)) throw new CkptError('CKPT_BAD_ARGUMENT', 'gc threshold must be between 0 and 1', { threshold })
  if (!(margin >= 0)) throw new CkptError('CKPT_BAD_ARGUMENT', 'gc margin must be a duration of 0 or more', { margin })
  const t0 = performance.now()
  const r = await openRemote(url, { create: false, env: opts.env, ...ctx.repo.blocks.remote?.capability(url) })
  try {
    return await ctx.exclusive(async () => {
      const release = opts.dryRun ? async () => {} : await takeLock(r, opts.signal)
      try {
        return await collect(ctx, r, { ...opts, threshold, margin }, t0)
      } finally {
        await release()
      }
    })
  } finally {
    ctx.repo.blocks.remote?.learn(r.config.id, { conditionalCreate: r.objects.conditionalCreateKnown })
    await r.objects.close()
  }
}

async function readTimelines(r: OpenedRemote, signal?: AbortSignal, keep?: RemoteBlocks): Promise<TimelineState[]> {
  const out: TimelineState[] = []
  for await (const o of r.objects.list('tl/', { signal })) {
    const name = decodeURIComponent(o.key.slice(3))
    const segs = await catalogSegments(r, name, signal, keep)
    out.push({ name, segs, live: remoteCheckpoints(segs), dropped: droppedCheckpoints(segs) })
  }
  return out
}

async function collect(ctx: StoreContext, r: OpenedRemote, opts: RemoteGcOptions & { threshold: number; margin: number }, t0: number): Promise<RemoteGcSummary> {
  const { signal } = opts
  opts.onProgress?.({ phase: 'index', done: 0, total: 1 })
  const table = await syncRemoteIndex(ctx, r, signal)
  const id = r.config.id
  const listed = new Map<string, number>()
  for await (const o of r.objects.list('packs/', { signal })) listed.set(o.key.slice(o.key.lastIndexOf('/') + 1), o.size)
  const timelines = await readTimelines(r, signal, ctx.repo.blocks.remote)
  const pending = await readDoomed(r, signal)
  const doomedPacks = new Set(pending.flatMap((d) => d.packs))
  const roots = timelines.flatMap((t) => [...t.live.values()].map(parseCid))
  const live = await mark(ctx, roots, opts)
  const segNames = table.segmentNamesOf(id)
  const chosen = await withDeltaBases(table, segNames, live, listed, doomedPacks)
  if (chosen.size < live.size) {
    throw new CkptError('CKPT_BAD_REMOTE', `${live.size - chosen.size} live blocks of ${r.url} are in no pack it has; gc deletes nothing (ckpt verify ${r.url})`, { remote: r.url, missing: live.size - chosen.size })
  }
  const plan = planPacks(table, segNames, chosen, listed, opts.threshold)
  const compact = plan.dead.length > 0 || plan.repack.length > 0 || segNames.length > MAX_SEGMENTS
  const summary: RemoteGcSummary = {
    remote: r.url,
    checkpoints: roots.length,
    liveBlocks: chosen.size,
    liveBytes: [...plan.liveBytes.values()].reduce((a, b) => a + b, 0),
    packBytes: [...listed.values()].reduce((a, b) => a + b, 0),
    packs: { total: listed.size, kept: plan.kept.length, repacked: plan.repack.length, dead: plan.dead.length, unreferenced: plan.unreferenced.length },
    segments: { before: segNames.length, after: segNames.length },
    proposed: { packs: 0, segments: 0, catalogs: 0 },
    deleted: { packs: 0, segments: 0, catalogs: 0, bytes: 0 },
    dryRun: opts.dryRun === true,
    ms: 0,
  }
  if (opts.dryRun) return { ...summary, ms: Math.round(performance.now() - t0) }
  const proposal: Omit<Doomed, 'key' | 'at'> = { packs: [...plan.unreferenced], segments: [], catalogs: [] }
  let written: { segment: string; catalogs: string[] } | undefined
  if (compact) {
    written = await rewrite(r, table, timelines, chosen, plan, opts)
    proposal.packs.push(...plan.dead, ...plan.repack)
    proposal.segments = segNames.filter((n) => n !== written!.segment)
    proposal.catalogs = timelines.flatMap((t) => t.segs.map((s) => s.key)).filter((k) => !written!.catalogs.includes(k))
    summary.segments.after = 1
  }
  const now = Date.now()
  if (proposal.packs.length || proposal.segments.length || proposal.catalogs.length) {
    pending.push(await proposeDeletions(r, proposal, now))
    summary.proposed = { packs: proposal.packs.length, segments: proposal.segments.length, catalogs: proposal.catalogs.length }
  }
  summary.deleted = await carryOut(ctx, r, pending.filter((d) => d.at + opts.margin <= now), opts)
  return { ...summary, ms: Math.round(performance.now() - t0) }
}

interface Chosen {
  segment: string
  pack: string
  entry: SegmentEntry
}

/** One copy of each live block: the newest segment's, in a pack the remote has, outside proposed deletions when possible. */
function choose(table: RemoteBlocks, names: string[], live: Set<string>, listed: Map<string, number>, doomedPacks: Set<string>): Map<string, Chosen> {
  const chosen = new Map<string, Chosen>()
  for (const allowDoomed of [false, true]) {
    for (let n = names.length - 1; n >= 0; n--) {
      const seg = table.segment(names[n]!)!
      for (let k = 0; k < seg.count; k++) {
        const e = segmentEntry(seg, k)
        const key = cidKey(e.cid)
        if (!live.has(key) || chosen.has(key)) continue
        const pack = seg.packs[e.pack]!.hash
        if (!listed.has(pack) || (!allowDoomed && doomedPacks.has(pack))) continue
        chosen.set(key, { segment: names[n]!, pack, entry: { ...e, cid: e.cid.slice() } })
      }
    }
  }
  return chosen
}

/**
 * choose(), with the base of every live node delta (codec 3) live too, transitively: a node stored as
 * a change of another is read through it. The deltas' payloads are read through the cache (one prefetch a round).
 */
async function withDeltaBases(table: RemoteBlocks, names: string[], live: Set<string>, listed: Map<string, number>, doomedPacks: Set<string>, baseOnly = new Set<string>()): Promise<Map<string, Chosen>> {
  const done = new Set<string>()
  for (;;) {
    const chosen = choose(table, names, live, listed, doomedPacks)
    const todo = [...chosen].filter(([k, c]) => c.entry.codec === AT_REST.nodeDelta && !done.has(k))
    if (!todo.length) {
      // a compacted segment says which nodes are there only as bases (their subtrees may go)
      for (const [k, c] of chosen) if (baseOnly.has(k)) c.entry.flags = ENTRY_FLAGS.baseOnly
      return chosen
    }
    const locs = todo.map(([, c]) => table.locationIn(c.pack, c.entry))
    await table.prefetch(locs)
    for (let k = 0; k < todo.length; k++) {
      done.add(todo[k]![0])
      const l = locs[k]!
      const key = cidKey(deltaBaseCid(table.read(l.pack, l.offset + ENTRY_HEADER_SIZE, l.storedLength)))
      if (!live.has(key)) baseOnly.add(key)
      live.add(key)
    }
  }
}

interface PackPlan {
  liveBytes: Map<string, number>
  kept: string[]
  repack: string[]
  dead: string[]
  unreferenced: string[]
}

function planPacks(table: RemoteBlocks, names: string[], chosen: Map<string, Chosen>, listed: Map<string, number>, threshold: number): PackPlan {
  const liveBytes = new Map<string, number>()
  for (const c of chosen.values()) liveBytes.set(c.pack, (liveBytes.get(c.pack) ?? 0) + ENTRY_HEADER_SIZE + c.entry.storedLength)
  const referenced = new Set<string>()
  for (const n of names) for (const p of table.segment(n)!.packs) referenced.add(p.hash)
  const plan: PackPlan = { liveBytes, kept: [], repack: [], dead: [], unreferenced: [] }
  for (const [hash, size] of listed) {
    const l = liveBytes.get(hash) ?? 0
    if (!referenced.has(hash)) plan.unreferenced.push(hash)
    else if (l === 0) plan.dead.push(hash)
    else if (l < threshold * size) plan.repack.push(hash)
    else plan.kept.push(hash)
  }
  return plan
}

/**
 * The compacted state: live blocks of repacked packs copied (verified) into new packs, then one
 * segment listing every live block, then one catalog segment per timeline naming only it.
 */
async function rewrite(r: OpenedRemote, table: RemoteBlocks, timelines: TimelineState[], chosen: Map<string, Chosen>, plan: PackPlan, opts: RemoteGcOptions): Promise<{ segment: string; catalogs: string[] }> {
  const repack = new Set(plan.repack)
  const out = new RemotePackWriter(r.objects, opts.signal)
  const byPack = new Map<string, Chosen[]>()
  for (const c of chosen.values()) if (repack.has(c.pack)) byPack.set(c.pack, [...(byPack.get(c.pack) ?? []), c])
  let done = 0
  for (const [hash, list] of byPack) {
    opts.onProgress?.({ phase: 'repack', done: done++, total: byPack.size })
    const data = await r.objects.get(packKey(hash), { signal: opts.signal })
    if (!data) throw new CkptError('CKPT_REMOTE_UNAVAILABLE', `pack ${packKey(hash)} went missing during gc`, { key: packKey(hash) })
    for (const c of list.sort((a, b) => a.entry.offset - b.entry.offset)) {
      const e = c.entry
      const ent = data.subarray(e.offset, e.offset + ENTRY_HEADER_SIZE + e.storedLength)
      const payload = entryPayload(ent, e)
      // a node delta is checked by its CRC (its content is proven through its chain when read)
      const bad = isFault(payload) || (e.codec === AT_REST.nodeDelta ? !entryCrcOk(ent, payload) : isFault(openPayload(e.codec, payload, e.rawLength, e.cid, 4)))
      if (bad) throw new CkptError('CKPT_HASH_MISMATCH', `block ${cidToString(e.cid)} is damaged in ${packKey(hash)} (offset ${e.offset}): gc stops before copying it`, { key: packKey(hash), offset: e.offset })
      await out.add(e.cid, e.codec, e.rawLength, payload as Uint8Array, e.kind, e.depth ?? 0)
    }
  }
  await out.finish()
  const packs = [...out.packs]
  const index = new Map<string, number>()
  packs.forEach((p, i) => index.set(p.hash, i))
  const entries: SegmentEntry[] = out.entries.map((e) => ({ ...e, flags: chosen.get(cidKey(e.cid))?.entry.flags ?? 0 }))
  for (const c of chosen.values()) {
    if (repack.has(c.pack)) continue
    let i = index.get(c.pack)
    if (i === undefined) {
      const seg = table.segment(c.segment)!
      i = packs.push(seg.packs.find((p) => p.hash === c.pack)!) - 1
      index.set(c.pack, i)
    }
    entries.push({ ...c.entry, pack: i })
  }
  const bytes = encodeSegment(packs, [], entries)
  const segment = toHex(blake3(bytes))
  await r.objects.put(segmentKey(segment), bytes, { signal: opts.signal })
  table.saveSegment(r.config.id, segment, bytes)
  const catalogs: string[] = []
  for (const t of timelines) {
    const list = (m: Map<string, string>): RemoteCheckpoint[] =>
      [...m].map(([vtime, cid]) => ({ vtime, cid })).sort((a, b) => (BigInt(a.vtime) < BigInt(b.vtime) ? -1 : 1))
    const checkpoints = list(t.live)
    const dropped = list(t.dropped)
    const all = [...checkpoints, ...dropped].map((c) => BigInt(c.vtime))
    if (!all.length) continue
    const seg: CatalogSegment = { ckpt: 'remote-catalog', v: 1, timeline: t.name, checkpoints, indexes: [segment], ...(dropped.length ? { dropped } : {}) }
    const b = encodeJson(seg)
    const key = catalogKey(t.name, all.reduce((a, v) => (v < a ? v : a)), all.reduce((a, v) => (v > a ? v : a)), toHex(blake3(b)))
    await r.objects.put(key, b, { signal: opts.signal })
    catalogs.push(key)
  }
  return { segment, catalogs }
}

/**
 * Carries out proposals past the margin, checking each object against the remote as it is now: a
 * pack holding a block some catalogued checkpoint reaches (a fresh mark), a segment a live catalog
 * segment names (or reaches by deps), a catalog segment listing a checkpoint no other lists, stays.
 */
async function carryOut(ctx: StoreContext, r: OpenedRemote, due: Doomed[], opts: RemoteGcOptions): Promise<RemoteGcSummary['deleted']> {
  const deleted = { packs: 0, segments: 0, catalogs: 0, bytes: 0 }
  if (!due.length) return deleted
  opts.onProgress?.({ phase: 'delete', done: 0, total: due.length })
  // the remote as it is now, after this run's writes
  const table = await syncRemoteIndex(ctx, r, opts.signal)
  const timelines = await readTimelines(r, opts.signal, ctx.repo.blocks.remote)
  const dueCatalogs = new Set(due.flatMap((d) => d.catalogs))
  const dueSegments = new Set(due.flatMap((d) => d.segments))
  const keptCatalogs = timelines.flatMap((t) => t.segs.filter((s) => !dueCatalogs.has(s.key)).map((s) => ({ t, ...s })))
  const needed = new Set<string>()
  for (const c of keptCatalogs) for (const i of c.seg.indexes) for (const n of [i, ...table.depsOf(i)]) needed.add(n)
  const listed = new Map<string, number>()
  for await (const o of r.objects.list('packs/', { signal: opts.signal })) listed.set(o.key.slice(o.key.lastIndexOf('/') + 1), o.size)
  const live = await mark(ctx, timelines.flatMap((t) => [...t.live.values()].map(parseCid)), opts)
  const usable = table.segmentNamesOf(r.config.id).filter((n) => !dueSegments.has(n) || needed.has(n))
  const inUse = new Set([...(await withDeltaBases(table, usable, live, listed, new Set(due.flatMap((d) => d.packs)))).values()].map((c) => c.pack))
  const covered = (t: TimelineState, c: RemoteCheckpoint) => keptCatalogs.some((k) => k.t === t && [...k.seg.checkpoints, ...(k.seg.dropped ?? [])].some((x) => x.vtime === c.vtime && x.cid === c.cid))
  const gone = new Set<string>()
  const remove = async (key: string): Promise<boolean> => {
    // two proposals may name one object: it is deleted (and counted) once
    if (gone.has(key)) return false
    gone.add(key)
    await r.objects.delete(key)
    return true
  }
  for (const d of due) {
    for (const key of d.catalogs) {
      const t = timelines.find((x) => x.segs.some((s) => s.key === key))
      const seg = t?.segs.find((s) => s.key === key)?.seg
      if (t && seg && ![...seg.checkpoints, ...(seg.dropped ?? [])].every((c) => covered(t, c))) continue
      if (await remove(key)) deleted.catalogs++
    }
    for (const name of d.segments) {
      if (needed.has(name)) continue
      if (await remove(segmentKey(name))) deleted.segments++
    }
    for (const hash of d.packs) {
      if (inUse.has(hash) || !(await remove(packKey(hash)))) continue
      deleted.packs++
      deleted.bytes += listed.get(hash) ?? 0
    }
    await r.objects.delete(d.key)
  }
  return deleted
}

/**
 * Thins a remote's timeline by a policy (SPEC.md §13): the checkpoints it drops are listed in a new
 * catalog segment's `dropped` (no longer pulled, never pushed again); gc then reclaims their blocks.
 * Checkpoints the remote's refs name are kept; labels (a manifest's meta) are not looked at.
 */
export async function thinRemote(url: string, timeline: string, spec: string, opts: { dryRun?: boolean; env?: Record<string, string | undefined>; signal?: AbortSignal } = {}): Promise<{ kept: RemoteCheckpoint[]; dropped: RemoteCheckpoint[] }> {
  const policy = parsePolicy(spec)
  const r = await openRemote(url, { create: false, env: opts.env })
  try {
    const segs = await catalogSegments(r, timeline, opts.signal)
    // a checkpoint one of the remote's refs names is kept (as thin keeps pinned ones here)
    const pinned = new Set((await remoteRefs(r, opts.signal)).map((x) => x.cid))
    const list = [...remoteCheckpoints(segs)].map(([vtime, cid]) => ({ vtime: BigInt(vtime), cid, protected: pinned.has(cid) })).sort((a, b) => (a.vtime < b.vtime ? -1 : 1))
    if (!list.length) throw new CkptError('CKPT_NOT_FOUND', `${r.url} has no checkpoints of ${timeline}`, { timeline })
    const keep = planKeep(list, policy)
    const as = (x: { vtime: bigint; cid: string }): RemoteCheckpoint => ({ vtime: x.vtime.toString(), cid: x.cid })
    const kept = list.filter((_, i) => keep[i]).map(as)
    const dropped = list.filter((_, i) => !keep[i]).map(as)
    if (!opts.dryRun && dropped.length) {
      const seg: CatalogSegment = { ckpt: 'remote-catalog', v: 1, timeline, checkpoints: [], indexes: [], dropped }
      const b = encodeJson(seg)
      await r.objects.put(catalogKey(timeline, BigInt(dropped[0]!.vtime), BigInt(dropped.at(-1)!.vtime), toHex(blake3(b))), b, { signal: opts.signal })
    }
    return { kept, dropped }
  } finally {
    await r.objects.close()
  }
}
