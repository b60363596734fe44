/**
 * The shape the code keeps (scripts/code-shape.mjs): no function over 100 lines and no source file
 * over 700 outside tests, src/ reaching store/ only through store/index.ts, nothing importing upward
 * (codecs/ ← store/ ← src/), no import circle and no dynamic import to dodge one.
 */
import { spawnSync } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

const script = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../scripts/code-shape.mjs')
const run = (...args: string[]) => spawnSync(process.execPath, [script, ...args], { encoding: 'utf8' })

describe('code shape', () => {
  it('holds: no breach', () => {
    const r = run()
    expect(r.stdout).toBe('the code keeps its shape\n')
    expect(r.status).toBe(0)
  })

  it('the checker reports breaches when there are some (limits lowered)', () => {
    const r = run('--max-fn', '20', '--max-file', '200')
    expect(r.status).toBe(1)
    expect(r.stdout).toMatch(/^function \S+:\d+ \S+: \d+ lines \(at most 20\)$/m)
    expect(r.stdout).toMatch(/^file \S+: \d+ lines \(at most 200\)$/m)
  })
})
