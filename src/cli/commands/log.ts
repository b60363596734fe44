/** `ckpt log`: the checkpoints, oldest first (JSON lines). */
import { COMMON, parse, storeDir } from '../args.js'
import { json, JSON_HELP, line, noPositionals, READ, STORE_HELP, withStore, type Command } from '../shared.js'

const OPTIONS = { ...COMMON, timeline: { type: 'string' } } as const

export const log: Command = {
  summary: 'list checkpoints, oldest first',
  help: `usage: ckpt log --store DIR [--timeline NAME] [--json]

Lists the checkpoints of one timeline (or of all, timeline by timeline), oldest first, one per line:
TIMELINE@VTIME CID [LABEL]. With --json JSON lines, one object per checkpoint: {timeline, vtime, cid,
wall, meta} (nothing for a store without checkpoints).

${STORE_HELP}
  --timeline NAME    only this timeline
${JSON_HELP}

examples:
  ckpt log --store s
  ckpt log --store s --timeline vm1 --json`,
  options: OPTIONS,
  json: 'lines',
  async run(argv) {
    const { values, positionals } = parse('log', argv, OPTIONS)
    noPositionals('log', positionals)
    const dir = storeDir(values.store, 'log')
    await withStore(dir, READ, async (store) => {
      for await (const e of store.log(values.timeline)) {
        const m = await store.manifest(e.cid)
        if (values.json) json({ timeline: e.timeline, vtime: e.vtime, cid: e.cid.toString(), wall: new Date(m.wall).toISOString(), meta: m.meta })
        else line(`${e.timeline}@${e.vtime} ${e.cid.toString()}${m.meta.label !== undefined ? ' ' + m.meta.label : ''}`)
      }
    })
  },
}
