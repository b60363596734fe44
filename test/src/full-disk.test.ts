/**
 * A real full disk: a small tmpfs (mounting needs root; skipped with a message elsewhere). Checkpoints
 * of incompressible data fill it; the failing one gets CKPT_NO_SPACE, the store reopens, and every
 * acknowledged checkpoint still restores byte-identical.
 */
import { execFileSync } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openStore, type CkptError } from '../../src/index.js'
import { mountTmpfs, unmountTmpfs } from '../helpers/tmpfs.js'

let mnt = ''
let mounted = false
beforeAll(() => {
  const m = mountTmpfs('12m', 'ckpt-fullfs-')
  if (m) {
    mnt = m
    mounted = true
  } else console.warn('full-disk test skipped: cannot mount a tmpfs (needs root)')
})
afterAll(() => {
  if (mounted) unmountTmpfs(mnt)
})

describe('full disk', () => {
  it('fails the checkpoint that does not fit with CKPT_NO_SPACE and keeps every acknowledged one', async (ctx) => {
    if (!mounted) return ctx.skip()
    const dir = path.join(mnt, 'store')
    const size = 1 << 20
    let store = await openStore(dir, { threads: 0 })
    const tl = await store.timeline('t', { regions: { ram: { size } } })
    const acked: { cid: string; data: Buffer }[] = []
    let failure: CkptError | undefined
    let failedData: Buffer | undefined
    for (let k = 0; k < 40 && !failure; k++) {
      const data = crypto.randomBytes(size) // incompressible: ~1 MiB stored per checkpoint
      try {
        const ck = await tl.checkpoint({ vtime: k, regions: { ram: { data } } })
        acked.push({ cid: ck.cid.toString(), data })
      } catch (err) {
        failure = err as CkptError
        failedData = data
      }
    }
    expect(failure?.code).toBe('CKPT_NO_SPACE')
    expect(acked.length).toBeGreaterThan(3)
    // The failed checkpoint's chunks stay in the "already stored?" filter though they were dropped: a
    // later dirty-hint checkpoint of that content must find them absent and store them after all.
    execFileSync('mount', ['-o', 'remount,size=24m', mnt])
    const lost = failedData!
    const t2 = await store.timeline('t2', { regions: { ram: { size } } })
    await t2.checkpoint({ vtime: 0, regions: { ram: { data: Buffer.alloc(size) } } })
    const again = await t2.checkpoint({ vtime: 1, regions: { ram: { data: lost, dirty: Array.from({ length: size / 4096 }, (_, i) => i) } } })
    expect(again.stats.newChunks).toBe(size / 4096)
    acked.push({ cid: again.cid.toString(), data: lost })
    await store.close()
    store = await openStore(dir, { threads: 0 })
    try {
      expect((await store.stats()).checkpoints).toBe(acked.length + 1) // and t2's zero checkpoint
      for (const a of acked) {
        const out = Buffer.alloc(size)
        await store.restore(a.cid, 'ram', out)
        expect(out.equals(a.data)).toBe(true)
      }
    } finally {
      await store.close()
    }
  })
})
