/**
 * `ckpt add --policy`, `thin`, `rm`, `fork`, `ref` and `gc` end to end: the compiled CLI on a store in
 * a temporary directory; what each prints, and what the store holds afterwards.
 */
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { removeTmpDirs, tmpDir } from '../helpers/tmp.js'

afterAll(removeTmpDirs)

const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../dist/cli/ckpt.js')

function ckpt(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const env = { ...process.env }
  delete env.CKPT_STORE
  const r = spawnSync(process.execPath, [CLI, ...args], { env, encoding: 'utf8' })
  if (r.error) throw r.error
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

function ok(...args: string[]): string {
  const r = ckpt(...args)
  expect(r.status, `ckpt ${args.join(' ')}: ${r.stderr}`).toBe(0)
  return r.stdout
}

let dir: string
let store: string
const ram: Buffer[] = []

beforeAll(() => {
  dir = tmpDir('ckpt-cli-life-')
  store = path.join(dir, 's')
  const buf = randomBytes(256 << 10)
  for (let i = 0; i < 12; i++) {
    randomBytes(4096).copy(buf, (i * 5 % 64) * 4096)
    const f = path.join(dir, `ram${i}.bin`)
    fs.writeFileSync(f, buf)
    ram.push(Buffer.from(buf))
    // vtimes 0, 10, ..., 110; the policy keeps one per 30 beyond the last 20, and the newest 2
    ok('add', '--store', store, '--timeline', 'rec', '--vtime', String(i * 10), ...(i === 0 ? ['--policy', '30@inf,last=2'] : []), ...(i === 4 ? ['--label', 'boot'] : []), `ram=${f}`)
  }
}, 120_000)

const log = (tl?: string) =>
  ok('log', '--store', store, ...(tl ? ['--timeline', tl] : []), '--json')
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { timeline: string; vtime: string; cid: string })

describe('ckpt thin, rm, fork, ref, gc', () => {
  it('add --policy makes the timeline thin itself', () => {
    // kept: the oldest of each 30-bucket (0, 30, 60, 90), the label (40), the newest two (100, 110)
    expect(log('rec').map((e) => Number(e.vtime))).toEqual([0, 30, 40, 60, 90, 100, 110])
  })

  it('thin --dry-run says what would go and changes nothing; thin does it', () => {
    const before = log('rec')
    const dry = JSON.parse(ok('thin', '--store', store, '--timeline', 'rec', '--policy', 'last=3', '--dry-run', '--json'))
    expect(dry.dryRun).toBe(true)
    // the newest three stay, and the labelled one
    expect(dry.dropped.map((d: { vtime: string }) => Number(d.vtime))).toEqual([0, 30, 60])
    expect(log('rec')).toEqual(before)
    expect(ok('thin', '--store', store, '--timeline', 'rec', '--policy', 'last=3')).toMatch(/^kept 4, dropped 3 checkpoints of rec/)
    expect(log('rec').map((e) => Number(e.vtime))).toEqual([40, 90, 100, 110])
  })

  it('thin rejects a bad policy as a usage error, and a missing timeline', () => {
    const r = ckpt('thin', '--store', store, '--timeline', 'rec', '--policy', '10ms')
    expect(r.status).toBe(2)
    expect(r.stderr).toContain('retention policy')
    const m = ckpt('thin', '--store', store, '--timeline', 'nope', '--policy', 'last=1')
    expect(m.status).toBe(1)
    expect(m.stderr).toContain('CKPT_NOT_FOUND')
  })

  it('fork starts a timeline sharing its blocks; ref pins a checkpoint; rm refuses a pinned one', () => {
    const fork = JSON.parse(ok('fork', '--store', store, 'rec@100', '--timeline', 'whatif', '--json'))
    expect(fork).toMatchObject({ timeline: 'whatif', vtime: '100' })
    const out = path.join(dir, 'fork.bin')
    ok('restore', '--store', store, 'whatif', '--region', 'ram', '--out', out)
    expect(fs.readFileSync(out).equals(ram[10]!)).toBe(true)
    expect(ckpt('fork', '--store', store, 'rec@100', '--timeline', 'whatif').stderr).toContain('CKPT_TIMELINE_CONFLICT')
    ok('ref', '--store', store, 'keep', 'rec@40')
    expect(ok('ref', '--store', store)).toContain('keep ')
    const r = ckpt('rm', '--store', store, 'ref:keep')
    expect(r.status).toBe(1)
    expect(r.stderr).toContain('CKPT_PINNED')
  })

  it('rm removes checkpoints; gc reclaims their blocks and every live checkpoint still restores', () => {
    // rm takes exact vtimes, not the nearest before
    const near = ckpt('rm', '--store', store, 'rec@95')
    expect(near.status).toBe(1)
    expect(near.stderr).toContain('CKPT_NOT_FOUND')
    const gone = JSON.parse(ok('rm', '--store', store, 'rec@100', 'rec@90', '--json'))
    expect(gone.removed.map((e: { vtime: string }) => e.vtime)).toEqual(['100', '90'])
    expect(ckpt('rm', '--store', store).status).toBe(2)
    const dry = JSON.parse(ok('gc', '--store', store, '--dry-run', '--json'))
    expect(dry.dryRun).toBe(true)
    const s = JSON.parse(ok('gc', '--store', store, '--threshold', '100', '--json'))
    expect(s.deadBytes).toBeGreaterThan(0)
    expect(s.reclaimedBytes).toBeGreaterThan(0.9 * s.deadBytes)
    expect(s.bytesAfter).toBeLessThan(s.bytesBefore)
    expect(ok('gc', '--store', store)).toMatch(/reclaimed 0 B/)
    const live = log()
    expect(live.map((e) => `${e.timeline}@${e.vtime}`).sort()).toEqual(['rec@110', 'rec@40', 'whatif@100'])
    for (const [ref, i] of [['rec@40', 4], ['rec@110', 11], ['whatif', 10], ['ref:keep', 4]] as const) {
      const out = path.join(dir, 'out.bin')
      ok('restore', '--store', store, ref, '--region', 'ram', '--out', out)
      expect(fs.readFileSync(out).equals(ram[i]!), ref).toBe(true)
    }
    const v = ckpt('verify', '--store', store, '--deep')
    expect(v.status, v.stdout).toBe(0)
    expect(ckpt('gc', '--store', store, '--threshold', '150').status).toBe(2)
    expect(ok('ref', '--store', store, '--delete', 'keep')).toContain('deleted ref keep')
    expect(ckpt('ref', '--store', store, '--delete', 'keep').status).toBe(1)
  })
})
