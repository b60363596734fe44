/**
 * The catalog step of a bundle import (SPEC.md, "Bundles"): the catalog operations that make the proven
 * checkpoints visible, under the timeline names the import options give, refusing a timeline here
 * with another history, other regions, or another checkpoint at the same vtime.
 */
import { cidEquals, cidKey, cidToString, type CidBytes } from '../codecs/cid.js'
import { CkptError } from '../codecs/errors.js'
import type { Manifest } from '../codecs/manifest.js'
import type { CatalogOp, Repository, TimelineRecord } from '../store/index.js'
import { checkName } from './refs.js'

/**
 * The operations cataloguing `roots` (each proven, its manifest in `manifests` by CID key): a record
 * for each new timeline and the checkpoint ops; roots already catalogued at their place are counted
 * as present.
 */
export async function catalogOps(
  repo: Repository,
  manifests: Map<string, Manifest>,
  roots: CidBytes[],
  opts: { as?: string; timelinePrefix?: string },
): Promise<{ ops: CatalogOp[]; added: number; present: number; timelines: string[] }> {
  const ops: CatalogOp[] = []
  const names = new Set<string>()
  for (const r of roots) names.add(manifests.get(cidKey(r))!.timeline)
  if (opts.as !== undefined && names.size > 1) {
    throw new CkptError('CKPT_BAD_ARGUMENT', `the bundle holds ${names.size} timelines (${[...names].join(', ')}); --as names one; use --timeline-prefix`, { timelines: [...names] })
  }
  const target = (n: string) => checkName('timeline', opts.as ?? (opts.timelinePrefix ?? '') + n)
  const records = new Map<string, TimelineRecord>()
  const claimed = new Map<string, CidBytes>()
  let added = 0
  let present = 0
  for (const r of roots) {
    const m = manifests.get(cidKey(r))!
    const name = target(m.timeline)
    const regions = Object.fromEntries(Object.entries(m.regions).map(([k, v]) => [k, { size: v.size, chunkSize: v.chunkSize }]))
    let rec = records.get(name)
    if (!rec) {
      const existing = await repo.getTimeline(name)
      if (existing) {
        if (existing.lineage !== m.lineage) {
          throw new CkptError(
            'CKPT_TIMELINE_CONFLICT',
            `timeline ${name} exists here with a different history (lineage ${existing.lineage}, the bundle's is ${m.lineage}); import it under another name with --as NAME or --timeline-prefix PREFIX`,
            { timeline: name, lineage: existing.lineage, bundleLineage: m.lineage },
          )
        }
      } else {
        rec = { name, lineage: m.lineage, regions, created: Date.now() }
        ops.push(repo.putTimelineOp(rec))
      }
      rec = existing ?? rec!
      records.set(name, rec)
    }
    if (rec.lineage !== m.lineage) {
      throw new CkptError('CKPT_TIMELINE_CONFLICT', `the bundle holds two histories for timeline ${name}`, { timeline: name })
    }
    if (JSON.stringify(sorted(rec.regions)) !== JSON.stringify(sorted(regions))) {
      throw new CkptError('CKPT_TIMELINE_CONFLICT', `timeline ${name} has regions ${JSON.stringify(rec.regions)} here, the bundle's checkpoint ${cidToString(r)} has ${JSON.stringify(regions)}`, {
        timeline: name,
        cid: cidToString(r),
      })
    }
    const slot = `${name}\u0000${m.vtime}`
    const here = claimed.get(slot) ?? (await repo.seek(name, m.vtime).then((e) => (e && e.vtime === m.vtime ? e.cid : undefined)))
    if (here) {
      if (!cidEquals(here, r)) {
        throw new CkptError('CKPT_TIMELINE_CONFLICT', `timeline ${name} already has another checkpoint at vtime ${m.vtime} (${cidToString(here)}; the bundle's is ${cidToString(r)})`, {
          timeline: name,
          vtime: m.vtime.toString(),
          cid: cidToString(r),
          existing: cidToString(here),
        })
      }
      present++
      continue
    }
    claimed.set(slot, r)
    // a checkpoint keeps the record of the timeline it was first catalogued in (the add op's rule)
    ops.push(...repo.putCheckpointOps({ timeline: name, vtime: m.vtime, cid: r }))
    added++
  }
  return { ops, added, present, timelines: [...records.keys()] }
}

function sorted(o: Record<string, unknown>): [string, unknown][] {
  return Object.entries(o).sort(([a], [b]) => (a < b ? -1 : 1))
}
