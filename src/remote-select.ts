/**
 * Which checkpoints a push or pull moves: REF arguments (SPEC.md §22.4) as timelines and vtime bounds.
 * A timeline name is the whole timeline; TIMELINE@VTIME, a CID or ref:NAME is a checkpoint and every
 * checkpoint of its timeline up to it (its history on that timeline); none: every timeline.
 */
import { cidToString } from '../codecs/cid.js'
import { CkptError } from '../codecs/errors.js'
import type { CheckpointEntry } from '../store/index.js'
import type { StoreContext } from './context.js'

/** Checkpoints by timeline, each list in vtime order. */
export async function selectCheckpoints(ctx: StoreContext, refs: readonly string[] | undefined): Promise<Map<string, CheckpointEntry[]>> {
  const { repo } = ctx
  const upTo = new Map<string, bigint | undefined>()
  const widen = (name: string, v: bigint | undefined) => {
    if (!upTo.has(name)) upTo.set(name, v)
    else {
      const was = upTo.get(name)
      upTo.set(name, was === undefined || v === undefined ? undefined : was > v ? was : v)
    }
  }
  if (!refs || refs.length === 0) {
    for await (const t of repo.timelines()) widen(t.name, undefined)
  } else {
    for (const ref of refs) {
      if (typeof ref === 'string' && !ref.includes('@') && !ref.startsWith('ref:') && (await repo.getTimeline(ref))) {
        widen(ref, undefined)
        continue
      }
      const cid = await ctx.resolve(ref)
      const at = await repo.checkpointRecord(cid)
      if (!at) throw new CkptError('CKPT_NOT_FOUND', `${cidToString(cid)} is not a checkpoint of a timeline here`, { ref })
      widen(at.timeline, at.vtime)
    }
  }
  const out = new Map<string, CheckpointEntry[]>()
  for (const [name, v] of [...upTo].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const list: CheckpointEntry[] = []
    for await (const e of repo.checkpoints(name, v === undefined ? {} : { lte: v })) list.push(e)
    out.set(name, list)
  }
  return out
}
