/**
 * A region's fan-out (SPEC.md §3.1): new timelines take DEFAULT_FANOUT (1,024) or the one their region
 * config asks for; a timeline with a head keeps its head's, across processes, whatever the default.
 */
import { afterAll, describe, expect, it } from 'vitest'
import { DEFAULT_FANOUT, openStore } from '../../src/index.js'
import { makeRng } from '../helpers/rng.js'
import { caught, removeTmpDirs, tmpStorePath } from '../helpers/tmp.js'
import { runVerify } from '../helpers/verify.js'

afterAll(removeTmpDirs)

const PAGE = 4096
/** 2,500 pages: three leaves at 1,024, ten at 256 */
const SIZE = 2500 * PAGE

function image(seed: number): Buffer {
  const rng = makeRng(seed)
  const b = Buffer.alloc(SIZE)
  for (let p = 0; p < 2500; p++) if (rng.chance(0.7)) b.set(rng.bytes(PAGE), p * PAGE)
  return b
}

describe('fan-out', () => {
  it('a new timeline takes the default, 1,024', async () => {
    expect(DEFAULT_FANOUT).toBe(1024)
    const s = await openStore(tmpStorePath('ckpt-fanout-'))
    try {
      const tl = await s.timeline('t', { regions: { ram: { size: SIZE } } })
      const c = await tl.checkpoint({ vtime: 1, regions: { ram: { data: image(1) } } })
      expect((await s.manifest(c.cid)).regions.ram!.fanout).toBe(1024)
    } finally {
      await s.close()
    }
  })

  it('a timeline asked for 256 keeps it in later processes that do not ask, and reads back byte for byte', async () => {
    const dir = tmpStorePath('ckpt-fanout-')
    const a = image(2)
    const b = Buffer.from(a)
    for (const p of [3, 700, 1500, 2499]) b.fill(p & 255, p * PAGE, (p + 1) * PAGE)
    let s = await openStore(dir)
    const c0 = await (await s.timeline('t', { regions: { ram: { size: SIZE, fanout: 256 } } })).checkpoint({ vtime: 1, regions: { ram: { data: a } } })
    await s.close()
    s = await openStore(dir)
    try {
      const tl = await s.timeline('t')
      const c1 = await tl.checkpoint({ vtime: 2, regions: { ram: { data: b, dirty: [3, 700, 1500, 2499] } } })
      for (const c of [c0, c1]) expect((await s.manifest(c.cid)).regions.ram!.fanout).toBe(256)
      const out = Buffer.alloc(SIZE)
      await s.restore(c0.cid, 'ram', out)
      expect(out.equals(a)).toBe(true)
      await s.restore(c1.cid, 'ram', out)
      expect(out.equals(b)).toBe(true)
      expect((await runVerify(s, { deep: true })).summary.clean).toBe(true)
      // asking again for the shape it has is fine; another is refused
      await s.timeline('t', { regions: { ram: { size: SIZE, fanout: 256 } } })
    } finally {
      await s.close()
    }
    s = await openStore(dir)
    try {
      const err = await caught(() => s.timeline('t', { regions: { ram: { size: SIZE, fanout: 1024 } } }))
      expect(err.code).toBe('CKPT_TIMELINE_CONFIG')
      expect(err.details).toMatchObject({ timeline: 't', region: 'ram', fanout: 256 })
    } finally {
      await s.close()
    }
  })

  it('an open handle refuses another fan-out once it has a head, and takes one before', async () => {
    const s = await openStore(tmpStorePath('ckpt-fanout-'))
    try {
      await s.timeline('t', { regions: { ram: { size: SIZE } } })
      // no checkpoint yet: the last fan-out asked for is the one the first checkpoint takes
      const tl = await s.timeline('t', { regions: { ram: { size: SIZE, fanout: 64 } } })
      const c = await tl.checkpoint({ vtime: 1, regions: { ram: { data: image(3) } } })
      expect((await s.manifest(c.cid)).regions.ram!.fanout).toBe(64)
      expect((await caught(() => s.timeline('t', { regions: { ram: { size: SIZE, fanout: 1024 } } }))).code).toBe('CKPT_TIMELINE_CONFIG')
    } finally {
      await s.close()
    }
  })

  it('a fan-out outside 2..65,536 or not an integer is CKPT_BAD_ARGUMENT, and creates nothing', async () => {
    const s = await openStore(tmpStorePath('ckpt-fanout-'))
    try {
      for (const fanout of [0, 1, 65_537, 2.5, Number.NaN, '8' as unknown as number]) {
        const err = await caught(() => s.timeline(`bad`, { regions: { ram: { size: SIZE, fanout } } }))
        expect(err.code, String(fanout)).toBe('CKPT_BAD_ARGUMENT')
        expect(err.message).toMatch(/fan-out of region ram/)
      }
      expect(await s.listTimelines()).toEqual([])
      const tl = await s.timeline('edge', { regions: { lo: { size: 64 * PAGE, fanout: 2 }, hi: { size: 64 * PAGE, fanout: 65_536 } } })
      const c = await tl.checkpoint({ vtime: 1, regions: { lo: { data: Buffer.alloc(64 * PAGE, 1) }, hi: { data: Buffer.alloc(64 * PAGE, 2) } } })
      const m = await s.manifest(c.cid)
      expect([m.regions.lo!.fanout, m.regions.hi!.fanout]).toEqual([2, 65_536])
      const out = Buffer.alloc(64 * PAGE)
      await s.restore(c.cid, 'lo', out)
      expect(out.equals(Buffer.alloc(64 * PAGE, 1))).toBe(true)
    } finally {
      await s.close()
    }
  })
})
