/**
 * One behaviour suite for every ObjectStore (store/remote/interface.ts): memory://, file://, s3rver and,
 * when CI provides one, a real S3 server (Ceph RADOS Gateway). `open` gives a fresh, empty store each
 * call (a new name, directory or prefix).
 */
import crypto from 'node:crypto'
import { describe, expect, it } from 'vitest'
import type { ObjectStore, SyncRangeReader } from '../../store/remote/interface.js'
import { caught } from '../helpers/tmp.js'

export interface ConformanceOptions {
  /** what conditionalCreate should say once a conditional put has run (s3rver ignores If-None-Match: false) */
  conditionalCreate: boolean
  /** big bodies go in several requests (s3: multipart) */
  multipart?: boolean
  /** a listing of more than 1,000 keys takes several requests (s3) */
  pagedListing?: boolean
  /** a synchronous reader of the same store */
  syncReader(store: ObjectStore): SyncRangeReader
  /** a store of the same server opened with credentials it refuses; absent where the server accepts anything */
  refusedCredentials?: () => Promise<ObjectStore>
  /** why the refused-credentials case does not run here */
  noCredentialCheck?: string
}

const MiB = 1024 * 1024

function bytes(n: number): Uint8Array {
  return new Uint8Array(crypto.randomBytes(n))
}

function same(a: Uint8Array | undefined, b: Uint8Array | undefined): boolean {
  if (a === undefined || b === undefined) return a === b
  return a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length))
}

function expectBytes(got: Uint8Array | undefined, want: Uint8Array): void {
  expect(got, 'missing').toBeDefined()
  expect(got!.length).toBe(want.length)
  expect(same(got, want), 'bytes differ').toBe(true)
}

async function keysOf(store: ObjectStore, prefix: string, startAfter?: string): Promise<string[]> {
  const out: string[] = []
  for await (const o of store.list(prefix, startAfter === undefined ? {} : { startAfter })) out.push(o.key)
  return out
}

const utf8Order = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b))

async function withStore<T>(open: () => Promise<ObjectStore>, fn: (s: ObjectStore) => Promise<T>): Promise<T> {
  const s = await open()
  try {
    return await fn(s)
  } finally {
    await s.close()
  }
}


export function runObjectStoreConformance(name: string, open: () => Promise<ObjectStore>, opts: ConformanceOptions): void {
  describe(`object store conformance: ${name}`, () => {
    it.each([0, 1, 5 * MiB, 40 * MiB])('put then get round-trips %i bytes', async (n) => {
      await withStore(open, async (s) => {
        const body = bytes(n)
        const puts = s.stats.puts
        expect(await s.put(`obj/${n}`, body)).toBe(true)
        if (n > 32 * MiB && opts.multipart) expect(s.stats.puts - puts).toBeGreaterThan(1)
        expect(s.stats.bytesOut).toBeGreaterThanOrEqual(n)
        expectBytes(await s.get(`obj/${n}`), body)
        expect(await s.head(`obj/${n}`)).toEqual({ size: n })
        expect(s.stats.gets).toBeGreaterThanOrEqual(1)
        expect(s.stats.heads).toBeGreaterThanOrEqual(1)
        expect(s.stats.bytesIn).toBeGreaterThanOrEqual(n)
      })
    })

    it('ranged get: the middle, past the end, from past the end, offset 0 length 1, offset only, length 0', async () => {
      await withStore(open, async (s) => {
        const body = bytes(100_000)
        await s.put('r', body)
        expectBytes(await s.get('r', { offset: 1000, length: 5000 }), body.subarray(1000, 6000))
        expectBytes(await s.get('r', { offset: 99_000, length: 5000 }), body.subarray(99_000))
        expectBytes(await s.get('r', { offset: 200_000, length: 10 }), new Uint8Array(0))
        expectBytes(await s.get('r', { offset: 0, length: 1 }), body.subarray(0, 1))
        expectBytes(await s.get('r', { offset: 99_999, length: 1 }), body.subarray(99_999))
        expectBytes(await s.get('r', { offset: 50_000 }), body.subarray(50_000))
        expectBytes(await s.get('r', { length: 10 }), body.subarray(0, 10))
        expectBytes(await s.get('r', { offset: 10, length: 0 }), new Uint8Array(0))
        await s.put('empty', new Uint8Array(0))
        expectBytes(await s.get('empty', { offset: 0, length: 1 }), new Uint8Array(0))
        expectBytes(await s.get('empty', { offset: 5, length: 1 }), new Uint8Array(0))
        expect(await s.get('nope', { offset: 0, length: 1 })).toBeUndefined()
        expect(await s.get('nope', { offset: 3, length: 0 })).toBeUndefined()
      })
    })

    it('a missing key is undefined for get and head; delete of a present and a missing key', async () => {
      await withStore(open, async (s) => {
        expect(await s.get('no/such/key')).toBeUndefined()
        expect(await s.head('no/such/key')).toBeUndefined()
        await s.put('d/x', bytes(10))
        await s.delete('d/x')
        await s.delete('d/x')
        await s.delete('never/was')
        expect(await s.get('d/x')).toBeUndefined()
        expect(await s.head('d/x')).toBeUndefined()
        expect(await keysOf(s, '')).toEqual([])
        expect(s.stats.deletes).toBeGreaterThanOrEqual(3)
      })
    })

    it('put({ ifNoneMatch }) creates a new key, and leaves an existing one as it was (false)', async () => {
      await withStore(open, async (s) => {
        const first = bytes(1000)
        expect(await s.put('c/one', first, { ifNoneMatch: true })).toBe(true)
        expect(await s.put('c/one', bytes(2000), { ifNoneMatch: true })).toBe(false)
        expectBytes(await s.get('c/one'), first)
        expect(s.conditionalCreate).toBe(opts.conditionalCreate)
        // the server check leaves nothing behind
        expect(await keysOf(s, '')).toEqual(['c/one'])
        // a plain put overwrites
        const second = bytes(3)
        expect(await s.put('c/one', second)).toBe(true)
        expectBytes(await s.get('c/one'), second)
      })
    })

    it.skipIf(!opts.conditionalCreate)('8 racing conditional puts of different bodies to a new key: exactly one wins, and its bytes stay', async () => {
      await withStore(open, async (s) => {
        for (let round = 0; round < 3; round++) {
          const bodies = Array.from({ length: 8 }, (_, i) => bytes(1000 + i))
          const won = await Promise.all(bodies.map((b) => s.put(`race/${round}`, b, { ifNoneMatch: true })))
          expect(won.filter((w) => w)).toHaveLength(1)
          expectBytes(await s.get(`race/${round}`), bodies[won.indexOf(true)]!)
        }
        expect(s.conditionalCreate).toBe(true)
      })
    })

    it("list: ascending (UTF-8 order), prefixes (one ending mid-name), startAfter, keys with '+', '=', '@', sizes", async () => {
      await withStore(open, async (s) => {
        const keys = ['a-b', 'a.b', 'a/b', 'a/c/d', 'a0', 'b', 'pre/foo', 'pre/fob/x', 'pre/bar', 'pre/fo', 'x+y', 'x=y', 'x@y', 'k/a+b=c@d', 'k/é', 'k/z']
        const shuffled = [...keys].sort(() => Math.random() - 0.5)
        await Promise.all(shuffled.map((k, i) => s.put(k, bytes(i))))
        const sorted = [...keys].sort(utf8Order)
        const all: { key: string; size: number }[] = []
        for await (const o of s.list('')) all.push(o)
        expect(all.map((o) => o.key)).toEqual(sorted)
        for (const o of all) expect(o.size).toBe(shuffled.indexOf(o.key))
        expect(await keysOf(s, 'a')).toEqual(['a-b', 'a.b', 'a/b', 'a/c/d', 'a0'])
        expect(await keysOf(s, 'a/')).toEqual(['a/b', 'a/c/d'])
        expect(await keysOf(s, 'pre/fo')).toEqual(['pre/fo', 'pre/fob/x', 'pre/foo'])
        expect(await keysOf(s, 'pre/fob')).toEqual(['pre/fob/x'])
        expect(await keysOf(s, 'pre/q')).toEqual([])
        expect(await keysOf(s, 'nothing/')).toEqual([])
        expect(await keysOf(s, 'k/')).toEqual(['k/a+b=c@d', 'k/z', 'k/é'])
        expect(await keysOf(s, '', 'a/b')).toEqual(sorted.slice(sorted.indexOf('a/b') + 1))
        expect(await keysOf(s, '', 'a/')).toEqual(sorted.filter((k) => utf8Order(k, 'a/') > 0))
        expect(await keysOf(s, 'pre/', 'pre/fo')).toEqual(['pre/fob/x', 'pre/foo'])
        expect(await keysOf(s, 'pre/', 'pre/z')).toEqual([])
        for (const k of ['x+y', 'x=y', 'x@y', 'k/a+b=c@d', 'k/é']) {
          expectBytes(await s.get(k), (await s.get(k))!)
          expect(await s.head(k)).toEqual({ size: shuffled.indexOf(k) })
        }
      })
    })

    it('list pages through more than 1,000 keys (1,100), ascending, with startAfter', async () => {
      await withStore(open, async (s) => {
        const keys = Array.from({ length: 1100 }, (_, i) => `many/${String(i).padStart(5, '0')}`)
        let next = 0
        await Promise.all(
          Array.from({ length: 16 }, async () => {
            while (next < keys.length) {
              const k = keys[next++]!
              await s.put(k, new TextEncoder().encode(k))
            }
          }),
        )
        const lists = s.stats.lists
        expect(await keysOf(s, 'many/')).toEqual(keys)
        if (opts.pagedListing) expect(s.stats.lists - lists).toBeGreaterThanOrEqual(2)
        expect(await keysOf(s, 'many/', keys[949])).toEqual(keys.slice(950))
        expect(await keysOf(s, 'many/010')).toEqual(keys.slice(1000, 1100))
        expect(await keysOf(s, 'many/0100')).toEqual(keys.slice(1000, 1010))
      })
    }, 120_000)

    it('the sync reader reads what get reads, across its 16 MiB requests; a missing key is undefined', async () => {
      await withStore(open, async (s) => {
        const big = bytes(34 * MiB + 5)
        await s.put('big', big)
        await s.put('small', big.subarray(0, 1000))
        const r = opts.syncReader(s)
        try {
          expectBytes(r.read('small', 0, 1000), big.subarray(0, 1000))
          expectBytes(r.read('small', 10, 20), big.subarray(10, 30))
          expectBytes(r.read('small', 990, 100), big.subarray(990, 1000))
          expectBytes(r.read('small', 5000, 100), new Uint8Array(0))
          expect(r.read('missing', 0, 10)).toBeUndefined()
          expect(r.read('missing', 0, 0)).toBeUndefined()
          expectBytes(r.read('small', 5, 0), new Uint8Array(0))
          // 15 MiB .. 35 MiB: crosses 16 and 32 MiB, two requests of the worker's buffer, cut at the end
          expectBytes(r.read('big', 15 * MiB, 20 * MiB), big.subarray(15 * MiB))
          expectBytes(r.read('big', 0, big.length), big)
          expectBytes(r.read('big', 16 * MiB - 3, 16 * MiB + 6), big.subarray(16 * MiB - 3, 32 * MiB + 3))
          expectBytes(r.read('big', 1234, 64 * 1024), (await s.get('big', { offset: 1234, length: 64 * 1024 }))!)
        } finally {
          r.close()
        }
      })
    }, 120_000)

    it.skipIf(!opts.refusedCredentials)(`credentials the server refuses are CKPT_REMOTE_AUTH, without the secret in the message${opts.noCredentialCheck ? ` (skipped: ${opts.noCredentialCheck})` : ''}`, async () => {
      const s = await opts.refusedCredentials!()
      try {
        for (const op of [() => s.get('x'), () => s.put('x', bytes(3)), () => keysOf(s, '')]) {
          const err = await caught(op)
          expect(err.code).toBe('CKPT_REMOTE_AUTH')
          expect(err.message).not.toMatch(/wrong-secret/)
          expect(JSON.stringify(err.details)).not.toMatch(/wrong-secret/)
        }
      } finally {
        await s.close()
      }
    })
  })
}
