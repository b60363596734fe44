/**
 * A timeline's life after ingest (SPEC.md, "Retention policies"): thinning by a retention policy, removing checkpoints,
 * forking a branch, named refs (pins). All of these change the catalog only, in one atomic batch;
 * blocks nothing reaches any more are reclaimed by gc.
 */
import type { CID } from 'multiformats/cid'
import { blake3 } from '../codecs/blake3.js'
import { cidBytes, cidEquals, cidKey, cidToString, DAG_CBOR, toCID, type CidBytes } from '../codecs/cid.js'
import { compressBlock } from '../codecs/compress.js'
import { CkptError } from '../codecs/errors.js'
import { decodeManifest, encodeManifest, type Manifest } from '../codecs/manifest.js'
import { ENTRY_KIND } from '../codecs/pack-format.js'
import type { CatalogOp, Repository, TimelineRecord } from '../store/index.js'
import { parsePolicy, planKeep, type Policy } from './policy.js'
import { checkName } from './refs.js'
import { newLineage, type StoreContext } from './context.js'
import type { LogEntry } from './types.js'

export interface ThinResult {
  policy: string
  kept: LogEntry[]
  dropped: LogEntry[]
  dryRun: boolean
}

/** A label or pin in a checkpoint's meta protects it from thinning. */
export function isProtected(m: Manifest): boolean {
  return 'label' in m.meta || 'pin' in m.meta
}

/** CIDs named by refs (they protect their checkpoints too). */
export async function pinnedCids(repo: Repository): Promise<Set<string>> {
  const out = new Set<string>()
  for await (const r of repo.refs()) out.add(cidKey(r.cid))
  return out
}

/** The catalog ops that remove these entries (SPEC.md, "Catalog records": drop). */
export function dropOps(repo: Repository, entries: { timeline: string; vtime: bigint; cid: CidBytes }[]): CatalogOp[] {
  return entries.map((e) => repo.dropCheckpointOp(e))
}

/** A timeline's checkpoints in vtime order, each marked protected (labelled, pinned or named by a ref): what a policy plans over. */
export async function thinCandidates(ctx: StoreContext, timeline: string): Promise<{ timeline: string; vtime: bigint; cid: CidBytes; protected: boolean }[]> {
  const repo = ctx.repo
  const pins = await pinnedCids(repo)
  const list: { timeline: string; vtime: bigint; cid: CidBytes; protected: boolean }[] = []
  for await (const e of repo.checkpoints(timeline)) {
    const m = await ctx.manifestOf(e.cid)
    list.push({ timeline, vtime: e.vtime, cid: e.cid, protected: isProtected(m) || pins.has(cidKey(e.cid)) })
  }
  return list
}

export async function thinTimeline(ctx: StoreContext, timeline: string, spec: string | Policy, opts: { dryRun?: boolean } = {}): Promise<ThinResult> {
  checkName('timeline', timeline)
  const policy = typeof spec === 'string' ? parsePolicy(spec) : spec
  return ctx.exclusive(async () => {
    const repo = ctx.repo
    if (!(await repo.getTimeline(timeline))) throw new CkptError('CKPT_NOT_FOUND', `timeline ${timeline} does not exist`, { timeline })
    const list = await thinCandidates(ctx, timeline)
    const keep = planKeep(list, policy)
    const kept = list.filter((_, i) => keep[i])
    const dropped = list.filter((_, i) => !keep[i])
    if (!opts.dryRun && dropped.length > 0) {
      await repo.commit(dropOps(repo, dropped))
      await ctx.timelinesChanged([timeline], { forget: dropped.map((d) => d.cid) })
    }
    const entry = (e: { timeline: string; vtime: bigint; cid: CidBytes }): LogEntry => ({ timeline: e.timeline, vtime: e.vtime, cid: toCID(e.cid) })
    return { policy: policy.text, kept: kept.map(entry), dropped: dropped.map(entry), dryRun: opts.dryRun === true }
  })
}

/** Removes checkpoints from the catalog (by any reference); returns what was removed. */
export async function removeCheckpoints(ctx: StoreContext, refs: (string | CID)[]): Promise<LogEntry[]> {
  if (!Array.isArray(refs) || refs.length === 0) throw new CkptError('CKPT_BAD_ARGUMENT', 'rm needs at least one checkpoint')
  return ctx.exclusive(async () => {
    const repo = ctx.repo
    const pins = await pinnedCids(repo)
    const entries: { timeline: string; vtime: bigint; cid: CidBytes }[] = []
    for (const r of refs) {
      const cid = await ctx.resolve(r)
      const where = await findEntries(repo, cid, r)
      if (pins.has(cidKey(cid))) {
        throw new CkptError('CKPT_PINNED', `checkpoint ${cidToString(cid)} is pinned by a ref; remove the ref first (store.deleteRef / ckpt ref --delete)`, { cid: cidToString(cid) })
      }
      for (const w of where) if (!entries.some((e) => e.timeline === w.timeline && e.vtime === w.vtime)) entries.push(w)
    }
    await repo.commit(dropOps(repo, entries))
    await ctx.timelinesChanged(
      entries.map((e) => e.timeline),
      { forget: entries.map((e) => e.cid) },
    )
    return entries.map((e) => ({ timeline: e.timeline, vtime: e.vtime, cid: toCID(e.cid) }))
  })
}

/**
 * Checkpoints stored in the packs that no timeline lists and whose removal no record explains (a
 * store upgraded from format 1, or a catalog that lost them): each as its manifest names it. gc does
 * not run while there is one; `rm` of its CID records its removal, a repair with adopt catalogues it.
 */
export async function* uncatalogued(ctx: StoreContext): AsyncIterable<LogEntry> {
  const repo = ctx.repo
  const pinned = await pinnedCids(repo)
  for await (const cid of repo.manifests()) {
    if (pinned.has(cidKey(cid)) || (await repo.isCatalogued(cid)) || (await repo.isRemoved(cid))) continue
    let m: Manifest
    try {
      m = await ctx.manifestOf(cid)
    } catch {
      continue // damaged: verify names it
    }
    yield { timeline: m.timeline, vtime: m.vtime, cid: toCID(cid) }
  }
}

/** The catalog entries holding a checkpoint: the one a TIMELINE@VTIME ref names, or its record's. */
async function findEntries(repo: Repository, cid: CidBytes, ref: string | CID): Promise<{ timeline: string; vtime: bigint; cid: CidBytes }[]> {
  if (typeof ref === 'string' && ref.includes('@')) {
    // a removal names its checkpoint exactly: TIMELINE@VTIME must be a checkpoint's own vtime
    const tl = ref.slice(0, ref.lastIndexOf('@'))
    const vtime = BigInt(ref.slice(ref.lastIndexOf('@') + 1))
    const e = await repo.seek(tl, vtime)
    if (!e || e.vtime !== vtime) throw new CkptError('CKPT_NOT_FOUND', `timeline ${tl} has no checkpoint at vtime ${vtime} (rm takes exact vtimes; ckpt log lists them)`, { timeline: tl, vtime: vtime.toString() })
    if (cidEquals(e.cid, cid)) return [{ timeline: tl, vtime: e.vtime, cid }]
  }
  const rec = await repo.checkpointRecord(cid)
  if (rec) {
    const e = await repo.seek(rec.timeline, rec.vtime)
    if (e && e.vtime === rec.vtime && cidEquals(e.cid, cid)) return [{ timeline: rec.timeline, vtime: rec.vtime, cid }]
  }
  // a CID catalogued under other names (an import with --as): every entry that holds it
  const out: { timeline: string; vtime: bigint; cid: CidBytes }[] = []
  for await (const t of repo.timelines()) for await (const e of repo.checkpoints(t.name)) if (cidEquals(e.cid, cid)) out.push({ timeline: t.name, vtime: e.vtime, cid })
  if (out.length > 0) return out
  // a checkpoint stored but in no timeline that no removal explains (gc refuses to run while there
  // is one): removing it records its removal, at the place its manifest names
  if ((await repo.isManifest(cid)) && !(await repo.isRemoved(cid))) {
    const m = decodeManifest(repo.blocks.get(cid))
    return [{ timeline: m.timeline, vtime: m.vtime, cid }]
  }
  throw new CkptError('CKPT_NOT_FOUND', `checkpoint ${cidToString(cid)} is in no timeline`, { cid: cidToString(cid) })
}

/**
 * A new timeline branching off a checkpoint: its first checkpoint is a new manifest sharing every
 * region and blob of the source (so it costs a few hundred bytes), at the same vtime, with the new
 * timeline's name and a lineage of its own, and the source as its parent.
 */
export async function forkTimeline(ctx: StoreContext, name: string, from: string | CID, opts: { policy?: string; meta?: Record<string, string> } = {}): Promise<LogEntry> {
  checkName('timeline', name)
  if (opts.policy !== undefined) parsePolicy(opts.policy)
  const src = await ctx.resolve(from)
  const m = await ctx.manifestOf(src)
  return ctx.exclusive(async () => {
    const repo = ctx.repo
    if (await repo.getTimeline(name)) throw new CkptError('CKPT_TIMELINE_CONFLICT', `timeline ${name} exists already`, { timeline: name })
    const lineage = newLineage()
    const manifest: Manifest = {
      ...m,
      timeline: name,
      lineage,
      wall: Date.now(),
      parent: src,
      meta: { ...(opts.meta ?? {}), forkedFrom: `${m.timeline}@${m.vtime}` },
    }
    const bytes = encodeManifest(manifest)
    const cid = cidBytes(DAG_CBOR, blake3(bytes))
    const c = compressBlock(repo.blocks.compressor, bytes)
    repo.blocks.put(cid, c.code, c.bytes, bytes.length, { kind: ENTRY_KIND.manifest })
    const record: TimelineRecord = {
      name,
      lineage,
      regions: Object.fromEntries(Object.entries(m.regions).map(([k, r]) => [k, { size: r.size, chunkSize: r.chunkSize }])),
      created: Date.now(),
      forkedFrom: { timeline: m.timeline, vtime: m.vtime.toString(), cid: cidToString(src) },
      ...(opts.policy !== undefined ? { policy: parsePolicy(opts.policy).text } : {}),
    }
    await repo.commit([repo.putTimelineOp(record), ...repo.putCheckpointOps({ timeline: name, vtime: m.vtime, cid })])
    return { timeline: name, vtime: m.vtime, cid: toCID(cid) }
  })
}

/** Sets (or, with null, clears) the policy a timeline thins itself by after each checkpoint. */
export async function setTimelinePolicy(ctx: StoreContext, timeline: string, spec: string | null): Promise<string | null> {
  const text = spec === null ? null : parsePolicy(spec).text
  return ctx.exclusive(async () => {
    const repo = ctx.repo
    const rec = await repo.getTimeline(checkName('timeline', timeline))
    if (!rec) throw new CkptError('CKPT_NOT_FOUND', `timeline ${timeline} does not exist`, { timeline })
    const next: TimelineRecord = { ...rec }
    if (text === null) delete next.policy
    else next.policy = text
    await repo.commit([repo.putTimelineOp(next)])
    await ctx.timelinesChanged([timeline], { record: next })
    return text
  })
}


export async function setRef(ctx: StoreContext, name: string, ref: string | CID): Promise<LogEntry | { cid: CID }> {
  checkName('ref', name)
  const cid = await ctx.resolve(ref)
  await ctx.manifestOf(cid)
  await ctx.exclusive(async () => {
    const repo = ctx.repo
    await repo.commit([repo.setRefOp(name, cid)])
    await ctx.protectionChanged()
  })
  return { cid: toCID(cid) }
}

export async function deleteRef(ctx: StoreContext, name: string): Promise<boolean> {
  checkName('ref', name)
  return ctx.exclusive(async () => {
    const repo = ctx.repo
    if (!(await repo.getRef(name))) return false
    await repo.commit([repo.setRefOp(name, null)])
    await ctx.protectionChanged()
    return true
  })
}
