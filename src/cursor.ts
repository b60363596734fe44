/**
 * The cursor a debugger keeps (SPEC.md §23.2): one live buffer per region of a timeline and the
 * current checkpoint's blobs; goto() moves them to another checkpoint by writing only the chunks that
 * differ between the two checkpoints plus the chunks the caller wrote since (dirty()).
 */
import { cidEquals, toCID, type CidBytes } from '../codecs/cid.js'
import { CkptError } from '../codecs/errors.js'
import type { Manifest } from '../codecs/manifest.js'
import type { StoreContext } from './context.js'
import { checkName, toVtime } from './refs.js'
import { Geometry } from './region-tree.js'
import { restoreRegion } from './restore.js'
import { dirtyList, travelRegion, type JumpRegion, type JumpResult } from './travel.js'
import type { LogEntry } from './types.js'

export interface CursorOptions {
  /** hash the buffers at every goto instead of trusting the diff and dirty set (slow: every chunk hashed) */
  check?: boolean
  /**
   * the caller's own buffers (e.g. an emulator's RAM), one per region, of the region's size; shared
   * memory lets the workers write into them directly. Without `at`, the first goto hashes them
   * (checked) and writes what differs.
   */
  buffers?: Record<string, Uint8Array>
  /** the checkpoint `buffers` hold */
  at?: unknown
  /** only these regions (default: all of the timeline's) */
  regions?: readonly string[]
}

/** a region of the cursor: its buffer and shape, and the chunks written since the last goto */
interface CursorRegion {
  geo: Geometry
  buffer: Uint8Array
  dirty: number[]
}

/** The node cache while a cursor is open is at least this many units of 256 slots (a jump loads a few hundred nodes). */
const CURSOR_NODE_CACHE = 16384

export class Cursor {
  private readonly parts = new Map<string, CursorRegion>()
  /** what the buffers hold: all zero (fresh memory), a checkpoint's content, or unknown (caller's buffers, a failed jump) */
  private state: 'zero' | 'at' | 'unknown'
  private here: { cid: CidBytes; m: Manifest } | undefined
  private blobMap: Record<string, Uint8Array> = {}
  private queue: Promise<unknown> = Promise.resolve()

  /** @internal use store.cursor() */
  constructor(
    private readonly ctx: StoreContext,
    readonly timeline: string,
    shapes: Map<string, Geometry>,
    private readonly opts: CursorOptions,
  ) {
    for (const name of opts.regions ?? []) {
      if (!shapes.has(name)) throw new CkptError('CKPT_UNKNOWN_REGION', `timeline ${timeline} has no region ${name}`, { region: name })
    }
    for (const [name, geo] of shapes) {
      if (opts.regions && !opts.regions.includes(name)) continue
      const given = opts.buffers?.[name]
      if (given !== undefined && (!(given instanceof Uint8Array) || given.length !== geo.size)) {
        throw new CkptError('CKPT_WRONG_SIZE', `buffer for region ${name} must be a Uint8Array of ${geo.size} bytes`, { region: name })
      }
      const buffer = given ?? allocate(name, geo.size)
      this.parts.set(name, { geo, buffer, dirty: [] })
    }
    for (const name of Object.keys(opts.buffers ?? {})) {
      if (!shapes.has(name)) throw new CkptError('CKPT_UNKNOWN_REGION', `timeline ${timeline} has no region ${name}`, { region: name })
    }
    this.state = opts.buffers ? 'unknown' : 'zero'
  }

  /** One live buffer per region, holding the current checkpoint's content (plus what the caller wrote). */
  get regions(): Readonly<Record<string, Uint8Array>> {
    const out: Record<string, Uint8Array> = {}
    for (const [name, p] of this.parts) out[name] = p.buffer
    return out
  }

  /** The current checkpoint's blobs. */
  get blobs(): Readonly<Record<string, Uint8Array>> {
    return this.blobMap
  }

  /** The checkpoint the buffers hold (undefined before the first goto, or after a failed one). */
  get current(): LogEntry | undefined {
    const h = this.here
    return h && this.state === 'at' ? { timeline: h.m.timeline, vtime: h.m.vtime, cid: toCID(h.cid) } : undefined
  }

  /** Chunks of a region the caller wrote since the last goto: the next goto rewrites them too. */
  dirty(region: string, chunks: Iterable<number>): void {
    const p = this.parts.get(region)
    if (!p) throw new CkptError('CKPT_UNKNOWN_REGION', `cursor has no region ${region}`, { region })
    for (const i of dirtyList(chunks, p.geo, region)) p.dirty.push(i)
  }

  /**
   * Moves the buffers to a checkpoint: a reference (CID, TIMELINE@VTIME, ref:NAME) or a vtime of the
   * cursor's timeline (the checkpoint at or before it). Jumps run one at a time, in call order.
   */
  goto(target: unknown): Promise<JumpResult> {
    const run = this.queue.then(() => this.jump(target))
    this.queue = run.catch(() => {})
    return run
  }

  private async target(target: unknown): Promise<CidBytes> {
    if (typeof target === 'number' || typeof target === 'bigint') {
      const vt = toVtime(target)
      const e = await this.ctx.repo.seek(this.timeline, vt)
      if (!e) throw new CkptError('CKPT_NOT_FOUND', `timeline ${this.timeline} has no checkpoint at or before vtime ${vt}`, { timeline: this.timeline, vtime: String(vt) })
      return e.cid
    }
    return this.ctx.resolve(target)
  }

  private async jump(target: unknown): Promise<JumpResult> {
    const t0 = performance.now()
    this.ctx.checkOpen()
    const cid = await this.target(target)
    const m = await this.ctx.manifestOf(cid)
    for (const [name, p] of this.parts) {
      const r = m.regions[name]
      if (!r) throw new CkptError('CKPT_UNKNOWN_REGION', `checkpoint ${toCID(cid)} has no region ${name}`, { region: name })
      if (r.size !== p.geo.size || r.chunkSize !== p.geo.chunkSize || r.fanout !== p.geo.fanout) {
        throw new CkptError('CKPT_WRONG_SIZE', `region ${name} has another shape in checkpoint ${toCID(cid)}`, { region: name })
      }
    }
    const from = this.current
    const before = this.state === 'at' ? this.here!.m : undefined
    const wasZero = this.state === 'zero'
    this.state = 'unknown'
    const blocks = this.ctx.repo.blocks
    const regions: Record<string, JumpRegion> = {}
    // the regions at once: one region's reads overlap another's tree walk
    const jumps = [...this.parts].map(async ([name, p]) => {
      const root = m.regions[name]!.root
      const rootA = before ? before.regions[name]!.root : wasZero ? null : undefined
      // fresh or unknown buffers of its own: a whole restore (the restore path reads each distinct chunk once)
      if ((rootA === undefined || wasZero) && !this.opts.check && !this.opts.buffers) {
        const r = await restoreRegion(blocks, this.ctx.pool, p.geo, root, p.buffer)
        regions[name] = { chunksWritten: p.geo.chunks, bytesWritten: r.bytesWritten }
      } else {
        const check = this.opts.check === true || rootA === undefined
        // dirty() may have been called several times: one sorted list without repeats
        const r = await travelRegion(blocks, this.ctx.pool, p.geo, rootA, root, dirtyList(p.dirty, p.geo, name), { buffer: p.buffer }, check)
        regions[name] = { chunksWritten: r.chunksWritten + r.holes, bytesWritten: r.bytesWritten, ...(r.mismatched !== undefined ? { mismatched: r.mismatched } : {}) }
      }
    })
    const failed = (await Promise.allSettled(jumps)).find((r) => r.status === 'rejected')
    if (failed) throw (failed as PromiseRejectedResult).reason
    for (const p of this.parts.values()) p.dirty = []
    const blobsChanged = this.readBlobs(before, m)
    this.here = { cid, m }
    this.state = 'at'
    return { from, to: this.current!, regions, blobsChanged, ms: performance.now() - t0 }
  }

  /** The blobs of m, reading only those whose chunks differ from the previous checkpoint's. */
  private readBlobs(before: Manifest | undefined, m: Manifest): string[] {
    const changed: string[] = []
    const next: Record<string, Uint8Array> = {}
    for (const [name, b] of Object.entries(m.blobs)) {
      const a = before?.blobs[name]
      const kept = this.blobMap[name]
      if (kept && a && a.size === b.size && a.chunks.length === b.chunks.length && a.chunks.every((c, i) => cidEquals(c.cid, b.chunks[i]!.cid))) {
        next[name] = kept
        continue
      }
      const out = new Uint8Array(b.size)
      let at = 0
      for (const c of b.chunks) {
        const bytes = this.ctx.repo.blocks.get(c.cid)
        if (bytes.length !== c.length || at + c.length > b.size) throw new CkptError('CKPT_BAD_MANIFEST', `blob ${name} chunk lengths disagree`, { blob: name })
        out.set(bytes, at)
        at += bytes.length
      }
      if (at !== b.size) throw new CkptError('CKPT_BAD_MANIFEST', `blob ${name} chunks do not add up to its size`, { blob: name })
      next[name] = out
      changed.push(name)
    }
    for (const name of Object.keys(this.blobMap)) if (!(name in next)) changed.push(name)
    this.blobMap = next
    return changed.sort()
  }

  /** @internal the first position of caller-given buffers */
  async init(): Promise<void> {
    if (this.opts.at === undefined) return
    const cid = await this.ctx.resolve(this.opts.at)
    const m = await this.ctx.manifestOf(cid)
    for (const [name, p] of this.parts) {
      const r = m.regions[name]
      if (!r || r.size !== p.geo.size || r.chunkSize !== p.geo.chunkSize || r.fanout !== p.geo.fanout) {
        throw new CkptError('CKPT_BAD_ARGUMENT', `\`at\` checkpoint does not have region ${name} in the timeline's shape`, { region: name })
      }
    }
    this.readBlobs(undefined, m)
    this.here = { cid, m }
    this.state = 'at'
  }
}

/** Shared memory for a region: a size the process cannot allocate is said as such. */
function allocate(region: string, size: number): Uint8Array {
  try {
    return new Uint8Array(new SharedArrayBuffer(size))
  } catch (err) {
    throw new CkptError('CKPT_BAD_ARGUMENT', `cannot allocate ${size} bytes for region ${region}: open the cursor with { regions } or with buffers of your own`, { region, size }, err)
  }
}

/** A cursor over a timeline, its regions shaped as in the timeline's latest checkpoint. */
export async function openCursor(ctx: StoreContext, timeline: string, opts: CursorOptions = {}): Promise<Cursor> {
  ctx.checkOpen()
  const name = checkName('timeline', timeline)
  if (opts === null || typeof opts !== 'object') throw new CkptError('CKPT_BAD_ARGUMENT', 'cursor options must be an object')
  if (opts.regions !== undefined && (!Array.isArray(opts.regions) || opts.regions.some((r) => typeof r !== 'string'))) {
    throw new CkptError('CKPT_BAD_ARGUMENT', 'cursor option regions must be an array of region names')
  }
  const latest = await ctx.repo.seek(name, 0xffffffffffffffffn)
  if (!latest) throw new CkptError('CKPT_NOT_FOUND', `timeline ${name} has no checkpoints`, { timeline: name })
  const m = await ctx.manifestOf(latest.cid)
  const shapes = new Map<string, Geometry>()
  for (const [r, s] of Object.entries(m.regions)) shapes.set(r, new Geometry(s.size, s.chunkSize, s.fanout))
  const blocks = ctx.repo.blocks
  const was = blocks.setNodeCacheSize(CURSOR_NODE_CACHE)
  if (was > CURSOR_NODE_CACHE) blocks.setNodeCacheSize(was)
  const c = new Cursor(ctx, name, shapes, opts)
  await c.init()
  return c
}
