/**
 * The `ckpt` command end to end: the compiled CLI (dist/cli/ckpt.js, built by `tsc` before the tests)
 * run as a child process on real files in a temporary directory.
 */
import { spawnSync, type SpawnSyncReturns } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openStore } from '../../src/index.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const CLI = path.join(ROOT, 'dist/cli/ckpt.js')
const PAGE = 4096
const CLUSTER = 65536

interface Run {
  status: number | null
  stdout: string
  stderr: string
  raw: Buffer
}

function ckpt(args: string[], env: Record<string, string | undefined> = {}): Run {
  const e: NodeJS.ProcessEnv = { ...process.env }
  delete e.CKPT_STORE
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) delete e[k]
    else e[k] = v
  }
  const r: SpawnSyncReturns<Buffer> = spawnSync(process.execPath, [CLI, ...args], { env: e, maxBuffer: 64 << 20 })
  if (r.error) throw r.error
  return { status: r.status, stdout: r.stdout.toString('utf8'), stderr: r.stderr.toString('utf8'), raw: r.stdout }
}

/** A JSON error object on stdout and one `ckpt: CODE: ...` line on stderr. */
function expectError(r: Run, status: number, code: string): void {
  expect(r.status, r.stderr).toBe(status)
  expect(r.stderr).toContain(`ckpt: ${code}:`)
}

function jsonLines(s: string): any[] {
  return s
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l))
}

function setPage(buf: Buffer, index: number, size: number, data: Buffer = randomBytes(size)): void {
  data.copy(buf, index * size)
}

let tmp: string
let store: string
const files: Record<string, string> = {}
const data: Record<string, Buffer> = {}
const cids: string[] = []
const V1 = 1000
const V2 = 2000

beforeAll(() => {
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npx tsc -p .\` before the tests`)
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ckpt-cli-test-'))
  store = path.join(tmp, 'store')

  // ram: 1 MiB of 4 KiB pages, some random, the rest zero
  const ram1 = Buffer.alloc(1 << 20)
  for (const i of [0, 1, 2, 5, 10, 11, 12, 50, 100, 200, 255]) setPage(ram1, i, PAGE)
  // the second checkpoint: pages 10-12 and 100 rewritten, zero page 150 written
  const ram2 = Buffer.from(ram1)
  for (const i of [10, 11, 12, 100, 150]) setPage(ram2, i, PAGE)
  // disk: 2 MiB of 64 KiB clusters, the first 8 random
  const disk1 = Buffer.alloc(2 << 20)
  for (let i = 0; i < 8; i++) setPage(disk1, i, CLUSTER)
  const disk2 = Buffer.from(disk1)
  for (const i of [3, 20]) setPage(disk2, i, CLUSTER)
  const cpu1 = Buffer.from('cpu state one\n')
  const cpu2 = Buffer.from('cpu state two, a bit longer\n')
  Object.assign(data, { ram1, ram2, disk1, disk2, cpu1, cpu2 })
  for (const [k, v] of Object.entries(data)) {
    files[k] = path.join(tmp, `${k}.bin`)
    fs.writeFileSync(files[k]!, v)
  }
})

afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true })
})

describe('ckpt CLI', () => {
  it('init creates the store and prints its path', () => {
    const r = ckpt(['init', '--store', store])
    expect(r.status, r.stderr).toBe(0)
    expect(r.stdout.trim()).toBe(path.resolve(store))
    expect(fs.existsSync(path.join(store, 'CKPT'))).toBe(true)
    // again: an existing store is fine
    expect(ckpt(['init', '--store', store]).status).toBe(0)
  })

  it('add creates the timeline, then adds a second checkpoint', () => {
    const a = ckpt(['add', '--store', store, '--timeline', 'vm1', '--vtime', String(V1), '--label', 'boot', '--meta', 'emu=test',
      `ram=${files.ram1}`, `disk=${files.disk1}`, '--blob', `cpu=${files.cpu1}`])
    expect(a.status, a.stderr).toBe(0)
    const cid1 = a.stdout.trim()
    expect(cid1).toMatch(/^b[a-z2-7]+$/)
    expect(a.stderr).toBe('') // no progress when stderr is not a TTY

    const b = ckpt(['add', '--store', store, '--timeline', 'vm1', '--vtime', String(V2), '--json', `ram=${files.ram2}`, `disk=${files.disk2}`, '--blob', `cpu=${files.cpu2}`])
    expect(b.status, b.stderr).toBe(0)
    const j = JSON.parse(b.stdout)
    expect(j.cid).toMatch(/^b[a-z2-7]+$/)
    expect(j.cid).not.toBe(cid1)
    expect(j.timeline).toBe('vm1')
    expect(j.vtime).toBe(String(V2))
    expect(j.stats.chunks).toBe(256 + 32)
    expect(j.stats.newChunks).toBe(5 + 2)
    cids.push(cid1, j.cid)
  })

  it('log lists both checkpoints in order, with the label', () => {
    const r = ckpt(['log', '--store', store])
    expect(r.status, r.stderr).toBe(0)
    const lines = r.stdout.trim().split('\n')
    expect(lines).toEqual([`vm1@${V1} ${cids[0]} boot`, `vm1@${V2} ${cids[1]}`])
    const j = jsonLines(ckpt(['log', '--store', store, '--timeline', 'vm1', '--json']).stdout)
    expect(j.map((e) => [e.timeline, e.vtime, e.cid])).toEqual([
      ['vm1', String(V1), cids[0]],
      ['vm1', String(V2), cids[1]],
    ])
    expect(j[0].meta).toEqual({ label: 'boot', emu: 'test' })
  })

  it('show --json has the manifest with its regions and blobs', () => {
    const r = ckpt(['show', '--store', store, `vm1@${V1}`, '--json'])
    expect(r.status, r.stderr).toBe(0)
    const m = JSON.parse(r.stdout)
    expect(m.cid).toBe(cids[0])
    expect(m.timeline).toBe('vm1')
    expect(m.vtime).toBe(String(V1))
    expect(new Date(m.wall).toISOString()).toBe(m.wall)
    expect(m.parent).toBeNull()
    expect(m.meta.label).toBe('boot')
    expect(m.regions.ram).toMatchObject({ size: 1 << 20, chunkSize: PAGE })
    expect(m.regions.disk).toMatchObject({ size: 2 << 20, chunkSize: CLUSTER })
    expect(m.regions.ram.root).toMatch(/^b[a-z2-7]+$/)
    expect(m.blobs.cpu).toEqual({ size: data.cpu1!.length, chunks: 1 })

    const latest = JSON.parse(ckpt(['show', '--store', store, 'vm1', '--json']).stdout)
    expect(latest.cid).toBe(cids[1])
    expect(latest.parent).toBe(cids[0])

    const text = ckpt(['show', '--store', store, cids[1]!])
    expect(text.status).toBe(0)
    expect(text.stdout).toContain('ram')
    expect(text.stdout).toContain(cids[0]) // the parent
  })

  it('seek finds the nearest checkpoint at or before a vtime', () => {
    const between = ckpt(['seek', '--store', store, '--timeline', 'vm1', '--vtime', String((V1 + V2) / 2)])
    expect(between.status, between.stderr).toBe(0)
    expect(between.stdout.trim()).toBe(`vm1@${V1} ${cids[0]}`)
    const exact = ckpt(['seek', '--store', store, '--timeline', 'vm1', '--vtime', String(V1), '--json'])
    expect(JSON.parse(exact.stdout)).toEqual({ timeline: 'vm1', vtime: String(V1), cid: cids[0] })
    const after = ckpt(['seek', '--store', store, '--timeline', 'vm1', '--vtime', String(V2 + 1)])
    expect(after.stdout.trim()).toBe(`vm1@${V2} ${cids[1]}`)
    const before = ckpt(['seek', '--store', store, '--timeline', 'vm1', '--vtime', String(V1 - 1), '--json'])
    expectError(before, 1, 'CKPT_NOT_FOUND')
    expect(JSON.parse(before.stdout).error.code).toBe('CKPT_NOT_FOUND')
  })

  it('restore gives back exactly the files added', () => {
    const cases: [string, string, Buffer][] = [
      [`vm1@${V1}`, 'ram', data.ram1!],
      [cids[0]!, 'disk', data.disk1!],
      [`vm1@${V2}`, 'ram', data.ram2!],
      [cids[1]!, 'disk', data.disk2!],
      ['vm1', 'ram', data.ram2!], // TIMELINE: the latest
    ]
    for (const [k, [ref, region, want]] of cases.entries()) {
      const out = path.join(tmp, `restored-${k}.bin`)
      const r = ckpt(['restore', '--store', store, ref, '--region', region, '--out', out])
      expect(r.status, r.stderr).toBe(0)
      expect(fs.readFileSync(out).equals(want), `${ref} ${region}`).toBe(true)
    }
    const j = ckpt(['restore', '--store', store, `vm1@${V1}`, '--region', 'ram', '--out', path.join(tmp, 'r.bin'), '--json'])
    expect(JSON.parse(j.stdout)).toMatchObject({ cid: cids[0], region: 'ram', size: 1 << 20, chunksWritten: 11 })
  })

  it('restore --all writes every region and blob of a checkpoint into a directory', () => {
    const out = path.join(tmp, 'all-v1')
    const r = ckpt(['restore', '--store', store, `vm1@${V1}`, '--all', '--out', out, '--json'])
    expect(r.status, r.stderr).toBe(0)
    expect(fs.readdirSync(out).sort()).toEqual(['cpu', 'disk', 'ram'])
    expect(fs.readFileSync(path.join(out, 'ram')).equals(data.ram1!)).toBe(true)
    expect(fs.readFileSync(path.join(out, 'disk')).equals(data.disk1!)).toBe(true)
    expect(fs.readFileSync(path.join(out, 'cpu')).equals(data.cpu1!)).toBe(true)
    const j = JSON.parse(r.stdout)
    expect(j.cid).toBe(cids[0])
    expect(j.files.map((f: { kind: string; name: string }) => `${f.kind}:${f.name}`).sort()).toEqual(['blob:cpu', 'region:disk', 'region:ram'])
    for (const bad of [['--all', '--region', 'ram', '--out', out], ['--all', '--out', '-']]) {
      const u = ckpt(['restore', '--store', store, 'vm1', ...bad])
      expect(u.status, bad.join(' ')).toBe(2)
      expect(u.stderr).toMatch(/^ckpt: usage: /)
    }
  })

  it('restore to stdout, and of blobs', () => {
    const r = ckpt(['restore', '--store', store, `vm1@${V1}`, '--region', 'ram', '--out', '-'])
    expect(r.status, r.stderr).toBe(0)
    expect(r.raw.equals(data.ram1!)).toBe(true)
    const b1 = ckpt(['restore', '--store', store, `vm1@${V1}`, '--blob', 'cpu', '--out', '-'])
    expect(b1.raw.equals(data.cpu1!)).toBe(true)
    const out = path.join(tmp, 'cpu.out')
    const b2 = ckpt(['restore', '--store', store, 'vm1', '--blob', 'cpu', '--out', out])
    expect(b2.status, b2.stderr).toBe(0)
    expect(fs.readFileSync(out).equals(data.cpu2!)).toBe(true)
    expectError(ckpt(['restore', '--store', store, 'vm1', '--region', 'nope', '--out', '-']), 1, 'CKPT_UNKNOWN_REGION')
    expectError(ckpt(['restore', '--store', store, 'vm1', '--blob', 'nope', '--out', '-']), 1, 'CKPT_NOT_FOUND')
  })

  it('diff lists exactly the changed chunk ranges and the blob', () => {
    const r = ckpt(['diff', '--store', store, `vm1@${V1}`, 'vm1'])
    expect(r.status, r.stderr).toBe(0)
    expect(r.stdout.trim().split('\n').sort()).toEqual(
      [
        'ram: chunks 10-12 changed (3 x 4096 B)',
        'ram: chunk 100 changed (1 x 4096 B)',
        'ram: chunk 150 changed (1 x 4096 B)',
        'disk: chunk 3 changed (1 x 65536 B)',
        'disk: chunk 20 changed (1 x 65536 B)',
        'blob cpu changed',
      ].sort(),
    )
    const j = jsonLines(ckpt(['diff', '--store', store, cids[0]!, cids[1]!, '--json']).stdout)
    const key = (e: any) => JSON.stringify(e)
    expect(j.map(key).sort()).toEqual(
      [
        { kind: 'chunks', region: 'ram', start: 10, end: 13, chunkSize: PAGE },
        { kind: 'chunks', region: 'ram', start: 100, end: 101, chunkSize: PAGE },
        { kind: 'chunks', region: 'ram', start: 150, end: 151, chunkSize: PAGE },
        { kind: 'chunks', region: 'disk', start: 3, end: 4, chunkSize: CLUSTER },
        { kind: 'chunks', region: 'disk', start: 20, end: 21, chunkSize: CLUSTER },
        { kind: 'blob-changed', blob: 'cpu' },
      ]
        .map(key)
        .sort(),
    )
    const same = ckpt(['diff', '--store', store, 'vm1', cids[1]!])
    expect(same.status).toBe(0)
    expect(same.stdout).toBe('')
  })

  it('stats --json counts the checkpoints and the logical bytes', () => {
    const r = ckpt(['stats', '--store', store, '--json'])
    expect(r.status, r.stderr).toBe(0)
    const s = JSON.parse(r.stdout)
    expect(s.checkpoints).toBe(2)
    expect(s.timelines).toBe(1)
    expect(s.logicalBytes).toBe(2 * (3 << 20) + data.cpu1!.length + data.cpu2!.length)
    expect(s.storedBytes).toBe(s.packBytes + s.indexBytes)
    expect(s.dedupRatio).toBeCloseTo(s.logicalBytes / s.packBytes)
    expect(s.dedupRatio).toBeGreaterThan(1)
    const t = ckpt(['stats', '--store', store])
    expect(t.status).toBe(0)
    expect(t.stdout).toMatch(/checkpoints\s+2/)
  })

  it('CKPT_STORE stands in for --store', () => {
    const r = ckpt(['log'], { CKPT_STORE: store })
    expect(r.status, r.stderr).toBe(0)
    expect(r.stdout.trim().split('\n')).toHaveLength(2)
  })

  it('takes chunk sizes from REGION=FILE:CHUNKSIZE on a new timeline', () => {
    const s2 = path.join(tmp, 'store2')
    const a = ckpt(['add', '--store', s2, '--timeline', 't', '--vtime', '0', `disk=${files.disk1}:16k`, `memory=${files.ram1}`])
    expect(a.status, a.stderr).toBe(0)
    const m = JSON.parse(ckpt(['show', '--store', s2, 't', '--json']).stdout)
    expect(m.regions.disk.chunkSize).toBe(16384)
    expect(m.regions.memory.chunkSize).toBe(PAGE)
    // later adds use the timeline's regions
    expectError(ckpt(['add', '--store', s2, '--timeline', 't', '--vtime', '1', `rom=${files.ram1}`]), 1, 'CKPT_UNKNOWN_REGION')
    expectError(ckpt(['add', '--store', s2, '--timeline', 't', '--vtime', '1', `disk=${files.disk1}:4k`]), 1, 'CKPT_TIMELINE_CONFIG')
    const b = ckpt(['add', '--store', s2, '--timeline', 't', '--vtime', '1', `disk=${files.disk2}`])
    expect(b.status, b.stderr).toBe(0)
    const out = path.join(tmp, 'mem.bin')
    expect(ckpt(['restore', '--store', s2, 't', '--region', 'memory', '--out', out]).status).toBe(0)
    expect(fs.readFileSync(out).equals(data.ram1!)).toBe(true) // a region not given keeps its content
  })

  describe('exit statuses', () => {
    it('unknown command, unknown option, missing options and bad numbers are usage errors (2)', () => {
      const u = ckpt(['frobnicate', '--json'])
      expect(u.status).toBe(2)
      expect(u.stderr).toMatch(/^ckpt: usage: /)
      expect(JSON.parse(u.stdout).error.code).toBe('USAGE')
      expect(ckpt(['log', '--store', store, '--bogus']).status).toBe(2)
      expect(ckpt([]).status).toBe(2)
      const noStore = ckpt(['log'], { CKPT_STORE: undefined })
      expect(noStore.status).toBe(2)
      expect(noStore.stderr).toContain('--store')
      expect(ckpt(['seek', '--store', store, '--timeline', 'vm1']).status).toBe(2)
      expect(ckpt(['seek', '--store', store, '--timeline', 'vm1', '--vtime', '-5']).status).toBe(2)
      expect(ckpt(['seek', '--store', store, '--timeline', 'vm1', '--vtime', '12x']).status).toBe(2)
      expect(ckpt(['add', '--store', store, '--timeline', 'vm1', '--vtime', '3000', `ram=${files.ram2}:4q`]).status).toBe(2)
      expect(ckpt(['restore', '--store', store, 'vm1', '--out', '-']).status).toBe(2) // neither --region nor --blob
      // CKPT_BAD_ARGUMENT from the library is a usage error too
      expectError(ckpt(['add', '--store', path.join(tmp, 'store3'), '--timeline', 'bad name', '--vtime', '1', `ram=${files.ram1}`]), 2, 'CKPT_BAD_ARGUMENT')
      expectError(ckpt(['add', '--store', path.join(tmp, 'store3'), '--timeline', 't', '--vtime', '1', `ram=${files.ram1}:3000`]), 2, 'CKPT_BAD_ARGUMENT')
    })

    it('vtime going backwards is a data error (1)', () => {
      const r = ckpt(['add', '--store', store, '--timeline', 'vm1', '--vtime', String(V1 + 1), `ram=${files.ram2}`, '--json'])
      expectError(r, 1, 'CKPT_VTIME_ORDER')
      expect(JSON.parse(r.stdout)).toMatchObject({ error: { code: 'CKPT_VTIME_ORDER' } })
      expect(jsonLines(ckpt(['log', '--store', store, '--json']).stdout)).toHaveLength(2) // nothing was stored
    })

    it('a reference that matches nothing is a data error (1)', () => {
      expectError(ckpt(['show', '--store', store, 'vm1@5']), 1, 'CKPT_NOT_FOUND')
      expectError(ckpt(['show', '--store', store, 'nosuchtimeline']), 1, 'CKPT_NOT_FOUND')
      expectError(ckpt(['restore', '--store', store, 'vm2', '--region', 'ram', '--out', path.join(tmp, 'x.bin')]), 1, 'CKPT_NOT_FOUND')
      expectError(ckpt(['diff', '--store', store, 'vm1', 'vm1@1']), 1, 'CKPT_NOT_FOUND')
    })

    it('a missing store is not created by commands that only read (3)', () => {
      const missing = path.join(tmp, 'no-such-store')
      expectError(ckpt(['restore', '--store', missing, 'vm1', '--region', 'ram', '--out', path.join(tmp, 'y.bin')]), 3, 'CKPT_BAD_STORE')
      for (const cmd of [['log'], ['show', 'vm1'], ['seek', '--timeline', 'vm1', '--vtime', '1'], ['diff', 'a', 'b'], ['stats']]) {
        expectError(ckpt([cmd[0]!, '--store', missing, ...cmd.slice(1)]), 3, 'CKPT_BAD_STORE')
      }
      expect(fs.existsSync(missing)).toBe(false)
    })

    it('a store locked by another process cannot be opened (3)', async () => {
      const held = await openStore(store, { threads: 0 })
      try {
        const r = ckpt(['log', '--store', store, '--json'])
        expectError(r, 3, 'CKPT_LOCKED')
        expect(JSON.parse(r.stdout).error.code).toBe('CKPT_LOCKED')
        expectError(ckpt(['add', '--store', store, '--timeline', 'vm1', '--vtime', '9999', `ram=${files.ram1}`]), 3, 'CKPT_LOCKED')
      } finally {
        await held.close()
      }
      expect(ckpt(['log', '--store', store]).status).toBe(0) // released
    })
  })

  describe('export and import', () => {
    it('export --out FILE, import FILE: the checkpoints arrive; a second import is a no-op', () => {
      const car = path.join(tmp, 'vm1.car')
      const e = ckpt(['export', '--store', store, 'vm1', `vm1@${V1}`, '--out', car, '--json'])
      expect(e.status, e.stderr).toBe(0)
      const ej = JSON.parse(e.stdout)
      expect(ej.checkpoints).toBe(2)
      expect(ej.fileBytes).toBe(fs.statSync(car).size)
      expect(fs.readdirSync(tmp).filter((f) => f.includes('ckpt-partial'))).toEqual([])
      const dst = path.join(tmp, 'imported')
      const i = ckpt(['import', '--store', dst, car, '--json'])
      expect(i.status, i.stderr).toBe(0)
      expect(JSON.parse(i.stdout).checkpoints).toBe(2)
      const again = ckpt(['import', '--store', dst, car])
      expect(again.status).toBe(0)
      expect(again.stdout).toContain('imported nothing new')
      expect(ckpt(['log', '--store', dst]).stdout).toBe(ckpt(['log', '--store', store]).stdout.split('\n').filter((l) => l.startsWith('vm1@')).join('\n') + '\n')
      const out = path.join(tmp, 'ram-from-import')
      const ref = path.join(tmp, 'ram-from-source')
      expect(ckpt(['restore', '--store', dst, 'vm1', '--region', 'ram', '--out', out]).status).toBe(0)
      expect(ckpt(['restore', '--store', store, 'vm1', '--region', 'ram', '--out', ref]).status).toBe(0)
      expect(fs.readFileSync(out).equals(fs.readFileSync(ref))).toBe(true)
    })

    it('export --out - | import - (a pipe, compressed) and bad input by error code', () => {
      const dst = path.join(tmp, 'piped')
      const sh = spawnSync('/bin/sh', ['-c', `"${process.execPath}" "${CLI}" export --store "${store}" vm1 --compress --out - | "${process.execPath}" "${CLI}" import --store "${dst}" - --json`])
      expect(sh.status, sh.stderr.toString()).toBe(0)
      expect(JSON.parse(sh.stdout.toString()).checkpoints).toBe(1)
      const garbage = path.join(tmp, 'garbage.car')
      fs.writeFileSync(garbage, randomBytes(3000))
      expectError(ckpt(['import', '--store', dst, garbage]), 1, 'CKPT_BAD_BUNDLE')
      expectError(ckpt(['import', '--store', dst, path.join(tmp, 'missing.car')]), 1, 'CKPT_NOT_FOUND')
      for (const args of [['export', '--store', store, 'vm1'], ['export', '--store', store, '--out', path.join(tmp, 'x.car')]]) {
        const r = ckpt(args)
        expect(r.status).toBe(2)
        expect(r.stderr).toContain('ckpt: usage:')
      }
      expectError(ckpt(['export', '--store', store, 'no-such-timeline', '--out', path.join(tmp, 'x.car')]), 1, 'CKPT_NOT_FOUND')
      expect(fs.existsSync(path.join(tmp, 'x.car'))).toBe(false)
      expect(ckpt(['import', '--store', dst, garbage, '--as', 'a', '--timeline-prefix', 'b']).status).toBe(2)
    })
  })

  describe('help and version', () => {
    const commands = ['init', 'add', 'log', 'show', 'seek', 'restore', 'diff', 'stats', 'export', 'import']

    it('ckpt --help and ckpt help list every command', () => {
      for (const args of [['--help'], ['help']]) {
        const r = ckpt(args)
        expect(r.status).toBe(0)
        for (const c of commands) expect(r.stdout).toMatch(new RegExp(`^  ${c}\\b`, 'm'))
      }
    })

    it('every command has --help with usage and examples', () => {
      for (const c of commands) {
        const r = ckpt([c, '--help'])
        expect(r.status, c).toBe(0)
        expect(r.stdout).toContain(`usage: ckpt ${c}`)
        expect(r.stdout).toContain('examples:')
        expect(ckpt(['help', c]).stdout).toBe(r.stdout)
      }
    })

    it('--version prints the package version', () => {
      const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'))
      const r = ckpt(['--version'])
      expect(r.status).toBe(0)
      expect(r.stdout.trim()).toBe(pkg.version)
    })
  })
})
