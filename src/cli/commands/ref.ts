/** `ckpt ref`: set, delete or list refs (named checkpoints). */
import { CkptError } from '../../../codecs/errors.js'
import { COMMON, parse, storeDir } from '../args.js'
import { UsageError } from '../errors.js'
import { EXISTING, json, JSON_HELP, line, noPositionals, READ, REF_HELP, STORE_HELP, withStore, type Command } from '../shared.js'

const OPTIONS = { ...COMMON, delete: { type: 'string' } } as const

export const ref: Command = {
  summary: 'name a checkpoint (a pin: thin keeps it, gc keeps its blocks), or list refs',
  help: `usage: ckpt ref --store DIR [NAME REF | --delete NAME] [--json]

With NAME REF: sets ref NAME to checkpoint REF (later: ref:NAME wherever a REF is taken); --json
{ref, cid}. With --delete NAME: removes it; --json {deleted}. Alone: lists the refs, NAME CID per
line; --json one array [{name, cid}...] ([] when there are none).

${REF_HELP}

${STORE_HELP}
  --delete NAME      remove ref NAME
${JSON_HELP}

examples:
  ckpt ref --store s crash run-42@5000000
  ckpt restore --store s ref:crash --region ram --out ram.bin
  ckpt ref --store s --delete crash`,
  options: OPTIONS,
  json: 'document',
  async run(argv) {
    const { values, positionals } = parse('ref', argv, OPTIONS)
    const dir = storeDir(values.store, 'ref')
    if (values.delete !== undefined) {
      noPositionals('ref', positionals)
      const had = await withStore(dir, EXISTING, (store) => store.deleteRef(values.delete!))
      if (!had) throw new CkptError('CKPT_NOT_FOUND', `no ref named ${values.delete}`, { ref: values.delete })
      if (values.json) json({ deleted: values.delete })
      else line(`deleted ref ${values.delete}`)
      return
    }
    if (positionals.length === 2) {
      const [name, target] = positionals as [string, string]
      const r = (await withStore(dir, EXISTING, (store) => store.setRef(name, target))) as { cid: { toString(): string } }
      if (values.json) json({ ref: name, cid: r.cid.toString() })
      else line(`${name} ${r.cid}`)
      return
    }
    if (positionals.length !== 0) throw new UsageError('give NAME REF, --delete NAME, or nothing (to list)', 'ref')
    const all = await withStore(dir, READ, async (store) => {
      const out: { name: string; cid: string }[] = []
      for await (const r of store.refs()) out.push({ name: r.name, cid: r.cid.toString() })
      return out
    })
    if (values.json) json(all)
    else for (const r of all) line(`${r.name} ${r.cid}`)
  },
}
