/**
 * Page history (SPEC.md §23.3): at which checkpoints of a timeline the content of a chunk or a byte
 * range changed, found by bisection over the timeline's checkpoints (equal CIDs on the path from the
 * root end the descent), and firstChange(): the first checkpoint after T whose bytes differ.
 *
 * The selection is compared between two checkpoints along the path from the region root: a node (or a
 * chunk) with the same CID at both ends means everything under it is equal, so the descent stops there
 * without reading further; only the subtrees that cover the selection are entered. A chunk a byte
 * range covers only in part is, where its CIDs differ, read at both ends and compared on the selected
 * bytes: a write elsewhere in the page is not a change of those bytes. Bisection compares
 * the two ends of an interval of checkpoints and splits it only when they differ: O(log n) comparisons
 * per change found. Its one blind spot: a change undone within an interval (A -> B -> A) leaves equal
 * ends, so it is not seen; `exact` compares every consecutive pair (O(n)) and sees everything.
 *
 * The timeline's (vtime, CID) list is read from the catalog once and kept per store, keyed by the
 * catalog's commit seq (every commit, the adds and removals of checkpoints among them, advances it):
 * a query after a commit reads it again, others cost no catalog read.
 */
import type { CID } from 'multiformats/cid'
import { cidKey, toCID, type CidBytes } from '../codecs/cid.js'
import { CkptError } from '../codecs/errors.js'
import type { Manifest } from '../codecs/manifest.js'
import type { NodeEntries } from '../codecs/tree-node.js'
import type { BlockStore, Repository, TimelineRecord } from '../store/index.js'
import type { StoreContext } from './context.js'
import { sameCid, sameDigest, slotCid } from './node-compare.js'
import { checkName, toVtime } from './refs.js'
import { Geometry } from './region-tree.js'

/** A chunk index, or a byte range of the region (length defaults to 1 byte). */
export type HistorySelector = number | { offset: number; length?: number }

export interface HistoryOptions {
  /** only checkpoints with vtime > after (firstChange: the baseline is the checkpoint at or before `after`) */
  after?: bigint | number
  /** only checkpoints with vtime <= until */
  until?: bigint | number
  /** compare every pair of consecutive checkpoints (O(n) tree reads) instead of bisecting: finds changes that were undone within an interval (A -> B -> A) */
  exact?: boolean
  /** newest change first */
  reverse?: boolean
  /** at most this many entries */
  limit?: number
}

/** One change: the checkpoint at which the selected bytes first had new content. */
export interface HistoryEntry {
  timeline: string
  vtime: bigint
  /** the checkpoint with the new content */
  cid: CID
  /** the checkpoint before it (null: the first checkpoint in the window, its content the baseline) */
  previous: { vtime: bigint; cid: CID } | null
  /** the selected chunks whose CIDs differ from the previous checkpoint's (all of them for the baseline); null is a hole (all zero) */
  chunks: { index: number; before: CID | null; after: CID | null }[]
  /**
   * Set when this checkpoint's region does not have the timeline's shape: `missing` (its manifest
   * lacks the region) or `resized` (another size or chunk size). Such a checkpoint counts as
   * a change, listing every selected chunk with `after` null; the checkpoint after it that has the
   * shape again lists them all with `before` null. Catalogued timelines keep one shape, so only a
   * damaged or hand-made catalog shows it.
   */
  shape?: 'missing' | 'resized'
}

// ---------------------------------------------------------------- the timeline's checkpoints, cached

interface TimelineView {
  /** the catalog's commit seq when it was read (-1: a read-only store, whose catalog never changes) */
  stamp: number
  record: TimelineRecord
  vtimes: bigint[]
  cids: CidBytes[]
  /** each checkpoint's manifest regions, read when first needed */
  regions: (Manifest['regions'] | undefined)[]
}

const views = new WeakMap<Repository, Map<string, TimelineView>>()
/** timelines whose checkpoint list a store keeps */
const MAX_VIEWS = 64

/** What changes whenever the catalog does: the last commit's seq; undefined: no cheap sign (no caching). */
function catalogStamp(repo: Repository): number | undefined {
  const pos = repo.catalogPosition
  if (pos) return pos.seq
  return repo.readOnly ? -1 : undefined
}

async function timelineView(ctx: StoreContext, name: string): Promise<TimelineView> {
  const repo = ctx.repo
  // the stamp is read before the catalog: what is read is then at least as new as the stamp says
  const stamp = catalogStamp(repo)
  let cache = views.get(repo)
  if (!cache) views.set(repo, (cache = new Map()))
  const old = cache.get(name)
  if (old && stamp !== undefined && old.stamp === stamp) return old
  const record = await repo.getTimeline(name)
  if (!record) throw new CkptError('CKPT_NOT_FOUND', `timeline ${name} does not exist`, { timeline: name })
  const vtimes: bigint[] = []
  const cids: CidBytes[] = []
  for await (const e of repo.checkpoints(name)) {
    vtimes.push(e.vtime)
    cids.push(Uint8Array.prototype.slice.call(e.cid) as CidBytes)
  }
  const regions: TimelineView['regions'] = new Array(cids.length)
  if (old) {
    // checkpoints are immutable: what was read of the ones still listed stays valid
    const known = new Map<string, Manifest['regions']>()
    old.cids.forEach((c, k) => old.regions[k] && known.set(Buffer.from(c).toString('latin1'), old.regions[k]!))
    if (known.size) cids.forEach((c, k) => (regions[k] = known.get(Buffer.from(c).toString('latin1'))))
  }
  const view: TimelineView = { stamp: stamp ?? NaN, record, vtimes, cids, regions }
  if (stamp !== undefined) {
    cache.delete(name)
    if (cache.size >= MAX_VIEWS) cache.delete(cache.keys().next().value!)
    cache.set(name, view)
  }
  return view
}

/** The first index whose vtime is > v (vtimes ascending). */
function upperBound(vtimes: bigint[], v: bigint): number {
  let lo = 0
  let hi = vtimes.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (vtimes[mid]! <= v) lo = mid + 1
    else hi = mid
  }
  return lo
}

/**
 * Region roots (decoded, verified) of the checkpoints queried, kept per store apart from the block
 * store's node cache: every query of a timeline starts from them, and leaves read meanwhile would
 * push them out of a cache they share. Bounded by bytes; the oldest go first.
 */
interface TopMemo {
  nodes: Map<string, NodeEntries>
  bytes: number
}
const topMemos = new WeakMap<Repository, TopMemo>()
const MAX_TOP_BYTES = 32 << 20

function topMemo(repo: Repository): TopMemo {
  let m = topMemos.get(repo)
  if (!m) topMemos.set(repo, (m = { nodes: new Map(), bytes: 0 }))
  return m
}

function nodeBytes(e: NodeEntries): number {
  return e.codecs.byteLength + e.digests.byteLength + 64
}

// ---------------------------------------------------------------- arguments

interface Selection {
  /** chunks [first, last] of the timeline's region shape */
  first: number
  last: number
  size: number
  chunkSize: number
  /** the selected bytes [from, to): a chunk they cover only in part is compared on those bytes */
  from: number
  to: number
  /** chunk bytes read for such comparisons, by CID */
  bytes: Map<string, Uint8Array>
}

function selection(view: TimelineView, timeline: string, region: string, sel: HistorySelector): Selection {
  const spec = Object.prototype.hasOwnProperty.call(view.record.regions, region) ? view.record.regions[region] : undefined
  if (!spec) throw new CkptError('CKPT_UNKNOWN_REGION', `timeline ${timeline} has no region ${region}`, { timeline, region })
  const chunks = Math.ceil(spec.size / spec.chunkSize)
  if (typeof sel === 'number') {
    if (!Number.isInteger(sel)) throw new CkptError('CKPT_BAD_ARGUMENT', `a chunk index must be an integer, not ${sel}`, { region, index: sel })
    if (sel < 0 || sel >= chunks) throw new CkptError('CKPT_OUT_OF_RANGE', `chunk ${sel} is outside region ${region} (0..${chunks - 1})`, { region, index: sel })
    return { first: sel, last: sel, size: spec.size, chunkSize: spec.chunkSize, from: sel * spec.chunkSize, to: Math.min(spec.size, (sel + 1) * spec.chunkSize), bytes: new Map() }
  }
  if (typeof sel !== 'object' || sel === null) throw new TypeError('a history selector is a chunk index or { offset, length }')
  const { offset, length = 1 } = sel
  if (typeof offset !== 'number' || typeof length !== 'number') throw new TypeError('offset and length must be numbers')
  if (!Number.isSafeInteger(offset) || offset < 0) throw new CkptError('CKPT_BAD_ARGUMENT', `offset must be a non-negative integer, not ${offset}`, { region, offset })
  if (!Number.isSafeInteger(length) || length < 1) throw new CkptError('CKPT_BAD_ARGUMENT', `length must be a positive integer, not ${length}`, { region, length })
  if (offset + length > spec.size) {
    throw new CkptError('CKPT_OUT_OF_RANGE', `bytes ${offset}..${offset + length - 1} are outside region ${region} (${spec.size} B)`, { region, offset, length, size: spec.size })
  }
  return { first: Math.floor(offset / spec.chunkSize), last: Math.floor((offset + length - 1) / spec.chunkSize), size: spec.size, chunkSize: spec.chunkSize, from: offset, to: offset + length, bytes: new Map() }
}

function optionalVtime(v: unknown, what: string): bigint | undefined {
  return v === undefined ? undefined : toVtime(v, what)
}

function checkOptions(opts: HistoryOptions): { after?: bigint; until?: bigint } {
  if (typeof opts !== 'object' || opts === null) throw new TypeError('options must be an object')
  for (const k of ['exact', 'reverse'] as const) if (opts[k] !== undefined && typeof opts[k] !== 'boolean') throw new TypeError(`${k} must be a boolean`)
  if (opts.limit !== undefined && (!Number.isSafeInteger(opts.limit) || opts.limit < 0)) {
    throw new CkptError('CKPT_BAD_ARGUMENT', `limit must be a non-negative integer, not ${String(opts.limit)}`, { limit: String(opts.limit) })
  }
  const after = optionalVtime(opts.after, 'after')
  const until = optionalVtime(opts.until, 'until')
  if (after !== undefined && until !== undefined && until < after) {
    throw new CkptError('CKPT_BAD_ARGUMENT', `until (${until}) is before after (${after})`, { after: after.toString(), until: until.toString() })
  }
  return { after, until }
}

// ---------------------------------------------------------------- one checkpoint's region

/** A checkpoint's region as the comparison sees it. */
type RegionState =
  | { kind: 'ok'; geo: Geometry; root: CidBytes | null; /** the root node, once read */ top?: NodeEntries | null }
  | { kind: 'missing' }
  | { kind: 'resized'; shape: string; root: CidBytes | null }

/** Comparisons of one selection across the checkpoints of one view (states loaded once per call). */
class Probe {
  private readonly states = new Map<number, RegionState>()
  private readonly geos = new Map<number, Geometry>()
  private readonly blocks: BlockStore
  private readonly memo: TopMemo

  constructor(
    private readonly ctx: StoreContext,
    private readonly view: TimelineView,
    private readonly region: string,
    readonly sel: Selection,
  ) {
    this.blocks = ctx.repo.blocks
    this.memo = topMemo(ctx.repo)
  }

  async state(i: number): Promise<RegionState> {
    const hit = this.states.get(i)
    if (hit) return hit
    let regions = this.view.regions[i]
    if (!regions) this.view.regions[i] = regions = (await this.ctx.manifestOf(this.view.cids[i]!)).regions
    const r = Object.prototype.hasOwnProperty.call(regions, this.region) ? regions[this.region] : undefined
    let st: RegionState
    if (!r) st = { kind: 'missing' }
    else if (r.size !== this.sel.size || r.chunkSize !== this.sel.chunkSize) st = { kind: 'resized', shape: `${r.size}/${r.chunkSize}/${r.fanout}`, root: r.root }
    else {
      let geo = this.geos.get(r.fanout)
      if (!geo) this.geos.set(r.fanout, (geo = new Geometry(r.size, r.chunkSize, r.fanout)))
      st = { kind: 'ok', geo, root: r.root }
    }
    this.states.set(i, st)
    return st
  }

  /** The root node of an ok state (null: the region is all zero), from the memo or read (and kept). */
  top(st: RegionState & { kind: 'ok' }): NodeEntries | null {
    if (st.top !== undefined) return st.top
    if (!st.root) return (st.top = null)
    const key = cidKey(st.root)
    let e = this.memo.nodes.get(key)
    if (!e) {
      e = this.blocks.getNode(st.root)
      this.memo.nodes.set(key, e)
      this.memo.bytes += nodeBytes(e)
      while (this.memo.bytes > MAX_TOP_BYTES && this.memo.nodes.size > 1) {
        const [k, old] = this.memo.nodes.entries().next().value!
        this.memo.nodes.delete(k)
        this.memo.bytes -= nodeBytes(old)
      }
    }
    return (st.top = e)
  }

  /** Whether the selected bytes are equal at checkpoints i and j (by CIDs, reading only what differs). */
  async same(i: number, j: number): Promise<boolean> {
    const a = await this.state(i)
    const b = await this.state(j)
    if (a.kind !== 'ok' || b.kind !== 'ok') {
      if (a.kind === 'missing' || b.kind === 'missing') return a.kind === b.kind
      return a.kind === 'resized' && b.kind === 'resized' && a.shape === b.shape && sameCid(a.root, b.root)
    }
    if (sameCid(a.root, b.root)) return true
    if (a.geo.fanout !== b.geo.fanout) return this.changes(a, b, true).length === 0
    return subtreeSame(this.blocks, a.geo, this.sel, a.geo.height, 0, a.root, b.root, this.top(a), this.top(b))
  }

  /** The selected chunks whose CIDs differ between states a and b (every one when a shape differs). */
  changes(a: RegionState, b: RegionState, stopAtFirst = false): { index: number; before: CidBytes | null; after: CidBytes | null }[] {
    const out: { index: number; before: CidBytes | null; after: CidBytes | null }[] = []
    if (a.kind === 'ok' && b.kind === 'ok' && a.geo.fanout === b.geo.fanout) {
      if (!sameCid(a.root, b.root)) subtreeChanges(this.blocks, a.geo, this.sel, a.geo.height, 0, a.root, b.root, out, this.top(a), this.top(b))
      return out
    }
    const before = this.chunkCids(a)
    const after = this.chunkCids(b)
    const whole = a.kind !== 'ok' || b.kind !== 'ok'
    for (let k = 0; k < after.length; k++) {
      if (whole || !sameCid(before[k]!, after[k]!)) {
        out.push({ index: this.sel.first + k, before: before[k]!, after: after[k]! })
        if (stopAtFirst) break
      }
    }
    return out
  }

  /** The CIDs of the selected chunks (null: a hole, or a region not of the timeline's shape). */
  chunkCids(s: RegionState): (CidBytes | null)[] {
    const out: (CidBytes | null)[] = new Array(this.sel.last - this.sel.first + 1).fill(null)
    if (s.kind === 'ok' && s.root) subtreeChunks(this.blocks, s.geo, this.sel, s.geo.height, 0, s.root, out, this.top(s))
    return out
  }
}

/** Slot s holds the same link (or hole) in both nodes; a missing node is all holes. */
function sameSlot(a: NodeEntries | null, b: NodeEntries | null, s: number): boolean {
  const ca = a ? a.codecs[s]! : 0
  const cb = b ? b.codecs[s]! : 0
  if (ca !== cb) return false
  return ca === 0 || sameDigest(a!.digests, b!.digests, s)
}

/** The slots of node (level, index) whose subtrees cover chunks of the selection. */
function slotRange(geo: Geometry, sel: Selection, level: number, index: number): [number, number] {
  const span = geo.fanout ** (level - 1)
  const base = index * geo.fanout
  const from = Math.max(0, Math.floor(sel.first / span) - base)
  const to = Math.min(geo.nodeCount(level, index) - 1, Math.floor(sel.last / span) - base)
  return [from, to]
}

function nodeOf(blocks: BlockStore, cid: CidBytes | null): NodeEntries | null {
  return cid ? blocks.getNode(cid) : null
}

/** A chunk's bytes (verified; zeros for a hole), kept a while for the comparisons that follow. */
function chunkBytes(blocks: BlockStore, sel: Selection, cid: CidBytes | null, length: number): Uint8Array {
  if (!cid) return new Uint8Array(length)
  const key = cidKey(cid)
  let b = sel.bytes.get(key)
  if (!b) {
    b = blocks.get(cid)
    if (sel.bytes.size >= 256) sel.bytes.delete(sel.bytes.keys().next().value!)
    sel.bytes.set(key, b)
  }
  return b
}

/**
 * Chunk `index` holds the same selected bytes in a and b, whose CIDs differ: true only when the
 * selection covers part of the chunk and that part is equal (the chunks are read and verified).
 */
function partSame(blocks: BlockStore, sel: Selection, index: number, a: CidBytes | null, b: CidBytes | null): boolean {
  const start = index * sel.chunkSize
  const end = Math.min(sel.size, start + sel.chunkSize)
  const from = Math.max(start, sel.from) - start
  const to = Math.min(end, sel.to) - start
  if (from === 0 && to === end - start) return false
  const ba = chunkBytes(blocks, sel, a, end - start)
  const bb = chunkBytes(blocks, sel, b, end - start)
  if (ba.length < to || bb.length < to) return false
  for (let k = from; k < to; k++) if (ba[k] !== bb[k]) return false
  return true
}

/** `ta`, `tb`: the nodes of a and b when the caller has them (the roots). */
function subtreeSame(blocks: BlockStore, geo: Geometry, sel: Selection, level: number, index: number, a: CidBytes | null, b: CidBytes | null, ta?: NodeEntries | null, tb?: NodeEntries | null): boolean {
  if (sameCid(a, b)) return true
  if (level === 0) return partSame(blocks, sel, index, a, b)
  const ea = ta !== undefined ? ta : nodeOf(blocks, a)
  const eb = tb !== undefined ? tb : nodeOf(blocks, b)
  const [from, to] = slotRange(geo, sel, level, index)
  for (let s = from; s <= to; s++) {
    if (sameSlot(ea, eb, s)) continue
    if (level === 1 && !partSame(blocks, sel, index * geo.fanout + s, slotCid(ea, s), slotCid(eb, s))) return false
    if (level === 1) continue
    if (!subtreeSame(blocks, geo, sel, level - 1, index * geo.fanout + s, slotCid(ea, s), slotCid(eb, s))) return false
  }
  return true
}

function subtreeChanges(
  blocks: BlockStore,
  geo: Geometry,
  sel: Selection,
  level: number,
  index: number,
  a: CidBytes | null,
  b: CidBytes | null,
  out: { index: number; before: CidBytes | null; after: CidBytes | null }[],
  ta?: NodeEntries | null,
  tb?: NodeEntries | null,
): void {
  if (sameCid(a, b)) return
  if (level === 0) {
    if (!partSame(blocks, sel, index, a, b)) out.push({ index, before: a, after: b })
    return
  }
  const ea = ta !== undefined ? ta : nodeOf(blocks, a)
  const eb = tb !== undefined ? tb : nodeOf(blocks, b)
  const [from, to] = slotRange(geo, sel, level, index)
  for (let s = from; s <= to; s++) {
    if (!sameSlot(ea, eb, s)) subtreeChanges(blocks, geo, sel, level - 1, index * geo.fanout + s, slotCid(ea, s), slotCid(eb, s), out)
  }
}

/** Fills out[chunk - sel.first] with the CIDs of the selected chunks under this subtree (holes stay null). */
function subtreeChunks(blocks: BlockStore, geo: Geometry, sel: Selection, level: number, index: number, cid: CidBytes | null, out: (CidBytes | null)[], given?: NodeEntries | null): void {
  if (!cid) return
  if (level === 0) {
    out[index - sel.first] = cid
    return
  }
  const e = given ?? blocks.getNode(cid)
  const [from, to] = slotRange(geo, sel, level, index)
  for (let s = from; s <= to; s++) if (e.codecs[s]) subtreeChunks(blocks, geo, sel, level - 1, index * geo.fanout + s, slotCid(e, s), out)
}

// ---------------------------------------------------------------- entries

async function entryAt(probe: Probe, view: TimelineView, timeline: string, i: number, prev: number | null): Promise<HistoryEntry> {
  const now = await probe.state(i)
  const cidOf = (c: CidBytes | null) => (c ? toCID(c) : null)
  let chunks: HistoryEntry['chunks']
  if (prev === null) {
    chunks = probe.chunkCids(now).map((c, k) => ({ index: probe.sel.first + k, before: null, after: cidOf(c) }))
  } else {
    chunks = probe.changes(await probe.state(prev), now).map((c) => ({ index: c.index, before: cidOf(c.before), after: cidOf(c.after) }))
  }
  const entry: HistoryEntry = {
    timeline,
    vtime: view.vtimes[i]!,
    cid: toCID(view.cids[i]!),
    previous: prev === null ? null : { vtime: view.vtimes[prev]!, cid: toCID(view.cids[prev]!) },
    chunks,
  }
  if (now.kind !== 'ok') entry.shape = now.kind
  return entry
}

/** Indexes in (lo, hi] at which the selection changed, by bisection, in order (reverse: newest first). */
async function* bisect(probe: Probe, lo: number, hi: number, reverse: boolean): AsyncGenerator<number> {
  const stack: [number, number][] = [[lo, hi]]
  while (stack.length) {
    const [a, b] = stack.pop()!
    if (b <= a || (await probe.same(a, b))) continue
    if (b === a + 1) {
      yield b
      continue
    }
    const mid = (a + b) >>> 1
    // depth first, the half to report first on top
    if (reverse) stack.push([a, mid], [mid, b])
    else stack.push([mid, b], [a, mid])
  }
}

/** Indexes in (lo, hi] at which the selection differs from the checkpoint before, every pair compared. */
async function* scan(probe: Probe, lo: number, hi: number, reverse: boolean): AsyncGenerator<number> {
  if (reverse) {
    for (let i = hi; i > lo; i--) if (!(await probe.same(i - 1, i))) yield i
  } else {
    for (let i = lo + 1; i <= hi; i++) if (!(await probe.same(i - 1, i))) yield i
  }
}

export async function* history(ctx: StoreContext, timeline: string, region: string, sel: HistorySelector, opts: HistoryOptions = {}): AsyncGenerator<HistoryEntry> {
  checkName('timeline', timeline)
  checkName('region', region)
  const { after, until } = checkOptions(opts)
  const view = await timelineView(ctx, timeline)
  const probe = new Probe(ctx, view, region, selection(view, timeline, region, sel))
  const first = after === undefined ? 0 : upperBound(view.vtimes, after)
  const last = (until === undefined ? view.vtimes.length : upperBound(view.vtimes, until)) - 1
  let left = opts.limit ?? Infinity
  if (first > last || left <= 0) return
  const reverse = opts.reverse === true
  if (!reverse) {
    yield await entryAt(probe, view, timeline, first, null)
    if (--left <= 0) return
  }
  const changes = opts.exact ? scan(probe, first, last, reverse) : bisect(probe, first, last, reverse)
  for await (const i of changes) {
    yield await entryAt(probe, view, timeline, i, i - 1)
    if (--left <= 0) return
  }
  if (reverse) yield await entryAt(probe, view, timeline, first, null)
}

export async function firstChange(ctx: StoreContext, timeline: string, region: string, sel: HistorySelector, opts: Omit<HistoryOptions, 'reverse' | 'limit'> = {}): Promise<HistoryEntry | undefined> {
  checkName('timeline', timeline)
  checkName('region', region)
  const { after, until } = checkOptions(opts)
  const view = await timelineView(ctx, timeline)
  const probe = new Probe(ctx, view, region, selection(view, timeline, region, sel))
  // the baseline: the checkpoint at or before `after`, else the first one
  const base = after === undefined ? 0 : Math.max(0, upperBound(view.vtimes, after) - 1)
  const from = after === undefined ? base + 1 : Math.max(base + 1, upperBound(view.vtimes, after))
  const to = (until === undefined ? view.vtimes.length : upperBound(view.vtimes, until)) - 1
  if (from > to) return undefined
  let hit: number | undefined
  if (opts.exact) {
    for (let j = from; j <= to && hit === undefined; j++) if (!(await probe.same(base, j))) hit = j
  } else if (!(await probe.same(base, to))) {
    // invariant: lo equals the baseline, hi differs from it
    let lo = from - 1
    let hi = to
    while (hi - lo > 1) {
      const mid = (lo + hi) >>> 1
      if (await probe.same(base, mid)) lo = mid
      else hi = mid
    }
    hit = hi
  }
  return hit === undefined ? undefined : entryAt(probe, view, timeline, hit, hit - 1)
}
