/**
 * `ckpt history` and `ckpt cat` end to end (the built CLI, dist/cli/ckpt.js, as a child process): a
 * timeline written through the library with a copy of every checkpoint's region kept here; history
 * (text and JSON lines, every option) against the library's answer, which test/src/history.test.ts
 * checks against brute force; cat's bytes against the copies, --hex against hexdump -C (when the
 * machine has it) or a formatter written here; every refusal with its exit status.
 */
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openStore, type HistoryEntry, type HistoryOptions, type HistorySelector } from '../../src/index.js'
import { collect } from '../helpers/bytes.js'
import { makeRng } from '../helpers/rng.js'
import { removeTmpDirs, tmpDir } from '../helpers/tmp.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const CLI = path.join(ROOT, 'dist/cli/ckpt.js')
const CHUNK = 512
const SIZE = 300 * CHUNK - 7
const N = 12

interface Run {
  status: number | null
  stdout: string
  stderr: string
  raw: Buffer
}

function ckpt(args: string[]): Run {
  const env = { ...process.env }
  delete env.CKPT_STORE
  const r = spawnSync(process.execPath, [CLI, ...args], { env, maxBuffer: 64 << 20 })
  if (r.error) throw r.error
  return { status: r.status, stdout: r.stdout.toString('utf8'), stderr: r.stderr.toString('utf8'), raw: r.stdout }
}

function ok(args: string[]): Run {
  const r = ckpt(args)
  expect(r.status, `ckpt ${args.join(' ')}: ${r.stderr}`).toBe(0)
  return r
}

let dir: string
let store: string
/** the region's content at each checkpoint, and the checkpoints' vtimes and CIDs */
const copies: Buffer[] = []
const vtimes: bigint[] = []
const cids: string[] = []
const cpu = Buffer.from('registers: eax=1 ebx=2\n')
/** the library's answers, computed before the store is closed */
const lib = new Map<string, HistoryEntry[]>()

const QUERIES: [string[], HistorySelector, HistoryOptions][] = [
  [['--chunk', '3'], 3, {}],
  [['--chunk', '3', '--exact'], 3, { exact: true }],
  [['--chunk', '256', '--reverse', '--limit', '3'], 256, { reverse: true, limit: 3 }],
  [['--offset', '0x5f0', '--length', '32'], { offset: 0x5f0, length: 32 }, {}],
  [['--offset', String(255 * CHUNK), '--length', '1k', '--after', '25', '--until', '85'], { offset: 255 * CHUNK, length: 1024 }, { after: 25n, until: 85n }],
  [['--offset', '0', '--length', String(SIZE), '--exact'], { offset: 0, length: SIZE }, { exact: true }],
]

beforeAll(async () => {
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` before the tests`)
  dir = tmpDir('ckpt-cli-history-')
  store = path.join(dir, 'store')
  const s = await openStore(store, { threads: 0 })
  const tl = await s.timeline('vm', { regions: { ram: { size: SIZE, chunkSize: CHUNK } } })
  const rng = makeRng(77)
  const ram = Buffer.alloc(SIZE)
  for (let k = 0; k < N; k++) {
    for (let d = 0; d < 6; d++) {
      const i = rng.pick([2, 3, 4, 255, 256, 257, rng.int(0, 300)])
      const len = Math.min(CHUNK, SIZE - i * CHUNK)
      if (rng.chance(0.25)) ram.fill(0, i * CHUNK, i * CHUNK + len)
      else ram.set(rng.bytes(len), i * CHUNK)
    }
    ram.write('hello, world: a page of text for the hexdump\n', CHUNK + 30)
    const vtime = BigInt(k * 10)
    const c = await tl.checkpoint({ vtime, regions: { ram: { data: ram } }, blobs: { cpu } })
    copies.push(Buffer.from(ram))
    vtimes.push(vtime)
    cids.push(c.cid.toString())
  }
  for (const [args, sel, opts] of QUERIES) lib.set(args.join(' '), await collect(s.history('vm', 'ram', sel, opts)))
  lib.set('first', [(await s.firstChange('vm', 'ram', 256, { after: 35n }))!])
  await s.close()
})

afterAll(removeTmpDirs)

describe('ckpt history', () => {
  it('--json: one line per entry, as the library yields them, for every option', () => {
    for (const [args] of QUERIES) {
      const r = ok(['history', '--store', store, 'vm', '--region', 'ram', ...args, '--json'])
      const lines = r.stdout.trimEnd().split('\n').map((l) => JSON.parse(l))
      const want = lib.get(args.join(' '))!
      expect(want.length).toBeGreaterThan(0)
      expect(lines, args.join(' ')).toEqual(
        want.map((e) => ({
          timeline: 'vm',
          vtime: e.vtime.toString(),
          cid: e.cid.toString(),
          previous: e.previous && { vtime: e.previous.vtime.toString(), cid: e.previous.cid.toString() },
          chunks: e.chunks.map((c) => ({ index: c.index, before: c.before?.toString() ?? null, after: c.after?.toString() ?? null })),
        })),
      )
    }
  })

  it('text: TIMELINE@VTIME CID, then each selected chunk and its new CID ((hole) for zeros); the first line says (first)', () => {
    const want = lib.get('--chunk 3 --exact')!
    const r = ok(['history', '--store', store, 'vm', '--region', 'ram', '--chunk', '3', '--exact'])
    const lines = r.stdout.trimEnd().split('\n')
    expect(lines).toHaveLength(want.length)
    want.forEach((e, k) => {
      const chunk = e.chunks[0]!
      expect(lines[k]).toBe(`vm@${e.vtime} ${e.cid} ${k === 0 ? '(first) ' : ''}chunk 3 ${chunk.after ? chunk.after.toString() : '(hole)'}`)
    })
    // a range of many chunks: eight listed, the rest counted
    const whole = ok(['history', '--store', store, 'vm', '--region', 'ram', '--offset', '0', '--length', String(SIZE), '--limit', '1']).stdout
    expect(whole).toMatch(/^vm@0 b[a-z2-7]+ \(first\) chunk 0 \S+, chunk 1 bafkr4i[a-z2-7]+, (chunk \d+ \S+, ){6}and 292 more\n$/)
  })

  it('--first: the first change after --after, or nothing', () => {
    const want = lib.get('first')![0]!
    const r = ok(['history', '--store', store, 'vm', '--region', 'ram', '--chunk', '256', '--first', '--after', '35', '--json'])
    expect(JSON.parse(r.stdout)).toMatchObject({ vtime: want.vtime.toString(), cid: want.cid.toString(), previous: { cid: want.previous!.cid.toString() } })
    expect(ok(['history', '--store', store, 'vm', '--region', 'ram', '--chunk', '256', '--first', '--after', '110']).stdout).toBe('')
  })

  it('refusals: exit 1 for data errors, 2 for usage errors, 3 for a store that cannot be opened', () => {
    const base = ['history', '--store', store, 'vm', '--region', 'ram']
    const cases: [string[], number, string][] = [
      [['history', '--store', store, 'nope', '--region', 'ram', '--chunk', '0'], 1, 'CKPT_NOT_FOUND'],
      [['history', '--store', store, 'vm', '--region', 'disk', '--chunk', '0'], 1, 'CKPT_UNKNOWN_REGION'],
      [[...base, '--chunk', '300'], 1, 'CKPT_OUT_OF_RANGE'],
      [[...base, '--offset', String(SIZE - 2), '--length', '3'], 1, 'CKPT_OUT_OF_RANGE'],
      [[...base, '--offset', '0', '--length', '0'], 2, 'CKPT_BAD_ARGUMENT'],
      [[...base, '--chunk', '1', '--after', '50', '--until', '40'], 2, 'CKPT_BAD_ARGUMENT'],
      [[...base, '--chunk', '1', '--offset', '0'], 2, 'usage'],
      [[...base], 2, 'usage'],
      [[...base, '--chunk', 'x'], 2, 'usage'],
      [[...base, '--chunk', '1', '--limit', '-3'], 2, 'usage'],
      [[...base, '--chunk', '1', '--first', '--reverse'], 2, 'usage'],
      [[...base, '--length', '4', '--chunk', '1'], 2, 'usage'],
      [['history', '--store', store, '--region', 'ram', '--chunk', '1'], 2, 'usage'],
      [['history', '--store', path.join(dir, 'none'), 'vm', '--region', 'ram', '--chunk', '1'], 3, 'CKPT_BAD_STORE'],
    ]
    for (const [args, status, code] of cases) {
      const r = ckpt(args)
      expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(status)
      expect(r.stderr).toContain(`ckpt: ${code}:`)
      expect(r.stdout).toBe('')
    }
  })
})

/** hexdump -C of bytes that start at offset `at`, written here (the reference when the machine has no hexdump). */
function hexdumpC(bytes: Buffer, at: number): string {
  let out = ''
  let last: string | undefined
  let star = false
  for (let k = 0; k < bytes.length; k += 16) {
    const row = bytes.subarray(k, k + 16)
    const key = row.toString('hex')
    if (row.length === 16 && key === last) {
      if (!star) out += '*\n'
      star = true
      continue
    }
    star = false
    last = row.length === 16 ? key : undefined
    const hex = [...row].map((b) => b.toString(16).padStart(2, '0'))
    const left = hex.slice(0, 8).join(' ').padEnd(23)
    const right = hex.slice(8).join(' ').padEnd(23)
    const text = [...row].map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.')).join('')
    out += `${(at + k).toString(16).padStart(8, '0')}  ${left}  ${right}  |${text}|\n`
  }
  return out + `${(at + bytes.length).toString(16).padStart(8, '0')}\n`
}

describe('ckpt cat', () => {
  it('writes the bytes of any range (within a chunk, across chunks and leaves, the short last chunk, the whole region) of any checkpoint', () => {
    const ranges: [number, number][] = [
      [0, 1],
      [2 * CHUNK + 30, 45],
      [3 * CHUNK - 5, 10],
      [255 * CHUNK + 100, 2 * CHUNK],
      [299 * CHUNK, SIZE - 299 * CHUNK],
      [0, SIZE],
    ]
    for (const k of [0, 5, N - 1]) {
      for (const [offset, length] of ranges) {
        const r = ok(['cat', '--store', store, `vm@${vtimes[k]}`, '--region', 'ram', '--offset', String(offset), '--length', String(length)])
        expect(r.raw.equals(copies[k]!.subarray(offset, offset + length)), `checkpoint ${k}, ${offset}+${length}`).toBe(true)
      }
    }
    // a CID as REF; 0x and k offsets; defaults: from 0, to the end
    expect(ok(['cat', '--store', store, cids[3]!, '--region', 'ram', '--offset', '0x200', '--length', '1k']).raw.equals(copies[3]!.subarray(512, 1536))).toBe(true)
    expect(ok(['cat', '--store', store, 'vm', '--region', 'ram', '--offset', '140k']).raw.equals(copies[N - 1]!.subarray(140 * 1024))).toBe(true)
    expect(ok(['cat', '--store', store, 'vm', '--region', 'ram']).raw.equals(copies[N - 1]!)).toBe(true)
    expect(ok(['cat', '--store', store, 'vm', '--blob', 'cpu']).raw.equals(cpu)).toBe(true)
    expect(ok(['cat', '--store', store, 'vm', '--blob', 'cpu', '--offset', '11', '--length', '5']).stdout).toBe('eax=1')
  })

  it('--hex: the format of hexdump -C (offsets in the region, repeated lines as *)', () => {
    const file = path.join(dir, 'copy.bin')
    fs.writeFileSync(file, copies[N - 1]!)
    const hasHexdump = spawnSync('hexdump', ['-C', '-n', '1', file]).status === 0
    for (const [offset, length] of [[2 * CHUNK + 30, 45], [0, 3 * CHUNK], [7, 1], [255 * CHUNK - 3, 700]] as [number, number][]) {
      const r = ok(['cat', '--store', store, 'vm', '--region', 'ram', '--offset', String(offset), '--length', String(length), '--hex'])
      const want = hasHexdump
        ? spawnSync('hexdump', ['-C', '-s', String(offset), '-n', String(length), file], { encoding: 'utf8' }).stdout
        : hexdumpC(copies[N - 1]!.subarray(offset, offset + length), offset)
      expect(r.stdout, `${offset}+${length}`).toBe(want)
      expect(r.stdout).toBe(hexdumpC(copies[N - 1]!.subarray(offset, offset + length), offset))
    }
    expect(ok(['cat', '--store', store, 'vm', '--region', 'ram', '--offset', String(CHUNK + 30), '--length', '16', '--hex']).stdout).toBe(
      `0000021e  68 65 6c 6c 6f 2c 20 77  6f 72 6c 64 3a 20 61 20  |hello, world: a |\n0000022e\n`,
    )
  })

  it('refusals: exit 1 for data errors, 2 for usage errors', () => {
    const cases: [string[], number, string][] = [
      [['cat', '--store', store, 'vm', '--region', 'ram', '--offset', String(SIZE), '--length', '1'], 1, 'CKPT_OUT_OF_RANGE'],
      [['cat', '--store', store, 'vm', '--region', 'ram', '--offset', String(SIZE + 1)], 1, 'CKPT_OUT_OF_RANGE'],
      [['cat', '--store', store, 'vm', '--blob', 'cpu', '--offset', '0', '--length', '100'], 1, 'CKPT_OUT_OF_RANGE'],
      [['cat', '--store', store, 'vm', '--region', 'disk', '--length', '1'], 1, 'CKPT_UNKNOWN_REGION'],
      [['cat', '--store', store, 'vm', '--blob', 'gpu'], 1, 'CKPT_NOT_FOUND'],
      [['cat', '--store', store, 'vm@x', '--region', 'ram'], 2, 'CKPT_BAD_ARGUMENT'],
      [['cat', '--store', store, 'nope', '--region', 'ram', '--length', '1'], 1, 'CKPT_NOT_FOUND'],
      [['cat', '--store', store, 'vm', '--region', 'ram', '--blob', 'cpu'], 2, 'usage'],
      [['cat', '--store', store, 'vm'], 2, 'usage'],
      [['cat', '--store', store, '--region', 'ram'], 2, 'usage'],
      [['cat', '--store', store, 'vm', '--region', 'ram', '--offset', '1x'], 2, 'usage'],
      [['cat', '--store', path.join(dir, 'none'), 'vm', '--region', 'ram'], 3, 'CKPT_BAD_STORE'],
    ]
    for (const [args, status, code] of cases) {
      const r = ckpt(args)
      expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(status)
      expect(r.stderr).toContain(`ckpt: ${code}`)
      expect(r.stdout).toBe('')
    }
  })
})
