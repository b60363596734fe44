/** `ckpt push`: send checkpoints to a remote. */
import { isCkptError } from '../../../codecs/errors.js'
import type { PushSummary } from '../../remote-push.js'
import { COMMON, QUIET, parse, storeDir } from '../args.js'
import { EXIT } from '../errors.js'
import { humanBytes } from '../format.js'
import { Progress } from '../progress.js'
import { json, JSON_HELP, line, note, plural, QUIET_HELP, STORE_HELP, withStore, type Command } from '../shared.js'
import { UsageError } from '../errors.js'

const OPTIONS = { ...COMMON, ...QUIET } as const

export const push: Command = {
  summary: 'send checkpoints (and the blocks they need that the remote lacks) to a remote',
  help: `usage: ckpt push --store DIR REMOTE [REF...] [--quiet] [--json]

Sends every timeline (or the timelines named, or a checkpoint REF and its history on its
timeline) to REMOTE, a name from \`ckpt remote\` or a URL (s3://BUCKET/PREFIX, file:///DIR). Only
blocks the remote's index lacks travel, in new packs; then one index segment; then the catalog
(a claim per checkpoint, created only if absent, and a catalog segment). A crash at any moment
leaves a valid remote; pushing again completes it. A vtime the remote has with another checkpoint
is a conflict (CKPT_REMOTE_CONFLICT, exit 1): that timeline is pushed up to it, the others merge,
and nothing here changes. --json: the summary (timelines, conflicts, blocks, packs, requests).

REF is a timeline name, TIMELINE@VTIME, a checkpoint CID or ref:NAME.

${STORE_HELP}
${QUIET_HELP}
${JSON_HELP}

examples:
  ckpt push --store s team
  ckpt push --store s s3://recordings/ckpt run-42`,
  options: OPTIONS,
  json: 'document',
  async run(argv) {
    const { values, positionals } = parse('push', argv, OPTIONS)
    const dir = storeDir(values.store, 'push')
    if (positionals.length < 1) throw new UsageError('push takes REMOTE [REF...]', 'push')
    const [remote, ...refs] = positionals as [string, ...string[]]
    const progress = new Progress('ckpt push', Progress.wanted(values))
    try {
      const s = await withStore(dir, { mustExist: true, threads: 0, dedupFilter: false }, (store) =>
        store.push(remote, refs, { onProgress: (p) => progress.amount(p.phase === 'packs' ? 'uploading' : p.phase, p.done, p.total, p.phase === 'packs' ? 'blocks' : 'steps') }).catch((err: unknown) => {
          // a conflict still pushed what it could: its summary is the output, the exit status says 1
          if (isCkptError(err, 'CKPT_REMOTE_CONFLICT')) return err.details.summary as PushSummary
          throw err
        }),
      )
      progress.end()
      if (values.json) json(s)
      else {
        for (const t of s.timelines) line(`${t.name}: ${plural(t.pushed, 'checkpoint')} pushed, ${t.present} there already${t.conflict ? `; conflict at vtime ${t.conflict.vtime}` : ''}`)
        line(`${plural(s.blocks, 'block')} in ${plural(s.packs, 'pack')} (${humanBytes(s.packBytes)}), ${s.requests.puts} PUTs, ${s.ms} ms`)
      }
      if (s.conflicts.length) {
        const c = s.conflicts[0]!
        note(`ckpt: CKPT_REMOTE_CONFLICT: ${plural(s.conflicts.length, 'timeline')} conflict with the remote: ${c.timeline} has ${c.remote} at vtime ${c.vtime} there, ${c.local} here (fork it here under another name, ckpt fork, and push that; the other timelines were pushed)`)
        return EXIT.DATA
      }
      return EXIT.OK
    } finally {
      progress.end()
    }
  },
}
