/**
 * The project's peer harness (bench/peers): the synthetic series is deterministic and sparse, and the
 * runner measures a tiny series with ckpt (the compiled CLI, dist/cli/ckpt.js) and zstd end to end.
 */
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'
import { parseArgs, runSeries } from '../../bench/peers/run.js'
import { PAGE, SyntheticSeries, specOf } from '../../bench/peers/synth.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
// a small, fixed corpus of real files (the default, /usr/lib, changes with the installed packages)
const corpusRoot = path.join(ROOT, 'node_modules/typescript/lib')
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ckpt-peers-test-'))
afterAll(() => { if (!process.env.PEERS_KEEP) fs.rmSync(tmp, { recursive: true, force: true }) })

function writeSeries(seed: number, dir: string): SyntheticSeries {
  const s = new SyntheticSeries(specOf('tiny', { seed, corpusRoot }))
  for (let i = 0; i < s.spec.count; i++) {
    s.seek(i)
    s.write(path.join(dir, SyntheticSeries.checkpointName(i)))
  }
  s.close()
  return s
}

describe('synthetic series', () => {
  it('is the same bytes for the same seed, other bytes for another, with holes where blocks are zero', () => {
    const a = path.join(tmp, 'a')
    const b = path.join(tmp, 'b')
    const c = path.join(tmp, 'c')
    const sa = writeSeries(7, a)
    writeSeries(7, b)
    writeSeries(8, c)
    const names = fs.readdirSync(a).sort()
    expect(names).toEqual(['ckpt-0000', 'ckpt-0001', 'ckpt-0002'])
    for (const n of names) {
      for (const f of ['disk.raw', 'ram.bin']) {
        const x = fs.readFileSync(path.join(a, n, f))
        expect(x.length).toBe(1 << 20)
        expect(x.equals(fs.readFileSync(path.join(b, n, f)))).toBe(true)
        expect(x.equals(fs.readFileSync(path.join(c, n, f)))).toBe(false)
        // every all-zero 4 KiB block is a hole: the file holds no more blocks than its non-zero data
        let nonzero = 0
        for (let o = 0; o < x.length; o += PAGE) if (x.subarray(o, o + PAGE).some((v) => v !== 0)) nonzero++
        expect(nonzero).toBeGreaterThan(0)
        expect(nonzero).toBeLessThan(x.length / PAGE)
        expect(fs.statSync(path.join(a, n, f)).blocks * 512).toBeLessThanOrEqual(nonzero * PAGE + 2 * PAGE)
      }
    }
    // each step writes its pages and clusters; the first checkpoint is a fill, not a step
    expect(sa.distinctWrites.length).toBe(3)
    expect(sa.distinctWrites[1]!['ram.bin']).toBeGreaterThan(0)
    expect(sa.distinctWrites[1]!['ram.bin']).toBeLessThanOrEqual(20)
    const x0 = fs.readFileSync(path.join(a, 'ckpt-0000', 'ram.bin'))
    const x1 = fs.readFileSync(path.join(a, 'ckpt-0001', 'ram.bin'))
    let changed = 0
    for (let o = 0; o < x0.length; o += PAGE) if (!x0.subarray(o, o + PAGE).equals(x1.subarray(o, o + PAGE))) changed++
    expect(changed).toBeGreaterThan(0)
    expect(changed).toBeLessThanOrEqual(20)
  })
})

describe('runner', () => {
  it('measures ckpt and zstd on a tiny series, each restore byte-identical and verified', () => {
    const out = path.join(tmp, 'res', 'peers-tiny.tsv')
    const rows = runSeries({
      series: specOf('tiny', { corpusRoot }),
      tools: ['ideal', 'ckpt', 'zstd'],
      out,
      work: path.join(tmp, 'work'),
      stage: path.join(tmp, 'stage'),
      log: () => {},
    })
    const by = (t: string) => rows.find((r) => r.tool === t)!
    const zstdInstalled = spawnSync('bash', ['-c', 'command -v zstd'], { stdio: 'ignore' }).status === 0
    for (const t of zstdInstalled ? ['ckpt', 'zstd'] : ['ckpt']) {
      const log = path.join(tmp, 'work', 'logs', `${t}.log`)
      expect(by(t), fs.existsSync(log) ? fs.readFileSync(log, 'utf8') : '').toMatchObject({ checkpoints: '3', restore_ok: 'yes', verify_ok: 'yes', note: '-' })
      expect(Number(by(t).repo_bytes)).toBeGreaterThan(0)
    }
    if (!zstdInstalled) expect(by('zstd').note).toMatch(/^skipped: not installed \(apt-get install -y zstd\)/)
    // ckpt stores close to the lower bound; zstd without dedup stores more
    expect(Number(by('ckpt').repo_bytes)).toBeLessThan(1.3 * Number(by('ideal').repo_bytes))
    const tsv = fs.readFileSync(out, 'utf8').trim().split('\n')
    expect(tsv[0]!.split('\t')[0]).toBe('tool')
    expect(tsv.length).toBe(4)
    expect(fs.readFileSync(out.replace(/\.tsv$/, '.ingest.tsv'), 'utf8').trim().split('\n').length).toBe(1 + 3 * 3)
    expect(fs.existsSync(path.join(tmp, 'work', 'ckpt'))).toBe(false)
  })

  it('skips a tool that is not installed, with the line that installs it', () => {
    const path0 = process.env.PATH
    const lines: string[] = []
    process.env.PATH = path.join(tmp, 'no-such-bin')
    try {
      const rows = runSeries({ series: specOf('tiny', { corpusRoot }), tools: ['zstd'], out: path.join(tmp, 'res', 'skip.tsv'), work: path.join(tmp, 'work'), stage: path.join(tmp, 'stage'), log: (l) => lines.push(l) })
      expect(rows).toHaveLength(1)
      expect(rows[0]).toMatchObject({ tool: 'zstd', restore_ok: 'NA', note: 'skipped: not installed (apt-get install -y zstd)' })
      expect(lines.join('\n')).toMatch(/zstd: skipped, zstd not found; install with: apt-get install -y zstd/)
    } finally {
      process.env.PATH = path0
    }
  })

  it('refuses a bad command line (exit 2 in the program)', () => {
    expect(parseArgs(['--series', 'nope', '--out', 'x.tsv'])).toBeUndefined()
    expect(parseArgs(['--series', 'small'])).toBeUndefined()
    expect(parseArgs(['--series', 'small', '--out', 'x.tsv', '--tools', 'ckpt bogus'])).toBeUndefined()
    expect(parseArgs(['--series', 'small', '--out', 'x.tsv', '--tools', 'ckpt zstd'])?.tools).toEqual(['ckpt', 'zstd'])
    expect(parseArgs(['--series', 'default', '--out', 'x.tsv'])?.tools).toContain('zstd-countonly')
  })
})
