/**
 * ckpt verify REMOTE (verifyRemote, CkptStore.verifyRemote, the CLI): a clean remote verifies clean
 * (structure, deep, a sample); damage of each kind gives its finding, naming the object; the structure
 * pass finds sizes, not flipped bytes; the CLI's exit codes and --json lines (against the schema).
 * Against a directory (file://), s3rver, and an external S3 when CKPT_TEST_S3_URL is set.
 */
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import Ajv2020 from 'ajv/dist/2020.js'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { blake3 } from '../../codecs/blake3.js'
import { cidToString } from '../../codecs/cid.js'
import { catalogKey, claimKey, decodeSegment, encodeJson, encodeSegment, segmentEntry, segmentKey, toHex, type CatalogSegment } from '../../codecs/remote-format.js'
import { openStore, verifyRemote, type CkptStore, type RemoteFinding, type RemoteVerifyOptions, type RemoteVerifySummary } from '../../src/index.js'
import { openObjectStore, type ObjectStore } from '../../store/index.js'
import { ensureBucket, externalS3, startS3rver, type TestS3 } from '../helpers/s3-server.js'
import { caught, removeTmpDirs, tmpDir, tmpStorePath } from '../helpers/tmp.js'
import { record } from './remote-suite.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const CLI = path.join(ROOT, 'dist/cli/ckpt.js')

interface Target {
  url(): string
  env: Record<string, string | undefined>
}

async function collect(url: string, opts: RemoteVerifyOptions = {}): Promise<{ findings: RemoteFinding[]; summary: RemoteVerifySummary }> {
  const findings: RemoteFinding[] = []
  const it = verifyRemote(url, opts)
  for (let r = await it.next(); ; r = await it.next()) {
    if (r.done) return { findings, summary: r.value }
    findings.push(r.value)
  }
}

const kinds = (fs: RemoteFinding[]) => [...new Set(fs.map((f) => f.kind))].sort()
const errors = (fs: RemoteFinding[]) => fs.filter((f) => f.severity === 'error')

/** A remote with two timelines, pushed in two pushes (two index segments, the second with deps). */
async function pushed(t: Target): Promise<{ url: string; store: CkptStore; objects: ObjectStore }> {
  const url = t.url()
  const store = await openStore(tmpStorePath('ckpt-verify-remote-'))
  await record(store, 'run', 3, 11)
  await store.push(url, undefined, { env: t.env })
  await record(store, 'run', 2, 12, 3)
  await record(store, 'other', 2, 13)
  await store.push(url, undefined, { env: t.env })
  return { url, store, objects: await openObjectStore(url, { env: t.env }) }
}

async function keysUnder(objects: ObjectStore, prefix: string): Promise<{ key: string; size: number }[]> {
  const out: { key: string; size: number }[] = []
  for await (const o of objects.list(prefix)) out.push(o)
  return out
}

function suite(name: string, target: () => Target, skip?: string): void {
  describe.skipIf(skip !== undefined)(`verify REMOTE: ${name}${skip ? ` (skipped: ${skip})` : ''}`, () => {
    it('a clean pushed remote verifies clean: structure, --deep, --sample 50', async () => {
      const t = target()
      const { url, store, objects } = await pushed(t)
      try {
        const before = await keysUnder(objects, '')
        const s = await collect(url, { env: t.env })
        expect(s.findings).toEqual([])
        expect(s.summary).toMatchObject({ clean: true, ok: true, errors: 0, warnings: 0, segments: 2, timelines: 2, checkpoints: 7, claims: 7, dataPacks: 0 })
        expect(s.summary.packs).toBeGreaterThanOrEqual(2)
        // one LIST per prefix, no HEAD
        expect(s.summary.requests.lists).toBeLessThanOrEqual(6)
        const d = await collect(url, { env: t.env, deep: true })
        expect(d.findings).toEqual([])
        expect(d.summary.dataPacks).toBe(d.summary.packs)
        expect(d.summary.dataBlocks).toBe(d.summary.blocks)
        const p = await collect(url, { env: t.env, sample: 50 })
        expect(p.findings).toEqual([])
        expect(p.summary.dataPacks).toBe(Math.ceil(p.summary.packs / 2))
        // through the store, by URL
        const it = store.verifyRemote(url, { env: t.env, sample: 1 })
        let r = await it.next()
        while (!r.done) r = await it.next()
        expect(r.value).toMatchObject({ clean: true, dataPacks: 1 })
        // verify only reads
        expect(await keysUnder(objects, '')).toEqual(before)
      } finally {
        await objects.close()
        await store.close()
      }
    }, 120_000)

    it('a flipped byte in a pack: --deep names the pack and offset, the structure pass does not see it; a truncated pack it does', async () => {
      const t = target()
      const { url, store, objects } = await pushed(t)
      try {
        const seg = decodeSegment((await objects.get((await keysUnder(objects, 'index/'))[0]!.key))!)
        const e = segmentEntry(seg, Math.floor(seg.count / 2))
        const pack = `packs/${seg.packs[e.pack]!.hash.slice(0, 2)}/${seg.packs[e.pack]!.hash}`
        const bytes = Buffer.from((await objects.get(pack))!)
        bytes[e.offset + 52 + Math.floor(e.storedLength / 2)]! ^= 0x10
        await objects.put(pack, bytes)
        expect((await collect(url, { env: t.env })).findings).toEqual([])
        const d = await collect(url, { env: t.env, deep: true })
        expect(d.summary).toMatchObject({ ok: false, clean: false, damagedKeys: [pack] })
        expect(kinds(d.findings)).toEqual(['damaged-entry', 'pack-hash-mismatch'])
        expect(d.findings.find((f) => f.kind === 'damaged-entry')).toMatchObject({ key: pack, offset: e.offset, severity: 'error', phase: 'data' })
        await objects.put(pack, bytes.subarray(0, bytes.length - 100))
        const s = await collect(url, { env: t.env })
        expect(s.findings).toEqual([expect.objectContaining({ kind: 'truncated-pack', key: pack, severity: 'error', phase: 'index' })])
      } finally {
        await objects.close()
        await store.close()
      }
    }, 120_000)

    it('a deleted index segment, a deleted pack: each gives its findings', async () => {
      const t = target()
      const { url, store, objects } = await pushed(t)
      try {
        // the first push's segment, which the first catalog segment of run names, and the packs of each
        const cs = (await keysUnder(objects, 'cs/run/'))[0]!.key
        const first = (JSON.parse(Buffer.from((await objects.get(cs))!).toString()) as { indexes: string[] }).indexes[0]!
        const packsOf = new Map<string, string[]>()
        const dependents: string[] = []
        for (const o of await keysUnder(objects, 'index/')) {
          const seg = decodeSegment((await objects.get(o.key))!)
          packsOf.set(o.key.slice(6), seg.packs.map((p) => `packs/${p.hash.slice(0, 2)}/${p.hash}`))
          if (seg.deps.includes(first)) dependents.push(o.key)
        }
        const other = [...packsOf].find(([k]) => k !== first)![1][0]!
        await objects.delete(other)
        const p = await collect(url, { env: t.env })
        expect(p.findings).toEqual([expect.objectContaining({ kind: 'missing-pack', key: other, severity: 'error', phase: 'index' })])
        await objects.delete(`index/${first}`)
        const s = await collect(url, { env: t.env })
        const missing = s.findings.filter((f) => f.kind === 'missing-segment')
        expect(missing.find((f) => f.key === cs)).toMatchObject({ severity: 'error', message: expect.stringContaining(first) })
        // a segment that needs it as a dep: its own finding, naming the missing segment
        expect(missing.some((f) => f.key === `index/${first}`)).toBe(dependents.length > 0)
        expect(s.findings.some((f) => f.kind === 'missing-checkpoint' && f.timeline === 'run' && f.vtime === '0')).toBe(true)
        // its packs: listed by no segment now
        const garbage = s.findings.filter((f) => f.kind === 'unreferenced-pack').map((f) => f.key)
        expect(garbage.sort()).toEqual([...packsOf.get(first)!].sort())
        expect(s.findings.filter((f) => f.kind === 'unreferenced-pack').every((f) => f.severity === 'warning')).toBe(true)
        expect(s.summary.ok).toBe(false)
      } finally {
        await objects.close()
        await store.close()
      }
    }, 120_000)

    it('a catalog segment naming a missing index segment, a garbage catalog segment, a claim without catalog segment', async () => {
      const t = target()
      const { url, store, objects } = await pushed(t)
      try {
        const cid = (await store.seek('run', 0n))!.cid.toString()
        const fake = 'ab'.repeat(32)
        const named = encodeJson({ ckpt: 'remote-catalog', v: 1, timeline: 'run', checkpoints: [{ vtime: '0', cid }], indexes: [fake] })
        const namedKey = catalogKey('run', 0n, 0n, toHex(blake3(named)))
        await objects.put(namedKey, named)
        const s1 = await collect(url, { env: t.env })
        expect(s1.findings.find((f) => f.kind === 'missing-segment')).toMatchObject({ key: namedKey, severity: 'error' })
        expect(s1.findings.find((f) => f.kind === 'missing-checkpoint')).toMatchObject({ key: namedKey, cid, vtime: '0' })
        await objects.delete(namedKey)
        const garbage = new TextEncoder().encode('not a catalog segment')
        const garbageKey = catalogKey('other', 5n, 6n, toHex(blake3(garbage)))
        await objects.put(garbageKey, garbage)
        const s2 = await collect(url, { env: t.env })
        expect(s2.findings).toEqual([expect.objectContaining({ kind: 'bad-catalog-segment', key: garbageKey, severity: 'error', phase: 'catalog' })])
        await objects.delete(garbageKey)
        const claim = claimKey('run', 99_000_000n)
        await objects.put(claim, encodeJson({ cid, at: Date.now() }))
        const s3 = await collect(url, { env: t.env })
        expect(s3.findings).toEqual([expect.objectContaining({ kind: 'pending-claim', key: claim, severity: 'warning', timeline: 'run', vtime: '99000000', cid })])
        expect(s3.summary).toMatchObject({ ok: true, clean: false, pendingClaims: 1, claims: 8 })
      } finally {
        await objects.close()
        await store.close()
      }
    }, 120_000)

    it('a DAG with a hole: --deep finds the node that links a block no index segment lists', async () => {
      const t = target()
      const url = t.url()
      const store = await openStore(tmpStorePath('ckpt-verify-remote-'))
      const objects = await openObjectStore(url, { env: t.env })
      try {
        await record(store, 'run', 2, 14)
        await store.push(url, undefined, { env: t.env })
        // the segment again without one raw chunk's entry, and the catalog segments naming it instead
        const old = (await keysUnder(objects, 'index/'))[0]!.key.slice(6)
        const seg = decodeSegment((await objects.get(segmentKey(old)))!)
        const all = Array.from({ length: seg.count }, (_, k) => segmentEntry(seg, k))
        const dropped = all.find((e) => e.cid[1] === 0x55)!
        const bytes = encodeSegment(seg.packs, seg.deps, all.filter((e) => e !== dropped))
        const name = toHex(blake3(bytes))
        await objects.put(segmentKey(name), bytes)
        await objects.delete(segmentKey(old))
        for (const o of await keysUnder(objects, 'cs/')) {
          const c = JSON.parse(Buffer.from((await objects.get(o.key))!).toString()) as CatalogSegment
          const b = encodeJson({ ...c, indexes: c.indexes.map((i) => (i === old ? name : i)) })
          const vt = c.checkpoints.map((x) => BigInt(x.vtime))
          await objects.delete(o.key)
          await objects.put(catalogKey(c.timeline, vt[0]!, vt.at(-1)!, toHex(blake3(b))), b)
        }
        expect((await collect(url, { env: t.env })).findings).toEqual([])
        const d = await collect(url, { env: t.env, deep: true })
        const lost = cidToString(dropped.cid)
        expect(d.findings).toEqual([expect.objectContaining({ kind: 'missing-link', cid: lost, severity: 'error', phase: 'data' })])
        expect(d.findings[0]!.key).toMatch(/^packs\//)
      } finally {
        await objects.close()
        await store.close()
      }
    }, 120_000)

    it('after a thinning and a gc the remote verifies clean: dropped checkpoints are no pending claims', async () => {
      const t = target()
      const { url, store, objects } = await pushed(t)
      try {
        const th = await store.thinRemote(url, 'run', 'last=2', { env: t.env })
        expect(th.dropped.length).toBe(3)
        const a = await collect(url, { env: t.env, deep: true })
        expect(a.findings).toEqual([])
        expect(a.summary).toMatchObject({ clean: true, checkpoints: 4, claims: 7 })
        await store.gcRemote(url, { margin: 0, env: t.env })
        const b = await collect(url, { env: t.env, deep: true })
        expect(b.findings).toEqual([])
        expect(b.summary).toMatchObject({ clean: true, checkpoints: 4, claims: 7 })
      } finally {
        await objects.close()
        await store.close()
      }
    }, 120_000)

    it('not a ckpt remote: CKPT_BAD_REMOTE (and a directory that is not there is not made)', async () => {
      const t = target()
      const url = t.url()
      const e = await caught(() => collect(url, { env: t.env }))
      expect(e.code).toBe('CKPT_BAD_REMOTE')
      if (url.startsWith('file:')) expect(fs.existsSync(fileURLToPath(url))).toBe(false)
    }, 60_000)

    it('the CLI: exit 0 clean, 1 on errors, 3 for no ckpt remote; a named remote; --json lines valid against the schema', async () => {
      const t = target()
      const { url, store, objects } = await pushed(t)
      const dir = store.dir
      await store.close()
      const run = (args: string[]) => spawnSync(process.execPath, [CLI, 'verify', ...args], { encoding: 'utf8', env: { ...process.env, ...t.env, CKPT_STORE: '' } })
      try {
        const ok = run([url])
        expect(ok.status, ok.stderr).toBe(0)
        expect(ok.stdout).toMatch(/^clean: /)
        expect(spawnSync(process.execPath, [CLI, 'remote', '--store', dir, 'add', 'team', url], { encoding: 'utf8' }).status).toBe(0)
        const named = run(['--store', dir, 'team', '--sample', '50', '--json'])
        expect(named.status, named.stderr).toBe(0)
        const lines = named.stdout.trim().split('\n').map((l) => JSON.parse(l))
        expect(lines).toEqual([{ summary: expect.objectContaining({ clean: true, remote: expect.any(String) }) }])
        for (const l of lines) expectValid(l)
        const pack = (await keysUnder(objects, 'packs/'))[0]!
        await objects.put(pack.key, (await objects.get(pack.key))!.subarray(0, pack.size - 1))
        const bad = run([url, '--json'])
        expect(bad.status, bad.stderr).toBe(1)
        const badLines = bad.stdout.trim().split('\n').map((l) => JSON.parse(l))
        expect(badLines[0]).toEqual({ finding: expect.objectContaining({ kind: 'truncated-pack', key: pack.key }) })
        for (const l of badLines) expectValid(l)
        const text = run([url])
        expect(text.status).toBe(1)
        expect(text.stdout).toContain(`truncated-pack [${pack.key}]`)
        expect(text.stdout).toMatch(/^PROBLEMS: /m)
        const none = run([t.url(), '--json'])
        expect(none.status, none.stderr).toBe(3)
        expect(JSON.parse(none.stdout.trim())).toEqual({ error: { code: 'CKPT_BAD_REMOTE', message: expect.any(String) } })
        if (url.startsWith('s3:')) {
          // a server that is not there: CKPT_REMOTE_UNAVAILABLE, exit 3
          const env = { ...process.env, ...t.env, AWS_ENDPOINT_URL_S3: 'http://127.0.0.1:1', AWS_ENDPOINT_URL: '', CKPT_STORE: '' }
          const down = spawnSync(process.execPath, [CLI, 'verify', url, '--json'], { encoding: 'utf8', env })
          expect(down.status, down.stderr).toBe(3)
          expect(JSON.parse(down.stdout.trim()).error.code).toBe('CKPT_REMOTE_UNAVAILABLE')
        }
        expect(run([url, '--deep', '--sample', '5']).status).toBe(2)
        expect(run([url, 'run']).status).toBe(2)
      } finally {
        await objects.close()
      }
    }, 120_000)
  })
}

// the JSON lines of ckpt verify REMOTE --json against schemas/cli/verify.schema.json
const ajv = new (Ajv2020 as unknown as typeof Ajv2020.default)({ strict: true, allErrors: true })
ajv.addKeyword({ keyword: 'x-output', schemaType: 'string' })
for (const f of fs.readdirSync(path.join(ROOT, 'schemas/cli')).filter((f) => f.endsWith('.schema.json'))) ajv.addSchema(JSON.parse(fs.readFileSync(path.join(ROOT, 'schemas/cli', f), 'utf8')))
function expectValid(v: unknown): void {
  const validate = ajv.getSchema('urn:ckpt:cli:verify')!
  expect(validate(v), `${JSON.stringify(v)}\n${ajv.errorsText(validate.errors)}`).toBe(true)
}

beforeAll(() => {
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` before the tests`)
})
afterAll(removeTmpDirs)

let n = 0
suite('file://', () => ({ url: () => pathToFileURL(tmpDir('ckpt-verify-remote-dir-')).href + `/r${n++}`, env: {} }))

let s3: TestS3 | undefined
beforeAll(async () => {
  s3 = await startS3rver()
}, 30_000)
afterAll(async () => {
  await s3?.close()
})
suite('s3rver', () => ({ url: () => s3!.url(), env: s3!.env }))

const ext = externalS3()
let extReady = false
beforeAll(async () => {
  if (ext) {
    await ensureBucket(ext.url, ext.env)
    extReady = true
  }
}, 60_000)
suite(
  'external S3 (CKPT_TEST_S3_URL)',
  () => {
    if (!extReady) throw new Error('the external bucket was not made')
    const run = `${Date.now().toString(36)}-${process.pid}-verify`
    return { url: () => `${ext!.url}/${run}-${n++}`, env: ext!.env }
  },
  ext ? undefined : 'CKPT_TEST_S3_URL is not set',
)
