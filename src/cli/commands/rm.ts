/** `ckpt rm`: remove checkpoints from the catalog. */
import { COMMON, parse, storeDir } from '../args.js'
import { UsageError } from '../errors.js'
import { EXISTING, json, JSON_HELP, line, STORE_HELP, withStore, type Command } from '../shared.js'

const OPTIONS = { ...COMMON, uncatalogued: { type: 'boolean' } } as const

export const rm: Command = {
  summary: 'remove checkpoints from the catalog',
  help: `usage: ckpt rm --store DIR REF... [--json]
       ckpt rm --store DIR --uncatalogued [--json]

Removes each checkpoint from its timeline (a CID catalogued in several timelines goes from all). A
checkpoint a ref names must first lose its ref (ckpt ref --delete NAME). Blocks stay until ckpt gc.
The removal is recorded in the packs, so a rebuilt index knows it too. With --json {removed: [{timeline,
vtime, cid}...]}.

A CID stored in the packs but in no timeline, whose removal no record explains (ckpt verify names
such checkpoints; gc waits while there are any), is removed at the place its manifest names.
--uncatalogued removes every such checkpoint (to catalogue them instead: ckpt repair --rebuild-index
--adopt).

REF is a checkpoint CID, TIMELINE@VTIME (exactly that vtime: rm never takes the nearest), TIMELINE
(its latest checkpoint) or ref:NAME.

${STORE_HELP}
  --uncatalogued     every checkpoint stored in no timeline with no recorded removal
${JSON_HELP}

examples:
  ckpt rm --store s run-42@5000000
  ckpt rm --store s bafyr4i...
  ckpt rm --store s --uncatalogued`,
  options: OPTIONS,
  json: 'document',
  async run(argv) {
    const { values, positionals } = parse('rm', argv, OPTIONS)
    const dir = storeDir(values.store, 'rm')
    if (values.uncatalogued && positionals.length) throw new UsageError('give REFs or --uncatalogued, not both', 'rm')
    if (positionals.length === 0 && !values.uncatalogued) throw new UsageError('give at least one checkpoint (REF), or --uncatalogued', 'rm')
    const gone = await withStore(dir, EXISTING, async (store) => {
      if (!values.uncatalogued) return store.rm(positionals)
      const list: string[] = []
      for await (const e of store.uncatalogued()) list.push(e.cid.toString())
      return list.length ? store.rm(list) : []
    })
    if (values.json) json({ removed: gone.map((e) => ({ timeline: e.timeline, vtime: e.vtime, cid: e.cid.toString() })) })
    else {
      for (const e of gone) line(`removed ${e.timeline}@${e.vtime} ${e.cid}`)
      line('next: ckpt gc reclaims the space')
    }
  },
}
