/** `ckpt init`: create a store. */
import { COMMON, parse, storeDir } from '../args.js'
import { json, JSON_HELP, line, noPositionals, STORE_HELP, withStore, type Command } from '../shared.js'

const OPTIONS = COMMON

export const init: Command = {
  summary: 'create a store',
  help: `usage: ckpt init --store DIR [--json]

Creates an empty store in DIR (which must be missing or empty); an existing store is left as it is.
Prints the store's absolute path; with --json {store}.

${STORE_HELP}
${JSON_HELP}

examples:
  ckpt init --store ./ckpt-store
  CKPT_STORE=/var/lib/ckpt ckpt init`,
  options: OPTIONS,
  json: 'document',
  async run(argv) {
    const { values, positionals } = parse('init', argv, OPTIONS)
    noPositionals('init', positionals)
    const dir = storeDir(values.store, 'init')
    await withStore(dir, { threads: 0 }, async () => undefined)
    if (values.json) json({ store: dir })
    else line(dir)
  },
}
