/** `ckpt seek`: the nearest checkpoint at or before a vtime. */
import { CkptError } from '../../../codecs/errors.js'
import { COMMON, parse, parseVtime, required, storeDir } from '../args.js'
import { json, JSON_HELP, line, noPositionals, READ, STORE_HELP, withStore, type Command } from '../shared.js'

const OPTIONS = { ...COMMON, timeline: { type: 'string' }, vtime: { type: 'string' } } as const

export const seek: Command = {
  summary: 'find the nearest checkpoint at or before a vtime',
  help: `usage: ckpt seek --store DIR --timeline NAME --vtime N [--json]

Prints TIMELINE@VTIME CID of the timeline's nearest checkpoint at or before N; with --json
{timeline, vtime, cid}. Exits 1 (CKPT_NOT_FOUND) when there is none.

${STORE_HELP}
  --timeline NAME    the timeline
  --vtime N          virtual time, an integer in [0, 2^64)
${JSON_HELP}

examples:
  ckpt seek --store s --timeline vm1 --vtime 123456`,
  options: OPTIONS,
  json: 'document',
  async run(argv) {
    const { values, positionals } = parse('seek', argv, OPTIONS)
    noPositionals('seek', positionals)
    const dir = storeDir(values.store, 'seek')
    const name = required(values.timeline, '--timeline', 'seek')
    const vtime = parseVtime(required(values.vtime, '--vtime', 'seek'), '--vtime', 'seek')
    await withStore(dir, READ, async (store) => {
      const e = await store.seek(name, vtime)
      if (!e) throw new CkptError('CKPT_NOT_FOUND', `timeline ${name} has no checkpoint at or before ${vtime}`, { timeline: name, vtime: vtime.toString() })
      if (values.json) json({ timeline: e.timeline, vtime: e.vtime, cid: e.cid.toString() })
      else line(`${e.timeline}@${e.vtime} ${e.cid.toString()}`)
    })
  },
}
