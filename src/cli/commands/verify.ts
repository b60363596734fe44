/** `ckpt verify`: check the store (JSON lines: one per finding, then the summary). */
import type { Finding, VerifySummary } from '../../verify.js'
import { COMMON, QUIET, parse, parsePercent, storeDir } from '../args.js'
import { EXIT, UsageError, type ExitCode } from '../errors.js'
import { Progress } from '../progress.js'
import { json, JSON_HELP, line, plural, QUIET_HELP, REF_HELP, STORE_HELP, withStore, type Command } from '../shared.js'

const OPTIONS = { ...COMMON, ...QUIET, deep: { type: 'boolean' }, sample: { type: 'string' } } as const

function findingText(f: Finding): string[] {
  const where = f.pack !== undefined ? ` [pack ${f.pack}${f.offset !== undefined ? ` @${f.offset}` : ''}]` : ''
  const out = [`${f.severity.padEnd(7)} ${f.phase.padEnd(9)} ${f.kind}${where}: ${f.message}`]
  if (f.checkpoints?.length) {
    const shown = f.checkpoints.slice(0, 5).map((c) => `${c.timeline}@${c.vtime}`)
    out.push(`        damages ${shown.join(', ')}${f.checkpoints.length > 5 ? ` and ${f.checkpoints.length - 5} more` : ''}`)
  }
  return out
}

function summaryText(s: VerifySummary, dataPhase: boolean): string[] {
  const secs = (ms: number) => (ms / 1000).toFixed(2)
  const out = [
    `${s.clean ? 'clean' : 'PROBLEMS'}: ${plural(s.checkpoints, 'checkpoint')}, ${s.blocks} blocks in ${plural(s.packs, 'pack')} checked` +
      ` (structure ${secs(s.ms.structure)} s, dag ${secs(s.ms.dag)} s${dataPhase ? `, data ${secs(s.ms.data)} s for ${s.dataBlocks} blocks` : ''});` +
      ` ${plural(s.errors, 'error')}, ${plural(s.warnings, 'warning')}${s.infos ? `, ${plural(s.infos, 'note')}` : ''}`,
  ]
  if (s.damagedCheckpoints.length) {
    const names = s.damagedCheckpoints.map((c) => `${c.timeline}@${c.vtime}`)
    out.push(`damaged checkpoints (${names.length}): ${names.slice(0, 10).join(', ')}${names.length > 10 ? `, and ${names.length - 10} more (--json lists all)` : ''}`)
  }
  for (const a of s.advice) out.push(`next: ${a}`)
  if (s.clean && !dataPhase) out.push('next: ckpt verify --deep re-hashes every block too')
  return out
}

export const verify: Command = {
  summary: "check the store: structure, every checkpoint's DAG, and (--deep) every block",
  help: `usage: ckpt verify --store DIR [REF...] [--deep | --sample PCT] [--quiet] [--json]

Checks, cheap first: 1. structure — every pack is read front to back (headers, entry checksums,
footers) and agrees with the index; 2. dag — every checkpoint (or only the REFs) is walked from its
manifest: every node decodes, every link resolves to an intact block of the right size, catalog
entries and refs point at manifests; 3. data (--deep, or --sample PCT of the blocks) — every block
is read, decompressed and re-hashed. Prints every finding, the checkpoints each damaged block hurts,
a summary and what to do next. With --json JSON lines: {"finding": ...} per finding, then one
{"summary": ...} line.

exit status: 0 clean, 1 problems found, 2 usage error, 3 the store cannot be opened

${REF_HELP}

${STORE_HELP}
  --deep             read and re-hash every block
  --sample PCT       read and re-hash a random PCT% of the blocks (0 < PCT <= 100)
${QUIET_HELP}
${JSON_HELP}

examples:
  ckpt verify --store s
  ckpt verify --store s --deep
  ckpt verify --store s run-42@5000000 --sample 10 --json`,
  options: OPTIONS,
  json: 'lines',
  async run(argv) {
    const { values, positionals } = parse('verify', argv, OPTIONS)
    const dir = storeDir(values.store, 'verify')
    if (values.deep && values.sample !== undefined) throw new UsageError('give --deep or --sample, not both', 'verify')
    const sample = values.sample === undefined ? undefined : parsePercent(values.sample, '--sample', 'verify', { zero: false })
    const progress = new Progress('ckpt verify', Progress.wanted(values))
    let status: ExitCode = EXIT.OK
    try {
      await withStore(dir, { mustExist: true, readOnly: true }, async (store) => {
        const { verifyStore } = await import('../../verify.js')
        const it = verifyStore(store, {
          refs: positionals,
          deep: values.deep === true,
          sample,
          onProgress: (p) => progress.amount(p.phase, p.done, p.total, p.unit === 'bytes' ? 'B' : 'checkpoints'),
        })
        for (let r = await it.next(); ; r = await it.next()) {
          progress.end()
          if (r.done) {
            if (values.json) json({ summary: r.value })
            else for (const l of summaryText(r.value, values.deep === true || sample !== undefined)) line(l)
            status = r.value.clean ? EXIT.OK : EXIT.DATA
            return
          }
          if (values.json) json({ finding: r.value })
          else for (const l of findingText(r.value)) line(l)
        }
      })
    } finally {
      progress.end()
    }
    return status
  },
}
