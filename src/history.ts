/**
 * Page history (SPEC.md §23.3): at which checkpoints of a timeline the content of a chunk or a byte
 * range changed, found by bisection over the timeline's checkpoints (equal CIDs on the path from the
 * root end the descent), and firstChange(): the first checkpoint after T whose bytes differ.
 *
 * Being written (issue 13): the signatures below are the contract CkptStore delegates to.
 */
import type { CID } from 'multiformats/cid'
import { CkptError } from '../codecs/errors.js'
import type { StoreContext } from './context.js'

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
}

export async function* history(ctx: StoreContext, timeline: string, region: string, sel: HistorySelector, opts: HistoryOptions = {}): AsyncGenerator<HistoryEntry> {
  void ctx, timeline, region, sel, opts
  throw new CkptError('CKPT_BAD_ARGUMENT', 'history: not built yet')
}

export async function firstChange(ctx: StoreContext, timeline: string, region: string, sel: HistorySelector, opts: Omit<HistoryOptions, 'reverse' | 'limit'> = {}): Promise<HistoryEntry | undefined> {
  void ctx, timeline, region, sel, opts
  throw new CkptError('CKPT_BAD_ARGUMENT', 'firstChange: not built yet')
}
