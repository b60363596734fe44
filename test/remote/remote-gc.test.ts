/**
 * Remote upkeep: thinning a remote's timeline, gc under the lock with proposals and a margin, and a
 * push that runs between two gcs losing nothing.
 */
import { afterAll, describe, expect, it } from 'vitest'
import { randomBytes } from 'node:crypto'
import { pathToFileURL } from 'node:url'
import { openObjectStore, type ObjectStore } from '../../store/index.js'
import { openStore } from '../../src/index.js'
import { caught, removeTmpDirs, tmpDir, tmpStorePath } from '../helpers/tmp.js'
import { expectSame, record, REGIONS } from './remote-suite.js'

afterAll(removeTmpDirs)

const newRemote = () => pathToFileURL(tmpDir('ckpt-remote-gc-')).href + '/r'

async function packBytes(o: ObjectStore): Promise<{ n: number; bytes: number }> {
  let n = 0
  let bytes = 0
  for await (const x of o.list('packs/')) {
    n++
    bytes += x.size
  }
  return { n, bytes }
}

describe('remote gc', () => {
  it('thin then gc: the dropped checkpoints are gone from the remote and their space is reclaimed; the kept ones pull and restore', async () => {
    const url = newRemote()
    const a = await openStore(tmpStorePath('ckpt-rgc-a-'))
    const g = await openStore(tmpStorePath('ckpt-rgc-g-'))
    const b = await openStore(tmpStorePath('ckpt-rgc-b-'))
    const o = await openObjectStore(url)
    try {
      // every checkpoint rewrites half the RAM: most of each pack dies when its checkpoint goes
      const rec = await record(a, 'run', 2, 11)
      await a.push(url)
      const tl = rec.tl
      const ram = Buffer.from(rec.states.at(-1)!.ram)
      const states = [...rec.states]
      for (let k = 0; k < 4; k++) {
        for (let p = 0; p < 128; p++) ram.set(randomBytes(4096), p * 4096)
        const c = await tl.checkpoint({ vtime: BigInt(100 + k) * 1_000_000n, regions: { ram: { data: ram, dirty: Array.from({ length: 128 }, (_, p) => p) } } })
        states.push({ vtime: BigInt(100 + k) * 1_000_000n, cid: c.cid.toString(), ram: Buffer.from(ram), disk: states[0]!.disk })
        await a.push(url)
      }
      const before = await packBytes(o)
      const t = await g.thinRemote(url, 'run', 'last=2')
      expect(t.kept.map((c) => c.cid)).toEqual(states.slice(-2).map((s) => s.cid))
      expect(t.dropped).toHaveLength(4)
      const dry = await g.gcRemote(url, { margin: 0, dryRun: true })
      expect(dry.checkpoints).toBe(2)
      expect((await packBytes(o)).bytes).toBe(before.bytes)
      const s = await g.gcRemote(url, { margin: 0 })
      expect(s.checkpoints).toBe(2)
      expect(s.deleted.packs).toBeGreaterThan(0)
      const after = await packBytes(o)
      expect(after.bytes).toBeLessThan(before.bytes)
      expect(s.segments.after).toBe(1)
      // nothing proposed is left behind, and the lock is released
      const rest: string[] = []
      for await (const x of o.list('gc/')) rest.push(x.key)
      for await (const x of o.list('locks/')) rest.push(x.key)
      expect(rest).toEqual([])
      // the compacted remote verifies clean, block by block (node deltas and the nodes kept as their bases included)
      const it = g.verifyRemote(url, { deep: true })
      let v = await it.next()
      const findings: string[] = []
      while (!v.done) {
        findings.push(`${v.value.kind}: ${v.value.message}`)
        v = await it.next()
      }
      expect(findings.filter((f) => !f.startsWith('stray-object'))).toEqual([])
      const p = await b.pull(url)
      expect(p.timelines).toEqual([{ name: 'run', added: 2, present: 0 }])
      await expectSame(b, states.slice(-2))
      // a thinned checkpoint is never pushed again
      const again = await a.push(url)
      expect(again.timelines[0]).toMatchObject({ pushed: 0 })
      expect(again.blocks).toBe(0)
    } finally {
      await o.close()
      await a.close()
      await g.close()
      await b.close()
    }
  }, 120_000)

  it('a gc proposes and a later one deletes only what a fresh mark finds dead: a push between them keeps what it needs', async () => {
    const url = newRemote()
    const a = await openStore(tmpStorePath('ckpt-rgc-a-'))
    const g = await openStore(tmpStorePath('ckpt-rgc-g-'))
    const o = await openObjectStore(url)
    try {
      const rec = await record(a, 'run', 3, 12)
      await a.push(url)
      await g.thinRemote(url, 'run', 'last=1')
      const first = await g.gcRemote(url, { threshold: 1 })
      expect(first.deleted).toEqual({ packs: 0, segments: 0, catalogs: 0, bytes: 0 })
      expect(first.proposed.packs + first.proposed.segments).toBeGreaterThan(0)
      // meanwhile this store records a timeline with the very content of a thinned checkpoint (the same
      // seed): its blocks are on the remote, but only in packs the gc proposed to delete, so they go again
      const again = await record(a, 'again', 1, 12)
      expect(again.states[0]!.ram.equals(rec.states[0]!.ram)).toBe(true)
      const pushed = await a.push(url, ['again'])
      let differ = 0
      const last = rec.states.at(-1)!.ram
      const zero = Buffer.alloc(4096)
      for (let p = 0; p < REGIONS.ram.size / 4096; p++) {
        const mine = rec.states[0]!.ram.subarray(p * 4096, p * 4096 + 4096)
        // a zero page is a hole (no block); a random page that no later state has is a dead block
        if (!mine.equals(zero) && !rec.states.slice(1).some((st) => st.ram.subarray(p * 4096, p * 4096 + 4096).equals(mine))) differ++
      }
      expect(differ).toBeGreaterThan(10)
      // every page only the thinned checkpoint had is dead on the remote: it is sent again, with the nodes above it
      expect(pushed.blocks).toBeGreaterThan(differ)
      const b = await openStore(tmpStorePath('ckpt-rgc-b-'))
      const rec2 = await record(b, 'other', 2, 14)
      await b.push(url)
      const second = await g.gcRemote(url, { margin: 0 })
      expect(second.checkpoints).toBe(4)
      expect(second.deleted.packs + second.deleted.segments).toBeGreaterThan(0)
      const d = await openStore(tmpStorePath('ckpt-rgc-d-'))
      await d.pull(url)
      await expectSame(d, [rec.states.at(-1)!, ...again.states, ...rec2.states])
      await d.close()
      await b.close()
    } finally {
      await o.close()
      await a.close()
      await g.close()
    }
  }, 120_000)

  it('the lock: a held one is CKPT_REMOTE_LOCKED naming its holder, a stale one is taken over', async () => {
    const url = newRemote()
    const a = await openStore(tmpStorePath('ckpt-rgc-a-'))
    const o = await openObjectStore(url)
    try {
      await record(a, 'run', 1, 13)
      await a.push(url)
      await o.put('locks/gc', new TextEncoder().encode(JSON.stringify({ host: 'elsewhere', pid: 7, since: Date.now(), token: 'x' })))
      const e = await caught(() => a.gcRemote(url, { margin: 0 }))
      expect(e.code).toBe('CKPT_REMOTE_LOCKED')
      expect(e.details).toMatchObject({ holder: { host: 'elsewhere', pid: 7 } })
      await o.put('locks/gc', new TextEncoder().encode(JSON.stringify({ host: 'elsewhere', pid: 7, since: Date.now() - 31 * 60_000, token: 'x' })))
      const s = await a.gcRemote(url, { margin: 0 })
      expect(s.checkpoints).toBe(1)
      expect(await o.head('locks/gc')).toBeUndefined()
      expect(REGIONS.ram.size).toBeGreaterThan(0)
    } finally {
      await o.close()
      await a.close()
    }
  }, 60_000)
})

describe('remote refs', () => {
  it('push sends the refs naming pushed checkpoints; pull sets them; ref:NAME pulls its timeline up to it; thin --remote keeps what a ref names', async () => {
    const url = newRemote()
    const a = await openStore(tmpStorePath('ckpt-rref-a-'))
    const b = await openStore(tmpStorePath('ckpt-rref-b-'))
    const c = await openStore(tmpStorePath('ckpt-rref-c-'))
    try {
      const rec = await record(a, 'run', 4, 21)
      await a.setRef('crash', rec.states[1]!.cid)
      const s = await a.push(url)
      expect(s.refs).toEqual(['crash'])
      expect((await a.push(url)).refs).toEqual([])
      const p = await b.pull(url)
      expect(p.refs).toEqual(['crash'])
      expect((await b.resolve('ref:crash')).toString()).toBe(rec.states[1]!.cid)
      const q = await c.pull(url, ['ref:crash'])
      expect(q.timelines).toEqual([{ name: 'run', added: 2, present: 0 }])
      expect((await c.resolve('ref:crash')).toString()).toBe(rec.states[1]!.cid)
      const t = await a.thinRemote(url, 'run', 'last=1')
      expect(t.kept.map((x) => x.cid)).toEqual([rec.states[1]!.cid, rec.states[3]!.cid])
    } finally {
      await a.close()
      await b.close()
      await c.close()
    }
  }, 60_000)
})

describe('remote operations take an AbortSignal', () => {
  it('an aborted push or pull stops with the abort, leaves the remote valid, and the next one completes', async () => {
    const url = newRemote()
    const a = await openStore(tmpStorePath('ckpt-rabort-a-'))
    const b = await openStore(tmpStorePath('ckpt-rabort-b-'))
    try {
      const rec = await record(a, 'run', 3, 41)
      const phases: string[] = []
      const ac = new AbortController()
      const e = await caught(() =>
        a.push(url, undefined, {
          signal: ac.signal,
          onProgress: (p) => {
            phases.push(p.phase)
            if (p.phase === 'walk') ac.abort()
          },
        }),
      )
      expect(e.name).toBe('AbortError')
      expect(phases).toContain('walk')
      const s = await a.push(url)
      expect(s.timelines[0]).toMatchObject({ pushed: 3 })
      const pulled = new AbortController()
      pulled.abort()
      expect((await caught(() => b.pull(url, undefined, { signal: pulled.signal }))).name).toBe('AbortError')
      expect((await b.pull(url)).timelines[0]).toMatchObject({ added: 3 })
      await expectSame(b, rec.states)
    } finally {
      await a.close()
      await b.close()
    }
  }, 60_000)
})
