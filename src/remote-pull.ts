/**
 * pull (SPEC.md §22.5): a remote's checkpoints of some timelines into this store.
 *
 *   catalog    the timelines' catalog segments: their checkpoints and the index segments they need
 *   index      those segments (and their deps), checked against their names, kept in the store
 *   blocks     full: every block those segments list that the store lacks, fetched pack by pack and
 *              verified before it is stored; lazy: none (they are read through the remote's cache
 *              when first needed, RemoteBlocks)
 *   manifests  the new checkpoints' manifests, verified and stored (a lazy pull too: log, show and
 *              seek then need no remote)
 *   commit     one catalog commit makes the checkpoints visible, after everything they need
 */
import { cidKey, cidToString, parseCid, type CidBytes } from '../codecs/cid.js'
import { AT_REST, compressBlock } from '../codecs/compress.js'
import { deltaBaseCid } from '../codecs/node-delta.js'
import { CkptError } from '../codecs/errors.js'
import { decodeManifest, type Manifest } from '../codecs/manifest.js'
import { entryCrcOk, entryPayload, ENTRY_HEADER_SIZE, ENTRY_KIND, isFault, openPayload } from '../codecs/pack-format.js'
import { decodeJson, packKey, segmentEntry, timelineKey, type SegmentEntry } from '../codecs/remote-format.js'
import { RemoteBlocks, type TimelineRecord } from '../store/index.js'
import { catalogOps } from './bundle-catalog.js'
import type { StoreContext } from './context.js'
import { checkName, toVtime } from './refs.js'
import { openRemote, type OpenedRemote } from './remote.js'
import { catalogSegments, fetchSegments, remoteCheckpoints } from './remote-catalog.js'
import { mark } from './remote-mark.js'
import { pullRefs, readRemoteRef, remoteRefs, type RemoteRef } from './remote-refs.js'

export interface PullOptions {
  /** copy only the catalog and the index; blocks are fetched when read */
  lazy?: boolean
  signal?: AbortSignal
  onProgress?: (p: { phase: 'catalog' | 'index' | 'blocks' | 'manifests'; done: number; total: number }) => void
  env?: Record<string, string | undefined>
}

export interface PullSummary {
  remote: string
  lazy: boolean
  timelines: { name: string; added: number; present: number }[]
  /** refs set here (the remote's refs naming checkpoints this store now has, where it had none of that name) */
  refs: string[]
  /** blocks copied into the store's packs (a full pull), and their stored bytes */
  blocks: number
  bytes: number
  segments: number
  requests: { gets: number; lists: number; heads: number }
  bytesIn: number
  ms: number
}

/** Stored bytes a pull stages before it commits them (a crash loses at most this much work). */
const COMMIT_EVERY = 64 << 20
/** whole packs fetched at once by a full pull */
const PACKS_IN_FLIGHT = 3

export async function pull(ctx: StoreContext, url: string, refs: readonly string[] | undefined, opts: PullOptions = {}): Promise<PullSummary> {
  const t0 = performance.now()
  const r = await openRemote(url, { create: false, env: opts.env, ...ctx.repo.blocks.remote?.capability(url) })
  try {
    return await ctx.exclusive(async () => {
      try {
        return await pullFrom(ctx, r, refs, opts, t0)
      } catch (err) {
        // what was staged and not committed goes: nothing of a failed pull becomes visible
        ctx.repo.blocks.abort()
        throw err
      }
    })
  } finally {
    ctx.repo.blocks.remote?.learn(r.config.id, { conditionalCreate: r.objects.conditionalCreateKnown })
    await r.objects.close()
  }
}

/** REFs of a pull: TIMELINE or TIMELINE@VTIME (up to VTIME); none: every timeline of the remote. */
async function wanted(r: OpenedRemote, refs: readonly string[] | undefined, named: RemoteRef[], signal?: AbortSignal): Promise<Map<string, bigint | undefined>> {
  const out = new Map<string, bigint | undefined>()
  if (!refs || refs.length === 0) {
    for await (const o of r.objects.list('tl/', { signal })) out.set(decodeURIComponent(o.key.slice(3)), undefined)
    named.push(...(await remoteRefs(r, signal)))
    return out
  }
  for (let ref of refs) {
    if (ref.startsWith('ref:')) {
      const v = await readRemoteRef(r, checkName('ref', ref.slice(4)), signal)
      if (!v) throw new CkptError('CKPT_NOT_FOUND', `${r.url} has no ref named ${ref.slice(4)}`, { remote: r.url, ref })
      named.push(v)
      ref = `${v.timeline}@${v.vtime}`
    }
    const at = ref.lastIndexOf('@')
    const name = checkName('timeline', at < 0 ? ref : ref.slice(0, at))
    const v = at < 0 ? undefined : toVtime(ref.slice(at + 1))
    const was = out.get(name)
    out.set(name, out.has(name) && (was === undefined || v === undefined) ? undefined : v === undefined ? undefined : was !== undefined && was > v ? was : v)
  }
  return out
}

async function pullFrom(ctx: StoreContext, r: OpenedRemote, refs: readonly string[] | undefined, opts: PullOptions, t0: number): Promise<PullSummary> {
  const { signal } = opts
  const { repo } = ctx
  const table = (repo.blocks.remote ??= RemoteBlocks.empty(ctx.dir))
  table.register(r.config.id, r.url, r.env)
  const named: RemoteRef[] = []
  const names = await wanted(r, refs, named, signal)
  const roots: { timeline: string; vtime: bigint; cid: CidBytes }[] = []
  const indexes = new Set<string>()
  const present = new Map<string, number>()
  const records = new Map<string, Record<string, unknown>>()
  let done = 0
  for (const [name, upTo] of names) {
    opts.onProgress?.({ phase: 'catalog', done: done++, total: names.size })
    const rec = await r.objects.get(timelineKey(name), { signal })
    if (!rec) throw new CkptError('CKPT_NOT_FOUND', `${r.url} has no timeline ${name}`, { remote: r.url, timeline: name })
    records.set(name, decodeJson(rec, timelineKey(name)))
    const segs = await catalogSegments(r, name, signal, table)
    for (const { seg } of segs) for (const i of seg.indexes) indexes.add(i)
    present.set(name, 0)
    for (const [v, cid] of remoteCheckpoints(segs)) {
      const vtime = BigInt(v)
      if (upTo !== undefined && vtime > upTo) continue
      const here = await repo.seek(name, vtime)
      if (here && here.vtime === vtime && cidToString(here.cid) === cid) {
        present.set(name, present.get(name)! + 1)
        continue
      }
      roots.push({ timeline: name, vtime, cid: parseCid(cid) })
    }
  }
  opts.onProgress?.({ phase: 'index', done: 0, total: indexes.size })
  const closure = await fetchClosure(r, table, [...indexes], signal)
  // a full pull copies what the new checkpoints reach and the store lacks (not whole segments)
  const reach = opts.lazy ? undefined : await mark(ctx, roots.map((x) => x.cid), { signal })
  const copied = reach ? await copyBlocks(ctx, r, table, closure, reach, opts) : { blocks: 0, bytes: 0 }
  const manifests = await takeManifests(ctx, roots, opts)
  const catalog = await catalogOps(repo, manifests, roots.map((x) => x.cid), {})
  // a timeline new here keeps what the remote's record says of it: when it was made, what it was forked from
  for (const op of catalog.ops) {
    if (op.op !== 'timeline') continue
    const there = records.get(op.record.name)
    if (typeof there?.created === 'number') op.record.created = there.created
    const f = there?.forkedFrom as TimelineRecord['forkedFrom'] | undefined
    if (f && typeof f.timeline === 'string' && typeof f.vtime === 'string' && typeof f.cid === 'string') op.record.forkedFrom = { timeline: f.timeline, vtime: f.vtime, cid: f.cid }
  }
  await repo.commit(catalog.ops)
  await ctx.timelinesChanged(catalog.timelines)
  const refsSet = await pullRefs(ctx, named)
  if (opts.lazy) {
    // the tree nodes of each timeline's newest checkpoint come now (a level at a time, in coalesced
    // ranges): a first page read there then waits for its chunk alone, not for every node above it
    const newest = new Map<string, { vtime: bigint; cid: CidBytes }>()
    for (const x of roots) {
      const was = newest.get(x.timeline)
      if (!was || was.vtime < x.vtime) newest.set(x.timeline, x)
    }
    await mark(ctx, [...newest.values()].map((x) => x.cid), { signal })
  }
  const added = new Map<string, number>()
  for (const x of roots) added.set(x.timeline, (added.get(x.timeline) ?? 0) + 1)
  const st = r.objects.stats
  return {
    remote: r.url,
    lazy: opts.lazy === true,
    timelines: [...names.keys()].map((name) => ({ name, added: added.get(name) ?? 0, present: present.get(name) ?? 0 })),
    refs: refsSet,
    blocks: copied.blocks,
    bytes: copied.bytes,
    segments: closure.length,
    requests: { gets: st.gets, lists: st.lists, heads: st.heads },
    bytesIn: st.bytesIn,
    ms: Math.round(performance.now() - t0),
  }
}

/** The segments named and everything they reach (their deps, transitively), fetched where new. */
async function fetchClosure(r: OpenedRemote, table: RemoteBlocks, names: string[], signal?: AbortSignal): Promise<string[]> {
  const all = new Set<string>()
  let wave = names
  while (wave.length) {
    for (const n of wave) all.add(n)
    await fetchSegments(r, table, wave, signal)
    const next = new Set<string>()
    for (const n of wave) for (const d of table.depsOf(n)) if (!all.has(d)) next.add(d)
    wave = [...next]
  }
  return [...all].sort()
}

/**
 * The new checkpoints' manifests, read through the remote (one coalesced prefetch), each verified
 * against its CID, checked to be the checkpoint the catalog says, and staged in this store.
 */
async function takeManifests(ctx: StoreContext, roots: { timeline: string; vtime: bigint; cid: CidBytes }[], opts: PullOptions): Promise<Map<string, Manifest>> {
  const blocks = ctx.repo.blocks
  const out = new Map<string, Manifest>()
  opts.onProgress?.({ phase: 'manifests', done: 0, total: roots.length })
  const locs = await blocks.locateMany(roots.map((x) => x.cid))
  for (let k = 0; k < roots.length; k++) {
    const { timeline, vtime, cid } = roots[k]!
    if (!locs[k]) throw new CkptError('CKPT_REMOTE_UNAVAILABLE', `checkpoint ${cidToString(cid)} (${timeline}@${vtime}) is in the remote's catalog but in none of its index segments`, { cid: cidToString(cid), timeline })
    const bytes = blocks.get(cid)
    const m = decodeManifest(bytes)
    if (m.timeline !== timeline || m.vtime !== vtime) {
      throw new CkptError('CKPT_BAD_REMOTE', `the remote's catalog puts ${cidToString(cid)} at ${timeline}@${vtime}, its manifest says ${m.timeline}@${m.vtime}`, { cid: cidToString(cid) })
    }
    out.set(cidKey(cid), m)
    if (!blocks.has(cid)) {
      const c = compressBlock(blocks.compressor, bytes)
      blocks.put(cid, c.code, c.bytes, bytes.length, { kind: ENTRY_KIND.manifest })
    }
  }
  return out
}

/**
 * A full pull's blocks: every block the segments list that the store lacks, fetched a whole pack at
 * a time (a few at once), each entry checked and its block re-hashed before it is staged; committed
 * every 64 MiB (blocks nothing references yet: a crash leaves them to gc).
 */
async function copyBlocks(ctx: StoreContext, r: OpenedRemote, table: RemoteBlocks, segments: string[], reach: Set<string>, opts: PullOptions): Promise<{ blocks: number; bytes: number }> {
  const { repo } = ctx
  const blocks = repo.blocks
  const byPack = new Map<string, { size: number; entries: SegmentEntry[] }>()
  const seen = new Set<string>()
  for (const name of segments) {
    const seg = table.segment(name)!
    for (let k = 0; k < seg.count; k++) {
      const e = segmentEntry(seg, k)
      const key = cidKey(e.cid)
      // manifests are staged with the catalog commit that lists them (takeManifests), never before
      if (e.kind === ENTRY_KIND.manifest || !reach.has(key) || seen.has(key) || blocks.has(e.cid)) continue
      seen.add(key)
      const p = seg.packs[e.pack]!
      let slot = byPack.get(p.hash)
      if (!slot) byPack.set(p.hash, (slot = { size: p.size, entries: [] }))
      slot.entries.push({ ...e, cid: e.cid.slice() })
    }
  }
  const packs = [...byPack]
  const fetches: Promise<Uint8Array>[] = []
  const fetch = (k: number) => {
    const [hash] = packs[k]!
    const p = r.objects.get(packKey(hash), { signal: opts.signal }).then((b) => {
      if (!b) throw new CkptError('CKPT_REMOTE_UNAVAILABLE', `pack ${packKey(hash)} is missing from ${r.url}`, { remote: r.url, key: packKey(hash) })
      return b
    })
    p.catch(() => {})
    fetches[k] = p
  }
  for (let k = 0; k < Math.min(PACKS_IN_FLIGHT, packs.length); k++) fetch(k)
  let count = 0
  let bytes = 0
  for (let k = 0; k < packs.length; k++) {
    opts.onProgress?.({ phase: 'blocks', done: k, total: packs.length })
    const data = await fetches[k]!
    if (k + PACKS_IN_FLIGHT < packs.length) fetch(k + PACKS_IN_FLIGHT)
    const [hash, { entries }] = packs[k]!
    const deltas: Uint8Array[] = []
    for (const e of entries.sort((a, b) => a.offset - b.offset)) {
      const ent = data.subarray(e.offset, e.offset + ENTRY_HEADER_SIZE + e.storedLength)
      const payload = entryPayload(ent, e)
      const delta = e.codec === AT_REST.nodeDelta
      // a node delta is proven through its chain once staged (below); every other block here
      const ok = isFault(payload) ? payload : delta ? (entryCrcOk(ent, payload) ? payload : { fault: 'CKPT_BAD_PACK' as const, message: 'the entry fails its checksum' }) : openPayload(e.codec, payload, e.rawLength, e.cid, 4)
      if (isFault(ok)) {
        throw new CkptError('CKPT_HASH_MISMATCH', `block ${cidToString(e.cid)} is damaged on the remote (${packKey(hash)}, offset ${e.offset}): ${ok.message}`, { cid: cidToString(e.cid), remote: r.url, key: packKey(hash), offset: e.offset })
      }
      const stored = payload as Uint8Array
      if (delta && !blocks.has(deltaBaseCid(stored))) {
        // its base is not here (nothing the taken checkpoints reach): the node is stored whole
        const raw = blocks.getNodeBytes(e.cid, false).bytes
        const c = compressBlock(blocks.compressor, raw)
        blocks.put(e.cid, c.code, c.bytes, raw.length)
      } else {
        blocks.put(e.cid, e.codec, stored, e.rawLength, { kind: e.kind === ENTRY_KIND.manifest ? ENTRY_KIND.manifest : ENTRY_KIND.block, depth: e.depth ?? 0 })
        if (delta) deltas.push(e.cid)
      }
      count++
      bytes += e.storedLength
    }
    // node deltas staged from this pack, each resolved through its chain and re-hashed
    for (const cid of deltas) blocks.getNodeBytes(cid, false)
    fetches[k] = undefined as unknown as Promise<Uint8Array>
    if (blocks.stagedBytes >= COMMIT_EVERY) await repo.commit()
  }
  return { blocks: count, bytes }
}
