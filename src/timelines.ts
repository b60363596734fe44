/**
 * The open timeline handles of a store: one per timeline (the handle holds the vtime order check and
 * the head its dirty hints build on), told when checkpoints are added or removed behind their back.
 */
import { CkptError } from '../codecs/errors.js'
import { MAX_NODE_COUNT } from '../codecs/tree-node.js'
import type { CidBytes } from '../codecs/cid.js'
import type { TimelineRecord } from '../store/index.js'
import type { StoreContext } from './context.js'
import { newLineage } from './context.js'
import { parsePolicy } from './policy.js'
import { checkName, REGION_RE } from './refs.js'
import { setTimelinePolicy } from './lifecycle.js'
import { Timeline, type RegionConfig } from './timeline.js'

type Regions = Record<string, { size: number; chunkSize: number }>

export class TimelineRegistry {
  private readonly open = new Map<string, Promise<Timeline>>()

  constructor(private readonly ctx: StoreContext) {}

  /**
   * Opens a timeline, creating it with these regions if it does not exist. An existing timeline must
   * be opened with the same regions (or none: then its own are used).
   */
  async timeline(name: string, opts: { regions?: Record<string, RegionConfig>; policy?: string }): Promise<Timeline> {
    checkName('timeline', name)
    const regions = regionConfigs(opts.regions)
    const fanouts = regionFanouts(opts.regions)
    const policy = opts.policy === undefined ? undefined : parsePolicy(opts.policy).text
    // one handle per timeline, even for overlapping calls: the handle holds the vtime order check
    let pending = this.open.get(name)
    let fresh = false
    if (!pending) {
      pending = this.openTimeline(name, opts.regions ? regions : undefined)
      this.open.set(name, pending)
      pending.catch(() => this.open.delete(name))
      fresh = true
    }
    const tl = await pending
    if (!fresh && opts.regions && !sameRegions(regions, tl.regions)) {
      throw new CkptError('CKPT_TIMELINE_CONFIG', `timeline ${name} exists with other regions`, { timeline: name, regions: tl.regions })
    }
    checkFanouts(tl, fanouts)
    tl.takeFanouts(fanouts)
    if (policy !== undefined && policy !== tl.policy) {
      // a timeline not yet stored takes the policy with its record (written with its first checkpoint)
      if (await this.ctx.repo.getTimeline(name)) await setTimelinePolicy(this.ctx, name, policy)
      else tl.recordChanged({ ...tl.record, policy })
    }
    return tl
  }

  private async openTimeline(name: string, regions: Regions | undefined): Promise<Timeline> {
    const existing = await this.ctx.repo.getTimeline(name)
    if (existing) {
      if (regions && !sameRegions(regions, existing.regions)) {
        throw new CkptError('CKPT_TIMELINE_CONFIG', `timeline ${name} exists with other regions`, { timeline: name, regions: existing.regions })
      }
      const head = await this.ctx.repo.latest(name)
      return new Timeline(this.ctx, existing, head ? { cid: head.cid, vtime: head.vtime, manifest: await this.ctx.manifestOf(head.cid) } : undefined)
    }
    if (!regions || Object.keys(regions).length === 0) {
      throw new CkptError('CKPT_NOT_FOUND', `timeline ${name} does not exist (give its regions to create it)`, { timeline: name })
    }
    return new Timeline(this.ctx, { name, lineage: newLineage(), regions, created: Date.now() }, undefined)
  }

  private async *handles(names?: Iterable<string>): AsyncIterable<Timeline> {
    const list = names ? [...new Set(names)].map((n) => this.open.get(n)) : [...this.open.values()]
    for (const p of list) {
      const tl = p && (await p.catch(() => undefined))
      if (tl) yield tl
    }
  }

  /** Open handles learn about checkpoints added (imports) or removed (thin, rm) behind their back, or a changed record. */
  async changed(names: Iterable<string>, change: { forget?: CidBytes[]; record?: TimelineRecord } = {}): Promise<void> {
    for await (const tl of this.handles(names)) {
      if (change.record) tl.recordChanged(change.record)
      if (change.forget) tl.checkpointsRemoved(change.forget)
      else {
        const head = await this.ctx.repo.latest(tl.name)
        if (head) tl.headMoved(head.cid, head.vtime, await this.ctx.manifestOf(head.cid))
      }
    }
  }

  /** Refs changed: handles that thin themselves re-read which checkpoints are protected. */
  async protectionChanged(): Promise<void> {
    for await (const tl of this.handles()) tl.recordChanged(tl.record)
  }

  /** The heads of the open handles (gc roots: what their next dirty hints build on). */
  async heads(): Promise<CidBytes[]> {
    const out: CidBytes[] = []
    for await (const tl of this.handles()) {
      const h = tl.headBytes()
      if (h) out.push(h)
    }
    return out
  }
}

function regionConfigs(input: Record<string, RegionConfig> | undefined): Regions {
  const regions: Regions = {}
  for (const [r, c] of Object.entries(input ?? {})) {
    checkName('region', r, REGION_RE)
    if (typeof c !== 'object' || c === null) throw new TypeError(`region ${r} config must be an object`)
    const chunkSize = c.chunkSize ?? 4096
    if (!Number.isInteger(chunkSize) || chunkSize < 512 || chunkSize > 1 << 20 || (chunkSize & (chunkSize - 1)) !== 0) {
      throw new CkptError('CKPT_BAD_ARGUMENT', `chunk size of region ${r} must be a power of two from 512 B to 1 MiB`, { region: r, chunkSize })
    }
    if (!Number.isSafeInteger(c.size) || c.size <= 0) throw new CkptError('CKPT_BAD_ARGUMENT', `size of region ${r} must be a positive integer`, { region: r })
    regions[r] = { size: c.size, chunkSize }
  }
  return regions
}

/** The fan-outs a region config asks for (RegionConfig.fanout), checked. */
function regionFanouts(input: Record<string, RegionConfig> | undefined): Record<string, number> {
  const out: Record<string, number> = {}
  for (const [r, c] of Object.entries(input ?? {})) {
    if (c.fanout === undefined) continue
    if (!Number.isInteger(c.fanout) || c.fanout < 2 || c.fanout > MAX_NODE_COUNT) {
      throw new CkptError('CKPT_BAD_ARGUMENT', `fan-out of region ${r} must be an integer from 2 to ${MAX_NODE_COUNT}`, { region: r, fanout: c.fanout })
    }
    out[r] = c.fanout
  }
  return out
}

/** A timeline whose trees have a shape keeps it: a fan-out asked for that differs from its head's is refused. */
function checkFanouts(tl: Timeline, fanouts: Record<string, number>): void {
  for (const [r, f] of Object.entries(fanouts)) {
    const have = tl.fanoutOf(r)
    if (tl.head() !== null && have !== f) {
      throw new CkptError('CKPT_TIMELINE_CONFIG', `timeline ${tl.name} keeps fan-out ${have} in region ${r} (asked for ${f})`, { timeline: tl.name, region: r, fanout: have })
    }
  }
}

function sameRegions(a: Regions, b: Regions): boolean {
  const sorted = (o: Regions) => JSON.stringify(Object.entries(o).sort(([x], [y]) => (x < y ? -1 : 1)))
  return sorted(a) === sorted(b)
}
