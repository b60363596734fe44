/** `ckpt stats`: the store's counts and sizes, logical bytes and dedup ratio (store.stats(), src/stats.ts). */
import { COMMON, parse, storeDir } from '../args.js'
import { columns, humanBytes } from '../format.js'
import { json, JSON_HELP, line, noPositionals, READ, STORE_HELP, withStore, type Command } from '../shared.js'

const OPTIONS = COMMON

export const stats: Command = {
  summary: 'print store statistics',
  help: `usage: ckpt stats --store DIR [--json]

Prints the store's counts and sizes and:
  logical bytes   sum over all checkpoints of their regions' and blobs' sizes
  stored bytes    pack bytes + index bytes
  dedup ratio     logical bytes / pack bytes

${STORE_HELP}
${JSON_HELP}

examples:
  ckpt stats --store s
  ckpt stats --store s --json`,
  options: OPTIONS,
  json: 'document',
  async run(argv) {
    const { values, positionals } = parse('stats', argv, OPTIONS)
    noPositionals('stats', positionals)
    const dir = storeDir(values.store, 'stats')
    const s = await withStore(dir, READ, (store) => store.stats())
    if (values.json) {
      json(s)
      return
    }
    const b = (n: number) => `${n} (${humanBytes(n)})`
    for (const l of columns([
      ['timelines', String(s.timelines)],
      ['checkpoints', String(s.checkpoints)],
      ['blocks', String(s.blocks)],
      ['packs', String(s.packs)],
      ['pack bytes', b(s.packBytes)],
      ['index bytes', b(s.indexBytes)],
      ['filter bytes', b(s.filterBytes)],
      ['stored bytes', b(s.storedBytes)],
      ['logical bytes', b(s.logicalBytes)],
      ['dedup ratio', s.dedupRatio === null ? '-' : `${s.dedupRatio.toFixed(2)}x`],
    ]))
      line(l)
  },
}
