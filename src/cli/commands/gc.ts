/** `ckpt gc`: reclaim the space of blocks nothing reaches. */
import type { GcSummary } from '../../gc.js'
import { COMMON, QUIET, parse, parsePercent, storeDir } from '../args.js'
import { humanBytes } from '../format.js'
import { Progress } from '../progress.js'
import { UsageError } from '../errors.js'
import { json, JSON_HELP, line, noPositionals, plural, QUIET_HELP, STORE_HELP, withStore, type Command } from '../shared.js'

const OPTIONS = { ...COMMON, ...QUIET, threshold: { type: 'string' }, 'max-unused': { type: 'string' }, 'dry-run': { type: 'boolean' }, margin: { type: 'string' } } as const

/** A percentage option of gc as a fraction; undefined when not given. */
function fraction(v: string | undefined, option: string): number | undefined {
  return v === undefined ? undefined : parsePercent(v, option, 'gc') / 100
}

function summaryText(s: GcSummary, dir: string, dryRun: boolean): string[] {
  const would = dryRun ? 'would ' : ''
  const out = [
    `${plural(s.roots, 'root')}, ${s.liveBlocks} live blocks (${humanBytes(s.liveBytes)}); ${would}rewrite ${plural(s.packsRewritten, 'pack')} (${humanBytes(s.rewrittenBytes)} copied), ${would}delete ${plural(s.packsDeleted, 'dead pack')}`,
  ]
  if (s.nodesReencoded) out.push(`stored ${plural(s.nodesReencoded, 'tree node')} anew (${humanBytes(s.reencodedBytes)}) so the delta bases of removed checkpoints can go`)
  if (s.chunksReencoded) out.push(`stored ${plural(s.chunksReencoded, 'chunk')} anew (${humanBytes(s.chunkReencodedBytes)}) so the versions of removed checkpoints they were deltas of can go`)
  if (dryRun && s.baseOnlyBytes) out.push(`${humanBytes(s.baseOnlyBytes)} of tree nodes and chunks are live only as delta bases: gc stores the blocks built on them anew`)
  if (s.packsSkipped) out.push(`left ${plural(s.packsSkipped, 'pack')} as they are: ${plural(s.damagedLiveBlocks, 'live block')} in them did not read back intact; next: ckpt verify --store ${dir} --deep`)
  out.push(
    `${dryRun ? 'would reclaim' : 'reclaimed'} ${humanBytes(s.reclaimedBytes)}: packs ${humanBytes(s.bytesBefore)} -> ${humanBytes(s.bytesAfter)}` +
      `${s.deadBytesKept ? `; ${humanBytes(s.deadBytesKept)} dead left in packs above the threshold` : ''}${s.orphansRemoved ? `; ${plural(s.orphansRemoved, 'set-aside pack')} removed` : ''}`,
  )
  return out
}

export const gc: Command = {
  summary: 'reclaim the space of blocks no checkpoint or ref reaches',
  help: `usage: ckpt gc --store DIR [--threshold PCT] [--max-unused PCT] [--dry-run] [--quiet] [--json]
       ckpt gc --store DIR REMOTE [--threshold PCT] [--margin DURATION] [--dry-run] [--json]

Marks every block reachable from the catalog's checkpoints and the refs, then deletes packs with
nothing live in them and rewrites those whose live share is below the threshold (their live blocks
are copied into a new pack, the old file deleted), and then the deadest others while the dead bytes
left would exceed --max-unused of the live ones. Tree nodes kept only as delta bases of thinned
checkpoints are not kept: the live nodes built on them are stored anew. Holds the store's writer lock; a kill at any
point leaves a consistent store (SPEC.md, Garbage collection). Prints packs rewritten and deleted, and bytes
reclaimed (--json: the whole summary).

${STORE_HELP}
  --threshold PCT    rewrite packs less than PCT% live (default 50; 100 rewrites every pack with
                     any dead block; 0 only deletes dead packs)
  --max-unused PCT   leave at most PCT% dead bytes (of the live bytes) in packs kept (default 2;
                     100: only the threshold decides)
  --dry-run          only say what would be reclaimed
  --margin DURATION  REMOTE: carry out deletions proposed at least this long ago (default 1h; e.g.
                     30m, 0s: at once, only when no push can be running)
${QUIET_HELP}
${JSON_HELP}

With REMOTE (a name from \`ckpt remote\` or a URL), collects the remote instead, under its lock
object (stale after 30 minutes), reading tree nodes through the store's cache of the remote: packs
nothing live reaches, packs below the threshold (repacked) and packs no index segment lists are
proposed for deletion (gc/ on the remote) and deleted by a later gc once the margin has passed,
if still unneeded; the index is compacted into one segment. A push running meanwhile loses nothing.

examples:
  ckpt gc --store s
  ckpt gc --store s team --margin 2h
  ckpt gc --store s --threshold 90 --json`,
  options: OPTIONS,
  json: 'document',
  async run(argv) {
    const { values, positionals } = parse('gc', argv, OPTIONS)
    const dir = storeDir(values.store, 'gc')
    if (positionals.length === 1) return gcRemoteCommand(dir, positionals[0]!, values)
    noPositionals('gc', positionals)
    if (values.margin !== undefined) throw new UsageError('--margin is for a remote gc (ckpt gc REMOTE)', 'gc')
    const threshold = fraction(values.threshold, '--threshold')
    const maxUnused = fraction(values['max-unused'], '--max-unused')
    const dryRun = values['dry-run'] === true
    const progress = new Progress('ckpt gc', Progress.wanted(values))
    try {
      // no dedup filter: this process writes only copies, and its memory stays flat whatever the store's size
      // a dry run changes nothing: it opens the store read-only (no index rebuilt, nothing written)
      const s = await withStore(dir, { mustExist: true, threads: 0, dedupFilter: false, readOnly: dryRun }, (store) =>
        store.gc({ threshold, maxUnused, dryRun, onProgress: (p) => progress.amount(p.phase === 'mark' ? 'marking live blocks' : 'rewriting packs', p.done, p.total, p.phase === 'mark' ? 'roots' : 'packs') }),
      )
      progress.end()
      if (values.json) json(s)
      else for (const l of summaryText(s, dir, dryRun)) line(l)
    } finally {
      progress.end()
    }
  },
}

async function gcRemoteCommand(dir: string, remote: string, values: { threshold?: string; margin?: string; 'dry-run'?: boolean; json?: boolean; quiet?: boolean }): Promise<void> {
  const margin = values.margin === undefined ? undefined : parseDurationMs(values.margin, '--margin', 'gc')
  const threshold = fraction(values.threshold, '--threshold')
  const dryRun = values['dry-run'] === true
  const progress = new Progress('ckpt gc', Progress.wanted(values))
  try {
    const s = await withStore(dir, { threads: 0, dedupFilter: false }, (store) =>
      store.gcRemote(remote, { margin, threshold, dryRun, onProgress: (p) => progress.amount(p.phase, p.done, p.total, p.phase === 'mark' ? 'checkpoints' : 'steps') }),
    )
    progress.end()
    if (values.json) return json(s)
    const would = dryRun ? 'would ' : ''
    line(`${plural(s.checkpoints, 'checkpoint')}, ${s.liveBlocks} live blocks (${humanBytes(s.liveBytes)}) in ${humanBytes(s.packBytes)} of packs`)
    line(`${plural(s.packs.dead, 'dead pack')}, ${plural(s.packs.repacked, 'pack')} ${would}repacked, ${plural(s.packs.unreferenced, 'unreferenced pack')}; index segments ${s.segments.before} -> ${s.segments.after}`)
    if (!dryRun) line(`proposed for deletion: ${s.proposed.packs} packs, ${s.proposed.segments} segments, ${s.proposed.catalogs} catalog segments; deleted now: ${s.deleted.packs} packs (${humanBytes(s.deleted.bytes)}), ${s.deleted.segments} segments, ${s.deleted.catalogs} catalog segments`)
  } finally {
    progress.end()
  }
}

/** A duration for --margin: 0, or NUMBER with a unit ms, s, m, h, d. */
function parseDurationMs(text: string, option: string, command: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(text.trim())
  if (text.trim() === '0') return 0
  if (!m) throw new UsageError(`${option} must be a duration such as 30m, 2h or 0s (got ${JSON.stringify(text)})`, command)
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 'ms' | 's' | 'm' | 'h' | 'd']
  return Math.round(Number(m[1]) * unit)
}
