/** `ckpt fork`: a new timeline from a checkpoint. */
import { COMMON, parse, required, storeDir } from '../args.js'
import { UsageError } from '../errors.js'
import { checkPolicy, EXISTING, json, JSON_HELP, line, REF_HELP, STORE_HELP, withStore, type Command } from '../shared.js'

const OPTIONS = { ...COMMON, timeline: { type: 'string' }, policy: { type: 'string' } } as const

export const fork: Command = {
  summary: 'start a new timeline from a checkpoint (sharing all its blocks)',
  help: `usage: ckpt fork --store DIR REF --timeline NEW [--policy SPEC] [--json]

Creates timeline NEW whose first checkpoint is REF's content at REF's vtime (a new manifest of a few
hundred bytes; every block is shared). Checkpoints added to NEW build on it; REF's timeline is
untouched. For "what if" replays from a point of a recording. Prints NEW@VTIME CID; with --json
{timeline, vtime, cid}.

${REF_HELP}

${STORE_HELP}
  --timeline NEW     the new timeline (must not exist)
  --policy SPEC      a retention policy for it (see ckpt thin --help)
${JSON_HELP}

examples:
  ckpt fork --store s run-42@5000000 --timeline run-42-whatif`,
  options: OPTIONS,
  json: 'document',
  async run(argv) {
    const { values, positionals } = parse('fork', argv, OPTIONS)
    const dir = storeDir(values.store, 'fork')
    if (positionals.length !== 1) throw new UsageError('give one checkpoint (REF) to fork from', 'fork')
    const name = required(values.timeline, '--timeline', 'fork')
    const policy = values.policy === undefined ? undefined : await checkPolicy(values.policy, 'fork')
    const e = await withStore(dir, EXISTING, (store) => store.fork(name, positionals[0]!, policy ? { policy } : {}))
    if (values.json) json({ timeline: e.timeline, vtime: e.vtime, cid: e.cid.toString() })
    else line(`${e.timeline}@${e.vtime} ${e.cid}`)
  },
}
