/**
 * The remote conformance suite (SPEC.md §22): push, pull (full and lazy), conflicts, thin pushes, and
 * damage on the remote, against one object store. test/remote/remote.test.ts runs it against a
 * directory (file://), s3rver, and a real S3 server when CKPT_TEST_S3_URL is set (CI's Ceph RADOS Gateway).
 */
import { describe, expect, it } from 'vitest'
import { exportBundle, importBundle, openStore, verifyStore, type CkptStore, type Timeline } from '../../src/index.js'
import { makeRng } from '../helpers/rng.js'
import { caught, tmpStorePath } from '../helpers/tmp.js'

export interface RemoteTarget {
  /** a fresh, empty remote URL for each call */
  url(): string
  env: Record<string, string | undefined>
  /** the server enforces create-only puts (If-None-Match), so racing pushers can be tested; s3rver does not */
  conditional?: boolean
  /** the object store of a URL, to count requests or damage objects */
  objects?(url: string): Promise<import('../../store/index.js').ObjectStore>
}

export const REGIONS = { ram: { size: 1 << 20, chunkSize: 4096 }, disk: { size: 2 << 20, chunkSize: 65536 } }

export interface Recorded {
  tl: Timeline
  states: { vtime: bigint; cid: string; ram: Buffer; disk: Buffer }[]
}

/** n checkpoints of a small machine: random RAM pages and disk clusters, then a few dirty ones each. */
export async function record(store: CkptStore, name: string, n: number, seed: number, startVtime = 0): Promise<Recorded> {
  const rng = makeRng(seed)
  const ram = Buffer.alloc(REGIONS.ram.size)
  const disk = Buffer.alloc(REGIONS.disk.size)
  for (let i = 0; i < ram.length; i += 4096) if (rng.chance(0.7)) ram.set(rng.bytes(4096), i)
  for (let i = 0; i < disk.length; i += 65536) if (rng.chance(0.5)) disk.set(rng.bytes(65536), i)
  const tl = await store.timeline(name, { regions: REGIONS })
  const states: Recorded['states'] = []
  for (let k = 0; k < n; k++) {
    const dirty: number[] = []
    if (k > 0) {
      for (let j = 0; j < 20; j++) {
        const p = rng.int(0, REGIONS.ram.size / 4096)
        ram.set(rng.bytes(4096), p * 4096)
        dirty.push(p)
      }
    }
    const vtime = BigInt(startVtime + k) * 1_000_000n
    const ck = await tl.checkpoint({ vtime, regions: { ram: k === 0 ? { data: ram } : { data: ram, dirty }, disk: k === 0 ? { data: disk } : { data: disk, dirty: [] } } })
    states.push({ vtime, cid: ck.cid.toString(), ram: Buffer.from(ram), disk: Buffer.from(disk) })
  }
  return { tl, states }
}

export async function expectSame(store: CkptStore, states: Recorded['states']): Promise<void> {
  const ram = Buffer.alloc(REGIONS.ram.size)
  const disk = Buffer.alloc(REGIONS.disk.size)
  for (const s of states) {
    await store.restore(s.cid, 'ram', ram)
    await store.restore(s.cid, 'disk', disk)
    expect(ram.equals(s.ram), `ram at ${s.vtime}`).toBe(true)
    expect(disk.equals(s.disk), `disk at ${s.vtime}`).toBe(true)
  }
}

async function log(store: CkptStore): Promise<string[]> {
  const out: string[] = []
  for await (const e of store.log()) out.push(`${e.timeline}@${e.vtime}=${e.cid}`)
  return out
}

export function runRemoteSuite(name: string, target: () => RemoteTarget | undefined, skip?: string): void {
  describe.skipIf(skip !== undefined)(`remote suite: ${name}${skip ? ` (skipped: ${skip})` : ''}`, () => {
    it('push, then a full pull elsewhere restores every checkpoint byte-identical', async () => {
      const t = target()!
      const url = t.url()
      const a = await openStore(tmpStorePath('ckpt-push-'))
      const b = await openStore(tmpStorePath('ckpt-pull-'))
      try {
        const rec = await record(a, 'run', 6, 1)
        const s = await a.push(url, undefined, { env: t.env })
        expect(s.conflicts).toEqual([])
        expect(s.timelines).toEqual([{ name: 'run', pushed: 6, present: 0 }])
        expect(s.packs).toBeGreaterThan(0)
        const p = await b.pull(url, undefined, { env: t.env })
        expect(p.timelines).toEqual([{ name: 'run', added: 6, present: 0 }])
        expect(p.blocks).toBeGreaterThan(0)
        expect(await log(b)).toEqual(await log(a))
        await expectSame(b, rec.states)
        // pushing again sends nothing; pulling again adds nothing
        const again = await a.push(url, undefined, { env: t.env })
        expect(again.blocks).toBe(0)
        expect(again.timelines[0]).toMatchObject({ pushed: 0, present: 6 })
        expect((await b.pull(url, undefined, { env: t.env })).timelines).toEqual([{ name: 'run', added: 0, present: 6 }])
      } finally {
        await a.close()
        await b.close()
      }
    }, 120_000)

    it('a thin push after one new checkpoint sends only its new blocks, in at most 4 PUTs', async () => {
      const t = target()!
      const url = t.url()
      const a = await openStore(tmpStorePath('ckpt-push-'))
      try {
        const rec = await record(a, 'run', 3, 2)
        await a.push(url, undefined, { env: t.env })
        const ram = Buffer.from(rec.states.at(-1)!.ram)
        ram.fill(7, 0, 4096)
        await rec.tl.checkpoint({ vtime: 10_000_000n, regions: { ram: { data: ram, dirty: [0] } } })
        const s = await a.push(url, undefined, { env: t.env })
        expect(s.timelines[0]).toMatchObject({ pushed: 1, present: 3 })
        // the new chunk, the tree nodes on its path, the manifest: a handful of blocks, one pack
        expect(s.packs).toBe(1)
        expect(s.blocks).toBeLessThan(10)
        expect(s.requests.puts).toBeLessThanOrEqual(4)
      } finally {
        await a.close()
      }
    }, 120_000)

    it('lazy pull: checkpoints behave like local ones, blocks come when read and stay', async () => {
      const t = target()!
      const url = t.url()
      const a = await openStore(tmpStorePath('ckpt-push-'))
      const dir = tmpStorePath('ckpt-lazy-')
      let c = await openStore(dir)
      try {
        const rec = await record(a, 'run', 5, 3)
        await a.push(url, undefined, { env: t.env })
        const p = await c.pull(url, undefined, { lazy: true, env: t.env })
        expect(p.lazy).toBe(true)
        expect(p.blocks).toBe(0)
        expect(await log(c)).toEqual(await log(a))
        const last = rec.states.at(-1)!
        const page = await c.readChunk(last.cid, 'ram', 17)
        expect(Buffer.from(page).equals(last.ram.subarray(17 * 4096, 18 * 4096))).toBe(true)
        const diff: string[] = []
        for await (const d of c.diff(rec.states[0]!.cid, last.cid)) diff.push(`${d.region}:${d.index}`)
        const want: string[] = []
        for await (const d of a.diff(rec.states[0]!.cid, last.cid)) want.push(`${d.region}:${d.index}`)
        expect(diff).toEqual(want)
        await expectSame(c, rec.states)
        // the store verifies clean (blocks held only by the remote are not charged as missing),
        // and exports a bundle another store imports whole
        const it = verifyStore(c, { deep: true })
        let v = await it.next()
        while (!v.done) v = await it.next()
        expect(v.value.clean).toBe(true)
        const parts: Uint8Array[] = []
        for await (const b of exportBundle(c, [last.cid])) parts.push(b)
        const e = await openStore(tmpStorePath('ckpt-lazy-import-'))
        await importBundle(e, (async function* () {
          yield* parts
        })())
        await expectSame(e, [last])
        await e.close()
        // reopened, and with the remote gone: what was read is local
        await c.close()
        if (t.objects) {
          const o = await t.objects(url)
          const keys: string[] = []
          for await (const x of o.list('')) keys.push(x.key)
          for (const k of keys) await o.delete(k)
          await o.close()
        }
        c = await openStore(dir)
        await expectSame(c, rec.states)
      } finally {
        await a.close()
        await c.close()
      }
    }, 120_000)

    it('two stores pushing the same timeline: one wins each vtime, the other gets CKPT_REMOTE_CONFLICT, different timelines merge', async () => {
      const t = target()!
      const url = t.url()
      const a = await openStore(tmpStorePath('ckpt-push-a-'))
      const b = await openStore(tmpStorePath('ckpt-push-b-'))
      const d = await openStore(tmpStorePath('ckpt-pull-d-'))
      try {
        const ra = await record(a, 'shared', 3, 4)
        await record(b, 'shared', 3, 5)
        const rb2 = await record(b, 'other', 2, 6)
        const sa = await a.push(url, ['shared'], { env: t.env })
        expect(sa.conflicts).toEqual([])
        const err = await caught(() => b.push(url, undefined, { env: t.env }))
        expect(err.code).toBe('CKPT_REMOTE_CONFLICT')
        const sb = err.details!.summary as Awaited<ReturnType<CkptStore['push']>>
        expect(sb.conflicts).toHaveLength(1)
        expect(sb.conflicts[0]).toMatchObject({ timeline: 'shared' })
        expect(sb.timelines.find((x) => x.name === 'other')).toMatchObject({ pushed: 2 })
        await d.pull(url, undefined, { env: t.env })
        await expectSame(d, ra.states)
        await expectSame(d, rb2.states)
      } finally {
        await a.close()
        await b.close()
        await d.close()
      }
    }, 120_000)

    it('two pushers racing for the same vtimes: exactly one wins each, the other is told, and a pull gets one whole history', async () => {
      const t = target()!
      if (!t.conditional) return
      const url = t.url()
      const stores = [await openStore(tmpStorePath('ckpt-race-a-')), await openStore(tmpStorePath('ckpt-race-b-'))]
      const d = await openStore(tmpStorePath('ckpt-race-d-'))
      try {
        // one history on both (B pulled A's first checkpoint), then different checkpoints at the same vtimes
        const base = await record(stores[0]!, 'shared', 1, 30)
        await stores[0]!.push(url, undefined, { env: t.env })
        await stores[1]!.pull(url, undefined, { env: t.env })
        const recs = [base, await record(stores[0]!, 'shared', 3, 31, 10), await record(stores[1]!, 'shared', 3, 32, 10)]
        const results = await Promise.allSettled(stores.map((s) => s.push(url, undefined, { env: t.env })))
        const won = results.filter((x) => x.status === 'fulfilled')
        const lost = results.filter((x) => x.status === 'rejected') as PromiseRejectedResult[]
        expect(won.length + lost.length).toBe(2)
        for (const l of lost) expect((l.reason as { code?: string }).code).toBe('CKPT_REMOTE_CONFLICT')
        expect(lost.length).toBeGreaterThanOrEqual(1)
        await d.pull(url, undefined, { env: t.env })
        const got: string[] = []
        for await (const e of d.log('shared')) got.push(e.cid.toString())
        // every checkpoint pulled is one store's, at its vtime, and restores byte-identical
        const all = new Map(recs.flatMap((r) => r.states.map((s) => [s.cid, s] as const)))
        expect(got.length).toBeGreaterThan(0)
        await expectSame(d, got.map((c) => all.get(c)!))
      } finally {
        for (const s of stores) await s.close()
        await d.close()
      }
    }, 120_000)

    it('a damaged pack on the remote is never returned: a full pull fails naming the block, a lazy read too', async () => {
      const t = target()!
      if (!t.objects) return
      const url = t.url()
      const a = await openStore(tmpStorePath('ckpt-push-'))
      const b = await openStore(tmpStorePath('ckpt-pull-'))
      const c = await openStore(tmpStorePath('ckpt-lazy-'))
      const objects = await t.objects(url)
      try {
        const rec = await record(a, 'run', 2, 7)
        await c.pull(url, undefined, { lazy: true, env: t.env }).catch(() => {})
        await a.push(url, undefined, { env: t.env })
        await c.pull(url, undefined, { lazy: true, env: t.env })
        const packs: string[] = []
        for await (const o of objects.list('packs/')) packs.push(o.key)
        expect(packs.length).toBeGreaterThan(0)
        for (const k of packs) {
          const bytes = Buffer.from((await objects.get(k))!)
          // flip a byte inside every entry payload region past the header (a data block)
          for (let at = 200; at < bytes.length - 64; at += 997) bytes[at]! ^= 0x5a
          await objects.put(k, bytes)
        }
        const e = await caught(() => b.pull(url, undefined, { env: t.env }))
        expect(['CKPT_HASH_MISMATCH', 'CKPT_BAD_REMOTE']).toContain(e.code)
        const r = await caught(() => c.restore(rec.states.at(-1)!.cid, 'ram', Buffer.alloc(REGIONS.ram.size)))
        expect(r.code).toBe('CKPT_HASH_MISMATCH')
      } finally {
        await objects.close()
        await a.close()
        await b.close()
        await c.close()
      }
    }, 120_000)
  })
}
