/**
 * Every `--json` output of the built CLI (dist/cli/ckpt.js) against its JSON Schema in schemas/cli/:
 * a small store is built in a temporary directory, every command that takes --json is run (successes,
 * and failures, whose output is the error object), and stdout is parsed as the schema's `x-output`
 * says — `document`: the whole of stdout is one JSON value; `lines`: every line is one — and each value
 * is validated against the schema. Each command's schema must exist and name the output kind the
 * command declares (Command.json).
 */
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import Ajv2020 from 'ajv/dist/2020.js'
import type { ValidateFunction } from 'ajv'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { COMMANDS } from '../../src/cli/commands.js'
import { removeTmpDirs, tmpDir } from '../helpers/tmp.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const CLI = path.join(ROOT, 'dist/cli/ckpt.js')
const SCHEMAS = path.join(ROOT, 'schemas/cli')

type Output = 'document' | 'lines'
interface Schema {
  $id: string
  description: string
  'x-output'?: Output
}

const ajv = new (Ajv2020 as unknown as typeof Ajv2020.default)({ strict: true, allErrors: true })
ajv.addKeyword({ keyword: 'x-output', schemaType: 'string' })
const schemas = new Map<string, Schema>()
const validators = new Map<string, ValidateFunction>()
for (const f of fs.readdirSync(SCHEMAS).filter((f) => f.endsWith('.schema.json'))) {
  const s = JSON.parse(fs.readFileSync(path.join(SCHEMAS, f), 'utf8')) as Schema
  schemas.set(f.replace(/\.schema\.json$/, ''), s)
  ajv.addSchema(s)
}
function validator(name: string): ValidateFunction {
  let v = validators.get(name)
  if (!v) {
    v = ajv.getSchema(schemas.get(name)!.$id)!
    validators.set(name, v)
  }
  return v
}

interface Run {
  status: number | null
  stdout: string
  stderr: string
  /** the parsed output: one value (document) or one per line (lines) */
  values: unknown[]
}

/** How many times each schema was checked against a real output (every one must be). */
const checked = new Map<string, number>()

/**
 * Runs `ckpt ARGS... --json`, parses stdout as its schema says and validates every value; `schema`
 * defaults to the command's name. Fails on any deviation.
 */
function ckptJson(args: string[], opts: { schema?: string; status?: number | number[] } = {}): Run {
  const name = opts.schema ?? args[0]!
  const schema = schemas.get(name)
  if (!schema) throw new Error(`no schema schemas/cli/${name}.schema.json`)
  const r = spawnSync(process.execPath, [CLI, ...args, '--json'], { encoding: 'utf8', maxBuffer: 64 << 20, env: { ...process.env, CKPT_STORE: '' } })
  if (r.error) throw r.error
  const what = `ckpt ${args.join(' ')} --json (stderr: ${r.stderr})`
  expect([opts.status ?? 0].flat(), what).toContain(r.status)
  let values: unknown[]
  if (schema['x-output'] === 'document') {
    expect(r.stdout.endsWith('\n'), `${what}: one document ending in a newline`).toBe(true)
    // JSON.parse takes exactly one value: two documents (or trailing text) are a syntax error
    values = [JSON.parse(r.stdout)]
  } else {
    expect(r.stdout === '' || r.stdout.endsWith('\n'), `${what}: JSON lines end in a newline`).toBe(true)
    values = r.stdout === '' ? [] : r.stdout.slice(0, -1).split('\n').map((l) => JSON.parse(l))
  }
  const validate = validator(name)
  for (const v of values) {
    const ok = validate(v)
    expect(ok, `${what}: ${JSON.stringify(v)}\n${ajv.errorsText(validate.errors)}`).toBe(true)
  }
  checked.set(name, (checked.get(name) ?? 0) + 1)
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, values }
}

const one = (r: Run) => r.values[0] as any

let dir: string
let store: string
let ram: string
let disk: string
let cpu: string

beforeAll(() => {
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` before the tests`)
  dir = tmpDir('ckpt-cli-json-')
  store = path.join(dir, 'store')
  ram = path.join(dir, 'ram.bin')
  disk = path.join(dir, 'disk.img')
  cpu = path.join(dir, 'cpu.bin')
  const r = Buffer.alloc(64 << 10)
  randomBytes(16 << 10).copy(r, 0)
  fs.writeFileSync(ram, r)
  fs.writeFileSync(disk, Buffer.alloc(256 << 10))
  fs.writeFileSync(cpu, 'cpu state\n')
})

afterAll(removeTmpDirs)

describe('schemas/cli', () => {
  it('has one schema per command, naming the output kind the command declares in its description', () => {
    for (const [name, c] of COMMANDS) {
      const s = schemas.get(name)
      expect(s, `schemas/cli/${name}.schema.json`).toBeDefined()
      expect(s!['x-output'], name).toBe(c.json)
      expect(s!.description, name).toMatch(c.json === 'document' ? /^One JSON document on stdout/ : /^JSON lines on stdout/)
    }
    expect(schemas.get('version')!['x-output']).toBe('document')
  })

  it('rejects outputs that deviate (a validator that accepts anything would prove nothing)', () => {
    expect(validator('seek')({ timeline: 'vm', vtime: 5, cid: 'bafy' })).toBe(false)
    expect(validator('seek')({ timeline: 'vm', vtime: '5', cid: 'bafyr4i', extra: 1 })).toBe(false)
    expect(validator('ref')({ refs: [] })).toBe(false)
    expect(validator('log')([])).toBe(false)
    expect(validator('diff')({ kind: 'chunks', region: 'ram' })).toBe(false)
    expect(validator('seek')({ error: { code: 'CKPT_NOT_FOUND', message: 'none' } })).toBe(true)
    expect(validator('push')({ remote: 'file:///r', timelines: [], conflicts: [] })).toBe(false)
    expect(validator('pull')({ remote: 'file:///r', lazy: 'yes', timelines: [], blocks: 0, bytes: 0, segments: 0, requests: { gets: 0, lists: 0, heads: 0 }, bytesIn: 0, ms: 1 })).toBe(false)
    expect(validator('remote')([{ name: 'team' }])).toBe(false)
  })
})

describe('every --json output parses as its schema says and is valid', () => {
  let cid0: string
  let cid1: string

  it('init, add, --version', () => {
    expect(one(ckptJson(['init', '--store', store]))).toEqual({ store })
    const a = ckptJson(['add', '--store', store, '--timeline', 'vm', '--vtime', '0', '--label', 'boot', '--meta', 'k=v', `ram=${ram}`, `disk=${disk}:64k`, '--blob', `cpu=${cpu}`])
    cid0 = one(a).cid
    fs.writeFileSync(ram, randomBytes(4096), { flag: 'r+' })
    const b = ckptJson(['add', '--store', store, '--timeline', 'vm', '--vtime', '10', '--policy', 'last=5', `ram=${ram}`, `disk=${disk}`, '--blob', `cpu=${cpu}`])
    cid1 = one(b).cid
    expect(one(b)).toMatchObject({ timeline: 'vm', vtime: '10' })
    ckptJson(['--version'], { schema: 'version' })
  })

  it('log, show, seek, diff, stats (lines where they list, one document otherwise)', () => {
    expect(ckptJson(['log', '--store', store]).values.map((v: any) => v.cid)).toEqual([cid0, cid1])
    expect(ckptJson(['log', '--store', store, '--timeline', 'nothing-here']).stdout).toBe('')
    expect(one(ckptJson(['show', '--store', store, 'vm@0'])).meta).toEqual({ k: 'v', label: 'boot' })
    expect(one(ckptJson(['seek', '--store', store, '--timeline', 'vm', '--vtime', '5'])).cid).toBe(cid0)
    expect(one(ckptJson(['seek', '--store', store, '--timeline', 'vm', '--vtime', '99999999999999999999'], { status: 2 })).error.code).toBe('USAGE')
    expect(ckptJson(['diff', '--store', store, 'vm@0', 'vm']).values).toEqual([{ kind: 'chunks', region: 'ram', start: 0, end: 1, chunkSize: 4096 }])
    expect(ckptJson(['diff', '--store', store, 'vm', 'vm']).values).toEqual([])
    expect(one(ckptJson(['stats', '--store', store]))).toMatchObject({ checkpoints: 2, timelines: 1 })
  })

  it('history (lines) and cat (a document)', () => {
    const h = ckptJson(['history', '--store', store, 'vm', '--region', 'ram', '--chunk', '0']).values as any[]
    expect(h.map((e) => [e.vtime, e.cid, e.previous?.cid ?? null])).toEqual([['0', cid0, null], ['10', cid1, cid0]])
    expect(h[1].chunks).toEqual([{ index: 0, before: h[0].chunks[0].after, after: expect.stringMatching(/^bafkr4i/) }])
    expect(ckptJson(['history', '--store', store, 'vm', '--region', 'ram', '--offset', '0', '--length', '8k', '--exact', '--reverse', '--limit', '1']).values).toMatchObject([{ vtime: '10', chunks: [{ index: 0 }] }])
    expect(ckptJson(['history', '--store', store, 'vm', '--region', 'ram', '--chunk', '0', '--first']).values).toMatchObject([{ vtime: '10', previous: { vtime: '0', cid: cid0 } }])
    expect(ckptJson(['history', '--store', store, 'vm', '--region', 'ram', '--chunk', '5', '--first']).stdout).toBe('')
    expect(ckptJson(['history', '--store', store, 'nothing-here', '--region', 'ram', '--chunk', '0'], { status: 1 }).values).toEqual([{ error: expect.objectContaining({ code: 'CKPT_NOT_FOUND' }) }])
    expect(ckptJson(['history', '--store', store, 'vm', '--region', 'ram', '--chunk', '16'], { status: 1 }).values).toEqual([{ error: expect.objectContaining({ code: 'CKPT_OUT_OF_RANGE' }) }])
    expect(ckptJson(['history', '--store', store, 'vm', '--region', 'ram'], { status: 2 }).values).toEqual([{ error: expect.objectContaining({ code: 'USAGE' }) }])
    const c = one(ckptJson(['cat', '--store', store, 'vm', '--region', 'ram', '--offset', '0x10', '--length', '32']))
    expect(c).toMatchObject({ cid: cid1, region: 'ram', offset: 16, length: 32 })
    expect(Buffer.from(c.data, 'base64')).toEqual(fs.readFileSync(ram).subarray(16, 48))
    expect(one(ckptJson(['cat', '--store', store, 'vm@0', '--blob', 'cpu']))).toEqual({ cid: cid0, blob: 'cpu', offset: 0, length: 10, data: Buffer.from('cpu state\n').toString('base64') })
    expect(one(ckptJson(['cat', '--store', store, 'vm', '--region', 'ram', '--offset', '64k', '--length', '1'], { status: 1 })).error.code).toBe('CKPT_OUT_OF_RANGE')
  })

  it('restore: a region, a blob, --all', () => {
    expect(one(ckptJson(['restore', '--store', store, 'vm', '--region', 'ram', '--out', path.join(dir, 'r.bin')]))).toMatchObject({ region: 'ram', size: 64 << 10, bytesWritten: 16 << 10 })
    expect(one(ckptJson(['restore', '--store', store, 'vm', '--blob', 'cpu', '--out', path.join(dir, 'c.bin')]))).toMatchObject({ blob: 'cpu', size: 10 })
    expect(one(ckptJson(['restore', '--store', store, 'vm@0', '--all', '--out', path.join(dir, 'all')])).files).toHaveLength(3)
    expect(one(ckptJson(['restore', '--store', store, 'vm', '--region', 'nope', '--out', path.join(dir, 'n.bin')], { status: 1 })).error.code).toBe('CKPT_UNKNOWN_REGION')
  })

  it('export and import', () => {
    const car = path.join(dir, 'vm.car')
    expect(one(ckptJson(['export', '--store', store, 'vm@0', 'vm', '--out', car])).checkpoints).toBe(2)
    expect(one(ckptJson(['export', '--store', store, 'vm', '--since', 'vm@0', '--compress', '--out', path.join(dir, 'thin.car')])).checkpoints).toBe(1)
    const other = path.join(dir, 'other')
    expect(one(ckptJson(['import', '--store', other, car])).checkpoints).toBe(2)
    expect(one(ckptJson(['import', '--store', other, car])).alreadyPresent).toBe(2)
  })

  it('remote, push, pull (a file:// remote; a conflict is the summary, exit 1)', () => {
    const url = pathToFileURL(path.join(dir, 'remote')).href
    expect(one(ckptJson(['remote', '--store', store]))).toEqual([])
    expect(one(ckptJson(['remote', '--store', store, 'add', 'team', url]))).toEqual({ name: 'team', url })
    expect(one(ckptJson(['remote', '--store', store, 'add', 'gone', url]))).toEqual({ name: 'gone', url })
    expect(one(ckptJson(['remote', '--store', store, 'remove', 'gone']))).toEqual({ removed: 'gone' })
    expect(one(ckptJson(['remote', '--store', store, 'list']))).toEqual([{ name: 'team', url }])
    expect(one(ckptJson(['remote', '--store', store, 'add', 'bad', 'ftp://x/y'], { status: 1 })).error.code).toBe('CKPT_BAD_REMOTE')
    expect(one(ckptJson(['remote', '--store', store, 'add', 'team'], { status: 2 })).error.code).toBe('USAGE')
    const pushed = one(ckptJson(['push', '--store', store, 'team']))
    expect(pushed).toMatchObject({ remote: url, timelines: [{ name: 'vm', pushed: 2, present: 0 }], conflicts: [] })
    expect(pushed.segment).toMatch(/^[0-9a-f]{64}$/)
    const again = one(ckptJson(['push', '--store', store, url]))
    expect(again).toMatchObject({ blocks: 0, timelines: [{ name: 'vm', pushed: 0, present: 2 }] })
    expect(again).not.toHaveProperty('segment')
    expect(one(ckptJson(['push', '--store', store, 'nobody'], { status: 1 })).error.code).toBe('CKPT_NOT_FOUND')
    expect(one(ckptJson(['push', '--store', store], { status: 2 })).error.code).toBe('USAGE')
    const full = one(ckptJson(['pull', '--store', path.join(dir, 'pulled'), url]))
    expect(full).toMatchObject({ lazy: false, timelines: [{ name: 'vm', added: 2, present: 0 }] })
    expect(full.blocks).toBeGreaterThan(0)
    expect(one(ckptJson(['pull', '--store', path.join(dir, 'lazy'), url, 'vm@0', '--lazy']))).toMatchObject({ lazy: true, blocks: 0, timelines: [{ name: 'vm', added: 1 }] })
    expect(one(ckptJson(['pull', '--store', path.join(dir, 'lazy'), url, 'nothing-here'], { status: 1 })).error.code).toBe('CKPT_NOT_FOUND')
    // another store's timeline vm is another timeline (another lineage): its push conflicts, and says so in its summary
    const rival = path.join(dir, 'rival')
    const add = spawnSync(process.execPath, [CLI, 'add', '--store', rival, '--timeline', 'vm', '--vtime', '0', `cpu=${cpu}`], { encoding: 'utf8' })
    expect(add.status, add.stderr).toBe(0)
    const c = ckptJson(['push', '--store', rival, url], { status: 1 })
    expect(c.stderr).toMatch(/CKPT_REMOTE_CONFLICT/)
    expect(one(c).conflicts).toHaveLength(1)
    expect(one(c).timelines[0].conflict).toMatchObject({ timeline: 'vm', vtime: '0', remote: expect.stringMatching(/^lineage [0-9a-f]+$/) })
  })

  it('ref (an empty list is []), fork, thin, rm, gc', () => {
    expect(one(ckptJson(['ref', '--store', store]))).toEqual([])
    expect(ckptJson(['ref', '--store', store]).stdout).toBe('[]\n')
    expect(one(ckptJson(['ref', '--store', store, 'keep', 'vm@0']))).toEqual({ ref: 'keep', cid: cid0 })
    expect(one(ckptJson(['ref', '--store', store]))).toEqual([{ name: 'keep', cid: cid0 }])
    expect(one(ckptJson(['fork', '--store', store, 'vm@0', '--timeline', 'whatif']))).toMatchObject({ timeline: 'whatif', vtime: '0' })
    expect(one(ckptJson(['thin', '--store', store, '--timeline', 'vm', '--policy', 'last=1', '--dry-run'])).dryRun).toBe(true)
    expect(one(ckptJson(['thin', '--store', store, '--timeline', 'vm', '--saved'])).policy).toBe('last=5')
    expect(one(ckptJson(['rm', '--store', store, 'vm@0'], { status: 1 })).error.code).toMatch(/^CKPT_/)
    expect(one(ckptJson(['ref', '--store', store, '--delete', 'keep']))).toEqual({ deleted: 'keep' })
    expect(one(ckptJson(['rm', '--store', store, 'whatif', 'vm@0'])).removed).toHaveLength(2)
    expect(one(ckptJson(['rm', '--store', store, '--uncatalogued'])).removed).toEqual([])
    expect(one(ckptJson(['gc', '--store', store, '--dry-run'])).dryRun).toBe(true)
    expect(one(ckptJson(['gc', '--store', store, '--threshold', '100'])).dryRun).toBe(false)
  })

  it('verify and repair, on a clean store and on a damaged one', () => {
    const clean = ckptJson(['verify', '--store', store, '--deep'])
    expect(clean.values).toHaveLength(1)
    expect((clean.values[0] as any).summary.clean).toBe(true)
    expect(one(ckptJson(['repair', '--store', store, '--rebuild-index', '--shallow'])).after.clean).toBe(true)

    // one byte of a random page flipped in the middle of the pack
    const packs = path.join(store, 'packs')
    const pack = fs.readdirSync(packs).find((f) => f.endsWith('.pack'))!
    const p = path.join(packs, pack)
    const bytes = fs.readFileSync(p)
    bytes[bytes.length >> 1] ^= 0xff
    fs.writeFileSync(p, bytes)
    const bad = ckptJson(['verify', '--store', store, '--deep'], { status: 1 })
    const findings = bad.values.filter((v: any) => v.finding)
    expect(findings.length).toBeGreaterThan(0)
    expect(bad.values.at(-1)).toHaveProperty('summary.clean', false)
    // drop-damaged removes the checkpoint, the block stays damaged (exit 1); a copy heals it (exit 0)
    const dropped = one(ckptJson(['repair', '--store', store, '--drop-damaged'], { status: 1 }))
    expect(dropped.dropped.map((c: any) => c.cid)).toEqual([cid1])
    expect(dropped.after.clean).toBe(false)
    const healed = one(ckptJson(['repair', '--store', store, '--from', path.join(dir, 'vm.car')]))
    expect(healed.fetched.length).toBeGreaterThan(0)
    expect(healed.after.clean).toBe(true)
  })

  it('verify --deep and repair --rebuild-index on every golden and corrupted fixture store', () => {
    const fixtures = path.join(ROOT, 'test/fixtures/stores')
    const kinds = new Set<string>()
    for (const name of fs.readdirSync(fixtures)) {
      const copy = path.join(dir, 'fixture-' + name)
      fs.cpSync(path.join(fixtures, name, 'store'), copy, { recursive: true })
      const v = ckptJson(['verify', '--store', copy, '--deep'], { status: [0, 1] })
      expect(v.values.at(-1), name).toHaveProperty('summary')
      for (const f of v.values) if ((f as any).finding) kinds.add((f as any).finding.kind)
      ckptJson(['repair', '--store', copy, '--rebuild-index'], { status: [0, 1] })
    }
    // the corrupted fixtures bring findings of several kinds through the schema
    expect(kinds.size).toBeGreaterThanOrEqual(4)
  })

  it('usage errors and a store that cannot be opened are one error document, or an error line', () => {
    expect(one(ckptJson(['stats', '--store', path.join(dir, 'missing')], { status: 3 })).error.code).toBe('CKPT_BAD_STORE')
    expect(one(ckptJson(['show', '--store', store], { status: 2 })).error.code).toBe('USAGE')
    expect(ckptJson(['log', '--store', path.join(dir, 'missing')], { status: 3 }).values).toEqual([{ error: expect.objectContaining({ code: 'CKPT_BAD_STORE' }) }])
    expect(ckptJson(['diff', '--store', store, 'vm'], { status: 2 }).values).toHaveLength(1)
  })

  it('serve: started with --detach, stopped with --stop (and --stop with nothing to stop)', () => {
    const s = path.join(dir, 'served')
    const started = one(ckptJson(['serve', '--store', s, '--detach', '--idle', '60']))
    expect(started).toMatchObject({ store: s, socket: path.join(s, 'serve.sock') })
    expect(one(ckptJson(['serve', '--store', s, '--stop']))).toEqual({ store: s, stopped: true })
    expect(one(ckptJson(['serve', '--store', s, '--stop']))).toEqual({ store: s, stopped: false })
    expect(one(ckptJson(['serve', '--store', s, '--idle', 'soon'], { status: 2 })).error.code).toBe('USAGE')
  })

  it('checked every schema against a real output', () => {
    for (const name of schemas.keys()) if (name !== 'common') expect(checked.get(name) ?? 0, name).toBeGreaterThan(0)
  })
})
