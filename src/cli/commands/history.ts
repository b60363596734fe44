/** `ckpt history`: at which checkpoints of a timeline a chunk or a byte range of a region changed (JSON lines). */
import type { HistoryEntry, HistoryOptions, HistorySelector } from '../../history.js'
import { COMMON, parse, parseVtime, required, storeDir } from '../args.js'
import { UsageError } from '../errors.js'
import { json, JSON_HELP, line, READ, STORE_HELP, withStore, type Command } from '../shared.js'
import { parseBytes } from './cat.js'

const OPTIONS = {
  ...COMMON,
  region: { type: 'string' },
  chunk: { type: 'string' },
  offset: { type: 'string' },
  length: { type: 'string' },
  after: { type: 'string' },
  until: { type: 'string' },
  exact: { type: 'boolean' },
  first: { type: 'boolean' },
  reverse: { type: 'boolean' },
  limit: { type: 'string' },
} as const

/** Chunks listed on a text line; the rest are counted. */
const LISTED = 8

function count(text: string, option: string): number {
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(Number(text))) throw new UsageError(`${option} must be a non-negative integer, not ${JSON.stringify(text)}`, 'history')
  return Number(text)
}

/** One entry as a text line: TIMELINE@VTIME CID, then what the selected chunks hold from there on. */
export function historyText(e: HistoryEntry): string {
  const head = `${e.timeline}@${e.vtime} ${e.cid.toString()}`
  if (e.shape) return `${head} region ${e.shape}`
  const chunks = e.chunks.slice(0, LISTED).map((c) => `chunk ${c.index} ${c.after ? c.after.toString() : '(hole)'}`)
  if (e.chunks.length > LISTED) chunks.push(`and ${e.chunks.length - LISTED} more`)
  return `${head} ${e.previous ? '' : '(first) '}${chunks.join(', ')}`
}

export function historyJson(e: HistoryEntry) {
  return {
    timeline: e.timeline,
    vtime: e.vtime,
    cid: e.cid.toString(),
    previous: e.previous && { vtime: e.previous.vtime, cid: e.previous.cid.toString() },
    chunks: e.chunks.map((c) => ({ index: c.index, before: c.before?.toString() ?? null, after: c.after?.toString() ?? null })),
    ...(e.shape ? { shape: e.shape } : {}),
  }
}

export const history: Command = {
  summary: 'list the checkpoints at which a chunk or a byte range of a region changed',
  help: `usage: ckpt history --store DIR TIMELINE --region NAME (--chunk N | --offset BYTES [--length N])
                    [--after VTIME] [--until VTIME] [--exact] [--first] [--reverse] [--limit N]
                    [--json]

Lists, oldest first, the checkpoints of TIMELINE (those with --after < vtime <= --until) at which
the selected chunks of region NAME got new content: first the window's first checkpoint with what
they hold there, then each checkpoint whose chunks differ from the checkpoint before, one line each:
  TIMELINE@VTIME CID (first) chunk 3 bafkr4i...      the window's first checkpoint
  TIMELINE@VTIME CID chunk 3 bafkr4i...              a change: the chunk's new CID, or (hole)
With --json JSON lines, one object per checkpoint: {timeline, vtime, cid, previous: {vtime, cid} |
null, chunks: [{index, before, after}]} (chunk CIDs, null for a hole; the first object lists every
selected chunk, the others those that changed).

The checkpoints are bisected: the selected chunks' CIDs are compared at the two ends of an interval
(reading from the region's root, stopping where the CIDs agree) and the interval is split only when
they differ, so each change costs a few tree reads, but a change undone within an interval (A, B,
A) is not seen. --exact compares every pair of neighbouring checkpoints instead (slower; sees
everything). --first prints only the first checkpoint after --after whose selected bytes differ from
those of the checkpoint at or before --after (the timeline's first checkpoint without --after), or
nothing; bisected likewise, so a change undone before --until may be missed without --exact.

${STORE_HELP}
  --region NAME      the region
  --chunk N          one chunk, by index
  --offset BYTES     a byte range instead (the chunks it touches): its first byte (decimal, 0x hex,
                     or with a k or M suffix)
  --length N         the range's length in bytes (default 1)
  --after VTIME      only checkpoints after this vtime
  --until VTIME      only checkpoints at or before this vtime
  --exact            compare every pair of neighbouring checkpoints
  --first            only the first change after --after
  --reverse          newest first (the window's first checkpoint last)
  --limit N          at most N lines
${JSON_HELP}

examples:
  ckpt history --store s vm1 --region ram --chunk 4660
  ckpt history --store s vm1 --region ram --offset 0x1234560 --length 8 --after 5000000 --json
  ckpt history --store s vm1 --region ram --offset 0x1234560 --first --after 5000000`,
  options: OPTIONS,
  json: 'lines',
  async run(argv) {
    const { values, positionals } = parse('history', argv, OPTIONS)
    if (positionals.length !== 1) throw new UsageError(positionals.length === 0 ? 'missing TIMELINE' : `unexpected argument ${JSON.stringify(positionals[1])}`, 'history')
    const timeline = positionals[0]!
    const dir = storeDir(values.store, 'history')
    const region = required(values.region, '--region', 'history')
    if ((values.chunk === undefined) === (values.offset === undefined)) throw new UsageError('give one of --chunk N and --offset BYTES', 'history')
    if (values.length !== undefined && values.offset === undefined) throw new UsageError('--length goes with --offset', 'history')
    const sel: HistorySelector =
      values.chunk !== undefined
        ? count(values.chunk, '--chunk')
        : { offset: parseBytes(values.offset!, '--offset', 'history'), length: values.length === undefined ? 1 : parseBytes(values.length, '--length', 'history') }
    const opts: HistoryOptions = {
      after: values.after === undefined ? undefined : parseVtime(values.after, '--after', 'history'),
      until: values.until === undefined ? undefined : parseVtime(values.until, '--until', 'history'),
      exact: values.exact === true,
      reverse: values.reverse === true,
      limit: values.limit === undefined ? undefined : count(values.limit, '--limit'),
    }
    if (values.first && (values.reverse || values.limit !== undefined)) throw new UsageError('--first takes neither --reverse nor --limit', 'history')
    const print = (e: HistoryEntry) => (values.json ? json(historyJson(e)) : line(historyText(e)))
    await withStore(dir, READ, async (store) => {
      if (values.first) {
        const e = await store.firstChange(timeline, region, sel, { after: opts.after, until: opts.until, exact: opts.exact })
        if (e) print(e)
        return
      }
      for await (const e of store.history(timeline, region, sel, opts)) print(e)
    })
  },
}
