/** `ckpt diff`: what changed between two checkpoints (JSON lines). */
import { COMMON, parse, storeDir } from '../args.js'
import { UsageError } from '../errors.js'
import { diffText } from '../format.js'
import { json, JSON_HELP, line, READ, REF_HELP, STORE_HELP, withStore, type Command } from '../shared.js'

const OPTIONS = COMMON

export const diff: Command = {
  summary: 'list what changed between two checkpoints',
  help: `usage: ckpt diff --store DIR REF_A REF_B [--json]

Lists the changes from REF_A to REF_B, one per line:
  ram: chunks 10-12 changed (3 x 4096 B)     chunk ranges are inclusive
  region NAME added | removed | resized
  blob NAME added | removed | changed
Nothing is printed when they are equal. With --json JSON lines, one object per change:
{kind: "chunks", region, start, end, chunkSize} (end exclusive), {kind: "region-...", region} or
{kind: "blob-...", blob}.

${REF_HELP}

${STORE_HELP}
${JSON_HELP}

examples:
  ckpt diff --store s vm1@1000 vm1@2000
  ckpt diff --store s vm1@0 vm1 --json`,
  options: OPTIONS,
  json: 'lines',
  async run(argv) {
    const { values, positionals } = parse('diff', argv, OPTIONS)
    if (positionals.length !== 2) throw new UsageError(positionals.length < 2 ? 'diff needs two REFs' : `unexpected argument ${JSON.stringify(positionals[2])}`, 'diff')
    const dir = storeDir(values.store, 'diff')
    await withStore(dir, READ, async (store) => {
      for await (const e of store.diff(positionals[0]!, positionals[1]!)) {
        if (values.json) json(e)
        else line(diffText(e))
      }
    })
  },
}
