/** `ckpt verify`: check the store, or a remote (JSON lines: one per finding, then the summary). */
import { isCkptError } from '../../../codecs/errors.js'
import type { RemoteFinding, RemoteVerifySummary } from '../../remote-verify.js'
import type { Finding, VerifySummary } from '../../verify.js'
import { COMMON, QUIET, parse, parsePercent, storeDir } from '../args.js'
import { EXIT, StoreOpenError, UsageError, type ExitCode } from '../errors.js'
import { humanBytes } from '../format.js'
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

function remoteFindingText(f: RemoteFinding): string {
  return `${f.severity.padEnd(7)} ${f.phase.padEnd(9)} ${f.kind} [${f.key}${f.offset !== undefined ? ` @${f.offset}` : ''}]: ${f.message}`
}

function remoteSummaryText(s: RemoteVerifySummary, dataPhase: boolean): string[] {
  const secs = (ms: number) => (ms / 1000).toFixed(2)
  const out = [
    `${s.clean ? 'clean' : s.ok ? 'ok' : 'PROBLEMS'}: ${s.remote}: ${plural(s.timelines, 'timeline')}, ${plural(s.checkpoints, 'checkpoint')}, ${plural(s.segments, 'index segment')},` +
      ` ${s.blocks} blocks in ${plural(s.packs, 'pack')} (${humanBytes(s.packBytes)}) checked (index ${secs(s.ms.index)} s, catalog ${secs(s.ms.catalog)} s` +
      `${dataPhase ? `, data ${secs(s.ms.data)} s for ${plural(s.dataPacks, 'pack')}, ${s.dataBlocks} blocks` : ''}); ${plural(s.errors, 'error')}, ${plural(s.warnings, 'warning')}${s.infos ? `, ${plural(s.infos, 'note')}` : ''}`,
  ]
  for (const a of s.advice) out.push(`next: ${a}`)
  return out
}

/** What makes the remote unreadable as a whole: exit 3, as a store that cannot be opened. */
const UNREACHABLE = ['CKPT_REMOTE_UNAVAILABLE', 'CKPT_BAD_REMOTE', 'CKPT_REMOTE_AUTH', 'CKPT_VERSION']

/** The REMOTE a first positional names: a URL, or the name of a remote of the store (else undefined: a REF). */
async function remoteArg(first: string | undefined, store: string | undefined): Promise<string | undefined> {
  if (first === undefined) return undefined
  if (first.includes('://')) return first
  const dir = store ?? (process.env.CKPT_STORE || undefined)
  if (dir === undefined) return undefined
  const { listRemotes } = await import('../../remote.js')
  return listRemotes(storeDir(dir, 'verify')).some((r) => r.name === first) ? first : undefined
}

async function verifyRemoteCommand(remote: string, values: { store?: string; deep?: boolean; json?: boolean; quiet?: boolean }, sample: number | undefined): Promise<ExitCode> {
  const { remoteUrl } = await import('../../remote.js')
  const { verifyRemote } = await import('../../remote-verify.js')
  const progress = new Progress('ckpt verify', Progress.wanted(values))
  const dataPhase = values.deep === true || sample !== undefined
  try {
    const url = remote.includes('://') ? remoteUrl('', remote) : remoteUrl(storeDir(values.store, 'verify'), remote)
    const it = verifyRemote(url, { deep: values.deep === true, sample, onProgress: (p) => progress.amount(p.phase, p.done, p.total, p.unit === 'bytes' ? 'B' : 'objects') })
    for (let r = await it.next(); ; r = await it.next()) {
      progress.end()
      if (r.done) {
        if (values.json) json({ summary: r.value })
        else for (const l of remoteSummaryText(r.value, dataPhase)) line(l)
        return r.value.ok ? EXIT.OK : EXIT.DATA
      }
      if (values.json) json({ finding: r.value })
      else line(remoteFindingText(r.value))
    }
  } catch (err) {
    if (isCkptError(err) && UNREACHABLE.includes(err.code)) throw new StoreOpenError(err)
    throw err
  } finally {
    progress.end()
  }
}

export const verify: Command = {
  summary: "check the store: structure, every checkpoint's DAG, and (--deep) every block",
  help: `usage: ckpt verify --store DIR [REF...] [--deep | --sample PCT] [--quiet] [--json]
       ckpt verify [--store DIR] REMOTE [--deep | --sample PCT] [--quiet] [--json]

Checks, cheap first: 1. structure — every pack is read front to back (headers, entry checksums,
footers) and agrees with the index; 2. dag — every checkpoint (or only the REFs) is walked from its
manifest: every node decodes, every link resolves to an intact block of the right size, catalog
entries and refs point at manifests; 3. data (--deep, or --sample PCT of the blocks) — every block
is read, decompressed and re-hashed. Prints every finding, the checkpoints each damaged block hurts,
a summary and what to do next. With --json JSON lines: {"finding": ...} per finding, then one
{"summary": ...} line.

exit status: 0 clean, 1 problems found, 2 usage error, 3 the store cannot be opened

With REMOTE (a URL, or the name of a remote of --store's store: ckpt remote) the remote is checked
instead, reading only (GET and LIST; it never changes the remote), cheap first: its format object;
its index segments (each hashes to its name and decodes; one LIST of packs/ shows that the packs
they list are there with the sizes they say); its catalog (timeline records and catalog segments
decode, name index segments that are there, and list only checkpoints whose manifests those
segments reach); claims no catalog segment lists (a push that stopped: pending-claim) and packs or
segments nothing lists (garbage of stopped pushes, gc removes it) are warnings. --deep fetches every
pack whole (--sample PCT: that share of them, at random, at least one): its hash, header and footer,
every entry's header and checksum, every block decompressed and re-hashed, and every link of a tree
node or manifest listed in the index. Credentials come from the AWS environment (ckpt remote
--help). A name that is both a remote's and a timeline's is the remote: give the timeline as
TIMELINE@VTIME or by CID.

exit status with REMOTE: 0 no errors (warnings alone: 0), 1 errors found, 2 usage error, 3 the
remote cannot be read (CKPT_REMOTE_UNAVAILABLE, CKPT_REMOTE_AUTH), is not a ckpt remote
(CKPT_BAD_REMOTE) or has a format this build does not read (CKPT_VERSION)

${REF_HELP}

${STORE_HELP}
  --deep             read and re-hash every block
  --sample PCT       read and re-hash a random PCT% of the blocks (0 < PCT <= 100)
${QUIET_HELP}
${JSON_HELP}

examples:
  ckpt verify --store s
  ckpt verify --store s --deep
  ckpt verify --store s run-42@5000000 --sample 10 --json
  ckpt verify s3://recordings/ckpt --sample 5
  ckpt verify --store s team --deep --json`,
  options: OPTIONS,
  json: 'lines',
  async run(argv) {
    const { values, positionals } = parse('verify', argv, OPTIONS)
    if (values.deep && values.sample !== undefined) throw new UsageError('give --deep or --sample, not both', 'verify')
    const sample = values.sample === undefined ? undefined : parsePercent(values.sample, '--sample', 'verify', { zero: false })
    const remote = await remoteArg(positionals[0], values.store)
    if (remote !== undefined) {
      if (positionals.length > 1) throw new UsageError('verify REMOTE takes no REF (it checks the whole remote)', 'verify')
      return verifyRemoteCommand(remote, values, sample)
    }
    const dir = storeDir(values.store, 'verify')
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
