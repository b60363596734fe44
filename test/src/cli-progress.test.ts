/**
 * The progress line of `ckpt` (src/cli/progress.ts): progressLine() from done/total to the line, and
 * when a Progress draws at all (a terminal, neither --json nor --quiet).
 */
import { describe, expect, it } from 'vitest'
import { Progress, progressLine } from '../../src/cli/progress.js'

const MiB = 1 << 20

describe('progressLine', () => {
  const base = { label: 'ckpt restore', phase: 'restoring region ram', elapsed: 2 }

  it('with a total: a bar, a percentage, done of total, the rate and the time left', () => {
    expect(progressLine({ ...base, done: 256 * MiB, total: 1024 * MiB })).toBe(
      'ckpt restore: restoring region ram [#####---------------] 25% 256 MiB of 1.00 GiB, 128 MiB/s, ETA 6.0s',
    )
    expect(progressLine({ ...base, done: 0, total: 100 })).toBe('ckpt restore: restoring region ram [--------------------] 0% 0 B of 100 B, 0 B/s, ETA ?s')
  })

  it('says 100% only when done reaches the total, and never more', () => {
    expect(progressLine({ ...base, done: 999, total: 1000 })).toContain('] 99% ')
    expect(progressLine({ ...base, done: 1000, total: 1000 })).toContain('[####################] 100% 1000 B of 1000 B')
    expect(progressLine({ ...base, done: 5000, total: 1000 })).toContain('[####################] 100% 1000 B of 1000 B')
  })

  it('the bar grows with done', () => {
    const bars = [0, 10, 50, 90, 100].map((d) => /\[([#-]+)\]/.exec(progressLine({ ...base, done: d, total: 100 }))![1]!)
    expect(bars.map((b) => b.length)).toEqual([20, 20, 20, 20, 20])
    expect(bars.map((b) => b.split('#').length - 1)).toEqual([0, 2, 10, 18, 20])
  })

  it('without a total: the amount and the rate; without an amount: the phase and the time', () => {
    expect(progressLine({ ...base, label: 'ckpt import', phase: '12 blocks', done: 3 * MiB })).toBe('ckpt import: 12 blocks 3.00 MiB, 1.50 MiB/s, 2.0s')
    expect(progressLine({ ...base, phase: 'opening the store' })).toBe('ckpt restore: opening the store 2.0s')
  })

  it('counts other units as numbers', () => {
    expect(progressLine({ ...base, label: 'ckpt gc', phase: 'rewriting packs', done: 3, total: 4, unit: 'packs' })).toBe(
      'ckpt gc: rewriting packs [###############-----] 75% 3 packs of 4 packs, 2 packs/s, ETA 0.7s',
    )
  })

  it('is cut to the width of the terminal', () => {
    const l = progressLine({ ...base, done: 5, total: 10, columns: 40 })
    expect(l).toHaveLength(39)
    expect(l).toBe('ckpt restore: restoring region ram [###')
  })
})

describe('Progress', () => {
  it('draws only on a terminal, and neither with --json nor with --quiet', () => {
    expect(Progress.wanted({}, { isTTY: true })).toBe(true)
    expect(Progress.wanted({ json: false, quiet: false }, { isTTY: true })).toBe(true)
    expect(Progress.wanted({ json: true }, { isTTY: true })).toBe(false)
    expect(Progress.wanted({ quiet: true }, { isTTY: true })).toBe(false)
    expect(Progress.wanted({}, { isTTY: false })).toBe(false)
    expect(Progress.wanted({}, {} as { isTTY: boolean })).toBe(false)
  })

  it('a disabled one writes nothing', () => {
    const written: string[] = []
    const stream = { isTTY: true, columns: 80, write: (s: string) => (written.push(s), true) } as unknown as NodeJS.WriteStream
    const p = new Progress('ckpt restore', false, stream)
    p.set('opening the store')
    p.amount('restoring region ram', 10, 100)
    p.end()
    expect(written).toEqual([])
  })
})
