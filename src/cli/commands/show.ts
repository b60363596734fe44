/** `ckpt show`: a checkpoint's manifest. */
import { COMMON, parse, storeDir } from '../args.js'
import { manifestJson, manifestText } from '../format.js'
import { json, JSON_HELP, line, oneRef, READ, REF_HELP, STORE_HELP, withStore, type Command } from '../shared.js'

const OPTIONS = COMMON

export const show: Command = {
  summary: "print a checkpoint's manifest",
  help: `usage: ckpt show --store DIR REF [--json]

Prints the checkpoint's manifest: CID, timeline, vtime, wall-clock time (ISO 8601), parent, meta,
regions (size, chunk size, root CID or "(all zero)") and blobs (size, chunk count).

${REF_HELP}

${STORE_HELP}
${JSON_HELP}

examples:
  ckpt show --store s vm1
  ckpt show --store s vm1@5000 --json
  ckpt show --store s bafyrei...`,
  options: OPTIONS,
  json: 'document',
  async run(argv) {
    const { values, positionals } = parse('show', argv, OPTIONS)
    const ref = oneRef('show', positionals)
    const dir = storeDir(values.store, 'show')
    await withStore(dir, READ, async (store) => {
      const cid = (await store.resolve(ref)).toString()
      const m = await store.manifest(cid)
      if (values.json) json(manifestJson(cid, m))
      else for (const l of manifestText(cid, m)) line(l)
    })
  },
}
