/** `ckpt pull`: take checkpoints from a remote, whole or lazily. */
import { COMMON, QUIET, parse, storeDir } from '../args.js'
import { humanBytes } from '../format.js'
import { Progress } from '../progress.js'
import { json, JSON_HELP, line, plural, QUIET_HELP, STORE_HELP, withStore, type Command } from '../shared.js'
import { UsageError } from '../errors.js'

const OPTIONS = { ...COMMON, ...QUIET, lazy: { type: 'boolean' } } as const

export const pull: Command = {
  summary: 'take checkpoints from a remote (--lazy: blocks are fetched when read)',
  help: `usage: ckpt pull --store DIR REMOTE [TIMELINE[@VTIME]...] [--lazy] [--quiet] [--json]

Takes every timeline of REMOTE (or those named; with @VTIME up to VTIME) into the store (created if
missing). Without --lazy every block the checkpoints need is copied and verified before the
checkpoints become visible. With --lazy only the catalog, the index and the manifests are copied:
blocks are fetched when first read (restore, diff, export, verify...), in ranges of 64 KiB and more,
verified, and kept in the store's cache of the remote, so a second read is local. A block the
remote cannot give is CKPT_REMOTE_UNAVAILABLE, never wrong bytes. --json: the summary.

${STORE_HELP}
  --lazy             copy the catalog and index only
${QUIET_HELP}
${JSON_HELP}

examples:
  ckpt pull --store s team
  ckpt pull --store s s3://recordings/ckpt run-42 --lazy`,
  options: OPTIONS,
  json: 'document',
  async run(argv) {
    const { values, positionals } = parse('pull', argv, OPTIONS)
    const dir = storeDir(values.store, 'pull')
    if (positionals.length < 1) throw new UsageError('pull takes REMOTE [TIMELINE...]', 'pull')
    const [remote, ...refs] = positionals as [string, ...string[]]
    const progress = new Progress('ckpt pull', Progress.wanted(values))
    try {
      const s = await withStore(dir, { threads: 0, dedupFilter: false }, (store) =>
        store.pull(remote, refs, { lazy: values.lazy === true, onProgress: (p) => progress.amount(p.phase === 'blocks' ? 'fetching packs' : p.phase, p.done, p.total, p.phase) }),
      )
      progress.end()
      if (values.json) json(s)
      else {
        for (const t of s.timelines) line(`${t.name}: ${plural(t.added, 'checkpoint')} added, ${t.present} here already`)
        line(s.lazy ? `lazy: ${plural(s.segments, 'index segment')}; blocks are fetched when read (${s.ms} ms)` : `${plural(s.blocks, 'block')} copied (${humanBytes(s.bytes)}), ${s.ms} ms`)
      }
    } finally {
      progress.end()
    }
  },
}
