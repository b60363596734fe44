/** `ckpt thin`: drop the checkpoints a retention policy does not keep. */
import { CkptError } from '../../../codecs/errors.js'
import { COMMON, parse, required, storeDir } from '../args.js'
import { UsageError } from '../errors.js'
import { checkPolicy, EXISTING, json, JSON_HELP, line, noPositionals, POLICY_HELP, READ, STORE_HELP, withStore, type Command } from '../shared.js'

const OPTIONS = { ...COMMON, timeline: { type: 'string' }, policy: { type: 'string' }, saved: { type: 'boolean' }, 'dry-run': { type: 'boolean' }, remote: { type: 'string' } } as const

const entry = (e: { timeline: string; vtime: bigint; cid: { toString(): string } }) => ({ timeline: e.timeline, vtime: e.vtime, cid: e.cid.toString() })

export const thin: Command = {
  summary: "drop a timeline's checkpoints that a retention policy does not keep",
  help: `usage: ckpt thin --store DIR --timeline NAME (--policy SPEC | --saved) [--remote REMOTE] [--dry-run] [--json]

Removes from the catalog the checkpoints of timeline NAME that the policy does not keep; their blocks
stay until ckpt gc. Prints how many were kept and dropped (--json: {policy, kept, dropped, dryRun}
with every checkpoint). With --dry-run nothing changes.

${POLICY_HELP}

${STORE_HELP}
  --timeline NAME    the timeline
  --policy SPEC      the policy to apply (once; ckpt add --policy makes a timeline thin itself)
  --saved            apply the policy the timeline carries
  --remote REMOTE    thin the timeline on a remote (a name or URL) instead: the checkpoints dropped
                     are no longer pulled and never pushed again; ckpt gc REMOTE reclaims them
  --dry-run          only say what would be dropped
${JSON_HELP}

examples:
  ckpt thin --store s --timeline run-42 --policy 10ms@1s,100ms@10s,1s@1m,10s@1h --dry-run
  ckpt thin --store s --timeline run-42 --policy last=100`,
  options: OPTIONS,
  json: 'document',
  async run(argv) {
    const { values, positionals } = parse('thin', argv, OPTIONS)
    noPositionals('thin', positionals)
    const dir = storeDir(values.store, 'thin')
    const name = required(values.timeline, '--timeline', 'thin')
    if ((values.policy === undefined) === (values.saved !== true)) throw new UsageError('give --policy SPEC or --saved', 'thin')
    const spec = values.policy === undefined ? undefined : await checkPolicy(values.policy, 'thin')
    if (spec === null) throw new UsageError('--policy none drops nothing; give a policy', 'thin')
    const dryRun = values['dry-run'] === true
    if (values.remote !== undefined) {
      if (spec === undefined) throw new UsageError('thinning a remote needs --policy SPEC', 'thin')
      const t = await withStore(dir, READ, (store) => store.thinRemote(values.remote!, name, spec, { dryRun }))
      const as = (c: { vtime: string; cid: string }) => ({ timeline: name, vtime: c.vtime, cid: c.cid })
      if (values.json) json({ policy: spec, dryRun, kept: t.kept.map(as), dropped: t.dropped.map(as) })
      else line(`${dryRun ? 'would keep' : 'kept'} ${t.kept.length}, ${dryRun ? 'would drop' : 'dropped'} ${t.dropped.length} checkpoint${t.dropped.length === 1 ? '' : 's'} of ${name} on ${values.remote}${!dryRun && t.dropped.length ? '; next: ckpt gc REMOTE reclaims the space' : ''}`)
      return
    }
    const r = await withStore(dir, dryRun ? READ : EXISTING, async (store) => {
      let policy = spec
      if (policy === undefined) {
        policy = (await store.timeline(name)).policy
        if (policy === undefined) throw new CkptError('CKPT_BAD_ARGUMENT', `timeline ${name} carries no policy (ckpt add --policy sets one)`, { timeline: name })
      }
      return store.thin(name, policy, { dryRun })
    })
    if (values.json) {
      json({ policy: r.policy, dryRun: r.dryRun, kept: r.kept.map(entry), dropped: r.dropped.map(entry) })
      return
    }
    line(`${r.dryRun ? 'would keep' : 'kept'} ${r.kept.length}, ${r.dryRun ? 'would drop' : 'dropped'} ${r.dropped.length} checkpoint${r.dropped.length === 1 ? '' : 's'} of ${name} (policy ${r.policy})`)
    if (r.dryRun) for (const d of r.dropped.slice(0, 20)) line(`  drop ${d.timeline}@${d.vtime} ${d.cid}`)
    if (r.dryRun && r.dropped.length > 20) line(`  ... and ${r.dropped.length - 20} more (--json lists all)`)
    if (!r.dryRun && r.dropped.length) line('next: ckpt gc reclaims the space')
  },
}
