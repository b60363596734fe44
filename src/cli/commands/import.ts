/** `ckpt import`: the checkpoints of a bundle into the store. */
import path from 'node:path'
import { COMMON, QUIET, parse, storeDir } from '../args.js'
import { UsageError } from '../errors.js'
import { columns, humanBytes } from '../format.js'
import { Progress } from '../progress.js'
import { json, JSON_HELP, line, oneRef, QUIET_HELP, STORE_HELP, withStore, type Command } from '../shared.js'

const OPTIONS = { ...COMMON, ...QUIET, as: { type: 'string' }, 'timeline-prefix': { type: 'string' } } as const

/** The bundle's bytes (FILE, or stdin for -), counted as they are read; total: FILE's size. */
async function source(file: string): Promise<{ chunks: AsyncIterable<Uint8Array>; read: () => number; total?: number }> {
  let read = 0
  if (file === '-') {
    const chunks = (async function* () {
      for await (const c of process.stdin) {
        read += (c as Uint8Array).length
        yield c as Uint8Array
      }
    })()
    return { chunks, read: () => read }
  }
  const { inputFileSize } = await import('../../timeline-files.js')
  const total = inputFileSize(file)
  const { fileSource } = await import('../../bundle.js')
  return { chunks: fileSource(file, (n) => (read += n)), read: () => read, total }
}

export const importCmd: Command = {
  summary: 'add the checkpoints of a bundle (CAR file) to the store',
  help: `usage: ckpt import --store DIR FILE [--as NAME | --timeline-prefix PREFIX] [--quiet] [--json]

Reads a bundle (CAR v1 or v2; plain, zstd or gzip), checks every block against its hash and every
checkpoint's DAG for completeness (blocks may also come from the store: thin bundles), and only then
makes the checkpoints visible, all at once. A bad bundle changes nothing visible. FILE - reads stdin.
Importing a bundle twice is a no-op. A timeline that exists here with another history (another
lineage) is never merged: give --as NAME (a bundle of one timeline) or --timeline-prefix PREFIX.

${STORE_HELP}
  --as NAME               import the bundle's timeline under this name
  --timeline-prefix P     prefix the names of all imported timelines
${QUIET_HELP}
${JSON_HELP}

examples:
  ckpt import --store s run-42.car
  ckpt import --store s ci-failure.car --timeline-prefix ci/
  ssh ci ckpt export --store /ckpt run-42 --out - | ckpt import --store s -`,
  options: OPTIONS,
  json: 'document',
  async run(argv) {
    const { values, positionals } = parse('import', argv, OPTIONS)
    const file = oneRef('import', positionals)
    const dir = storeDir(values.store, 'import')
    if (values.as !== undefined && values['timeline-prefix'] !== undefined) throw new UsageError('give --as or --timeline-prefix, not both', 'import')
    const src = await source(file)
    const progress = new Progress('ckpt import', Progress.wanted(values))
    try {
      const s = await withStore(dir, { dedupFilter: true }, async (store) => {
        const { importBundle } = await import('../../bundle.js')
        return importBundle(store, src.chunks, {
          as: values.as,
          timelinePrefix: values['timeline-prefix'],
          onProgress: (p) => progress.amount(`${p.blocks} blocks`, src.read(), src.total),
        })
      })
      progress.end()
      if (values.json) {
        json({ file: file === '-' ? '-' : path.resolve(file), ...s })
        return
      }
      const what = s.checkpoints === 0 ? 'nothing new' : `${s.checkpoints} checkpoint${s.checkpoints === 1 ? '' : 's'}`
      line(`imported ${what} into ${s.timelines.join(', ')}${s.alreadyPresent ? ` (${s.alreadyPresent} already present)` : ''}`)
      for (const l of columns([
        ['blocks', `${s.blocks} read, ${s.newBlocks} new, ${s.presentBlocks} already present`],
        ['bytes', `${humanBytes(s.bytes)} read, ${humanBytes(s.storedBytes)} stored`],
      ]))
        line('  ' + l)
    } finally {
      progress.end()
    }
  },
}
