/** `ckpt repair`: heal a damaged store (src/repair.ts). */
import { isCkptError } from '../../../codecs/errors.js'
import type { RepairSummary } from '../../repair.js'
import { COMMON, QUIET, parse, storeDir } from '../args.js'
import { EXIT, StoreOpenError, UsageError } from '../errors.js'
import { Progress } from '../progress.js'
import { json, JSON_HELP, line, noPositionals, plural as n, QUIET_HELP, STORE_HELP, type Command } from '../shared.js'

const OPTIONS = {
  ...COMMON,
  ...QUIET,
  from: { type: 'string' },
  'rebuild-index': { type: 'boolean' },
  adopt: { type: 'boolean' },
  'drop-damaged': { type: 'boolean' },
  shallow: { type: 'boolean' },
} as const

/** What --rebuild-index did, in lines. */
function rebuiltText(r: NonNullable<RepairSummary['rebuiltIndex']>, dir: string): string[] {
  const out = [
    `rebuilt the index from ${n(r.packs, 'pack')}${r.recovered ? ` (${r.recovered} set aside earlier brought back)` : ''}: ${n(r.blocks, 'block')}, ${n(r.checkpoints, 'checkpoint')} in ${n(r.timelines, 'timeline')}, ${n(r.refs, 'ref')}` +
      (r.legacy ? (r.adopted ? `; no catalog records (format 1): ${n(r.adopted, 'checkpoint')} catalogued from their manifests` : "; no catalog records (format 1): the old index's catalog kept") : `, from ${n(r.records, 'catalog record')}`) +
      (r.keptFromIndex ? `; ${n(r.keptFromIndex, 'catalog entry', 'catalog entries')} no record held kept from the old index` : '') +
      (!r.legacy && r.adopted ? `; ${n(r.adopted, 'checkpoint')} adopted from their manifests` : ''),
  ]
  if (r.setAside) out.push(`the damaged index was set aside as ${r.setAside}`)
  if (r.missingRecords) out.push(`warning: ${n(r.missingRecords, 'catalog record')} could not be read (damaged packs): the catalog may lack their changes`)
  if (r.damagedPacks.length) out.push(`packs with damage in them (retired): ${r.damagedPacks.join(', ')}`)
  if (r.uncovered.length) {
    out.push(`${n(r.uncovered.length, 'checkpoint')} found in the packs that no catalog record covers (not catalogued):`)
    for (const u of r.uncovered.slice(0, 10)) out.push(`  ${u.timeline}@${u.vtime} ${u.cid}`)
    if (r.uncovered.length > 10) out.push(`  and ${r.uncovered.length - 10} more (--json lists all)`)
    out.push(`next: catalogue them: ckpt repair --store ${dir} --rebuild-index --adopt; or remove them: ckpt rm --store ${dir} CID...`)
  }
  return out
}

function summaryText(s: RepairSummary, dir: string, from: string | undefined): string[] {
  const out = s.rebuiltIndex ? rebuiltText(s.rebuiltIndex, dir) : []
  if (from) out.push(`fetched ${n(s.fetched.length, 'block')} from ${from}${s.recatalogued ? `; ${n(s.recatalogued, 'checkpoint')} the catalog had lost catalogued again` : ''}`)
  for (const note of s.notes) out.push(`note: ${note}`)
  if (s.dropped.length) out.push(`dropped ${n(s.dropped.length, 'checkpoint')} that could not be healed: ${s.dropped.map((c) => `${c.timeline}@${c.vtime}`).join(', ')}`)
  if (s.after.clean) out.push('the store is clean')
  else {
    out.push(`still damaged: ${n(s.stillDamaged.length, 'block')}, ${n(s.after.damagedCheckpoints.length, 'checkpoint')}`)
    for (const a of s.after.advice) out.push(`next: ${a}`)
  }
  return out
}

export const repair: Command = {
  summary: 'heal a damaged store: from a copy, by rebuilding the index, or by dropping what is lost',
  help: `usage: ckpt repair --store DIR (--from SOURCE | --rebuild-index [--adopt] | --drop-damaged)... [--shallow]
                   [--quiet] [--json]

  --from SOURCE      fetch damaged or missing blocks by CID from SOURCE (another store, or a bundle
                     file such as one made earlier with ckpt export), verify and write them anew
  --rebuild-index    rebuild the whole index from the packs: block locations from the entries (each
                     names its CID and carries a checksum), the catalog (timelines, checkpoints,
                     refs, policies) from the catalog records every commit writes into the packs;
                     what the old index knew that no record holds is kept. A damaged index LevelDB
                     cannot repair is set aside (index.broken-MS); one the OS will not open (a full
                     disk, permissions, a read-only medium) is an error, never set aside
  --adopt            with --rebuild-index: catalogue the checkpoints found in the packs that no
                     catalog record covers, from their own manifests (they are listed otherwise)
  --drop-damaged     remove from the catalog every checkpoint that still cannot be read, and say which

Several may be given; they run in the order above. Packs with damage in them are retired (no more
appends; gc rewrites them). Finds damage with verify --deep (--shallow: without the data phase).
When the catalog and the packs' records still disagree afterwards, the catalog is rebuilt from both.
A missing, emptied or stale index needs no repair: the next command that writes rebuilds it, and
read-only commands read from the packs meanwhile. With --json the whole summary.
exit status: 0 the store is clean afterwards, 1 damage remains, 2 usage error, 3 cannot be opened

${STORE_HELP}
  --shallow          look for damage without re-hashing every block
${QUIET_HELP}
${JSON_HELP}

examples:
  ckpt repair --store s --from backup.car
  ckpt repair --store s --from /mnt/mirror/s
  ckpt repair --store s --rebuild-index
  ckpt repair --store s --rebuild-index --adopt
  ckpt repair --store s --from backup.car --drop-damaged`,
  options: OPTIONS,
  json: 'document',
  async run(argv) {
    const { values, positionals } = parse('repair', argv, OPTIONS)
    noPositionals('repair', positionals)
    const dir = storeDir(values.store, 'repair')
    if (!values.from && !values['rebuild-index'] && !values['drop-damaged']) throw new UsageError('give --from SOURCE, --rebuild-index or --drop-damaged', 'repair')
    const progress = new Progress('ckpt repair', Progress.wanted(values))
    try {
      progress.set('checking the store')
      const { repairStore } = await import('../../repair.js')
      let s: RepairSummary
      try {
        s = await repairStore(dir, {
          from: values.from,
          rebuildIndex: values['rebuild-index'] === true,
          adopt: values.adopt === true,
          dropDamaged: values['drop-damaged'] === true,
          deep: values.shallow !== true,
          onProgress: (p) => progress.amount(p.phase, p.done, p.total, 'packs'),
        })
      } catch (err) {
        // the store could not be opened (locked, not a store, a version, or the index: details.state)
        if (isCkptError(err) && (['CKPT_LOCKED', 'CKPT_BAD_STORE', 'CKPT_VERSION'].includes(err.code) || err.details.state !== undefined)) throw new StoreOpenError(err)
        throw err
      }
      progress.end()
      if (values.json) json(s)
      else for (const l of summaryText(s, dir, values.from)) line(l)
      return s.after.clean ? EXIT.OK : EXIT.DATA
    } finally {
      progress.end()
    }
  },
}
