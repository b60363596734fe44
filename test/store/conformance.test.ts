/**
 * One conformance suite for the store layer, run against both backends: the real one (LevelDB index +
 * pack files in a temp dir) and the in-memory one (MemoryKV + MemoryPackIO). Plus a KV pair suite that
 * runs MemoryKV and LevelKV side by side against a sorted-array model on random keys.
 */
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { blake3, initBlake3 } from '../../codecs/blake3.js'
import { cidBytes, cidToString, DAG_CBOR, RAW, type CidBytes } from '../../codecs/cid.js'
import { AT_REST, compressBlock, deflateCompressor, identity, zstdCompressor, type Compressor } from '../../codecs/compress.js'
import { compareBytes, type KV, type KVRange } from '../../store/kv.js'
import { packKey } from '../../store/keys.js'
import { LevelKV } from '../../store/level-kv.js'
import { MemoryKV } from '../../store/memory-kv.js'
import { ENTRY_HEADER_SIZE } from '../../codecs/pack-format.js'
import { packFileName } from '../../store/pack-io.js'
import { Repository, type RepositoryOptions } from '../../store/repository.js'
import { makeRng, type Rng } from '../helpers/rng.js'
import { bytesEqual, caught, removeTmpDirs, tmpDir, tmpStorePath } from '../helpers/tmp.js'

afterAll(removeTmpDirs)

await initBlake3()

const zstd = zstdCompressor()
const CODECS: { name: string; c: Compressor | undefined }[] = [
  { name: 'identity', c: identity },
  { name: 'zstd', c: zstd },
  { name: 'deflate', c: deflateCompressor() },
]

function rawCid(bytes: Uint8Array): CidBytes {
  return cidBytes(RAW, blake3(bytes))
}

/** Compressible but not trivial: text-like bytes, so every codec actually compresses it. */
function compressible(rng: Rng, n: number): Uint8Array {
  const words = ['page ', 'table ', 'entry ', 'kernel ', 'mmio ', 'cpu ', 'zero ', 'reg ']
  const s: string[] = []
  let len = 0
  while (len < n) {
    const w = rng.pick(words) + (rng.chance(0.1) ? String(rng.u32() % 1000) : '')
    s.push(w)
    len += w.length
  }
  return Buffer.from(s.join('').slice(0, n), 'latin1')
}

/** Stages a block with the given compressor; returns its CID, raw bytes and the codec actually used. */
function putBlock(repo: Repository, c: Compressor, raw: Uint8Array): { cid: CidBytes; code: number; put: boolean } {
  const cid = rawCid(raw)
  const z = compressBlock(c, raw)
  const put = repo.blocks.put(cid, z.code, z.bytes, raw.length)
  return { cid, code: z.code, put }
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = []
  for await (const x of it) out.push(x)
  return out
}

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex')

interface Backend {
  /** a fresh, empty repository */
  open(opts?: RepositoryOptions): Promise<Repository>
  /** close and open the same store again (disk only) */
  reopen?(repo: Repository): Promise<Repository>
  /** flips one byte at an absolute offset of a pack (after a commit) and returns the repository to read from */
  tamper(repo: Repository, pack: number, offset: number): Promise<Repository>
}

function conformance(name: string, backend: Backend): void {
  describe(`repository conformance: ${name}`, () => {
    for (const { name: codecName, c } of CODECS) {
      it.skipIf(c === undefined)(`put/has/get round-trip with the ${codecName} at-rest codec`, async () => {
        const repo = await backend.open()
        try {
          const rng = makeRng(101 + codecName.length)
          const blocks: { cid: CidBytes; raw: Uint8Array; code: number }[] = []
          for (let i = 0; i < 40; i++) {
            const n = rng.pick([1, 100, 4096, 65536, 3 + rng.int(0, 9000)])
            const raw = rng.chance(0.5) ? compressible(rng, n) : rng.bytes(n)
            const r = putBlock(repo, c!, raw)
            if (!r.put) continue // same content drawn twice
            blocks.push({ cid: r.cid, raw, code: r.code })
          }
          // the compressible ones really were stored under the codec under test
          if (c!.code !== AT_REST.identity) expect(blocks.some((b) => b.code === c!.code)).toBe(true)
          for (const b of blocks) {
            expect(repo.blocks.has(b.cid)).toBe(true)
            expect(repo.blocks.locate(b.cid)?.codec).toBe(b.code)
            expect(repo.blocks.locate(b.cid)?.rawLength).toBe(b.raw.length)
            expect(bytesEqual(repo.blocks.get(b.cid), b.raw)).toBe(true)
          }
          await repo.commit([])
          for (const b of blocks) expect(bytesEqual(repo.blocks.get(b.cid), b.raw)).toBe(true)
          expect(await repo.blocks.count()).toBe(blocks.length)
          if (backend.reopen) {
            const again = await backend.reopen(repo)
            try {
              for (const b of blocks) {
                expect(again.blocks.has(b.cid)).toBe(true)
                expect(bytesEqual(again.blocks.get(b.cid), b.raw)).toBe(true)
              }
              expect(await again.blocks.count()).toBe(blocks.length)
            } finally {
              await again.close()
            }
          }
        } finally {
          await repo.close()
        }
      })
    }

    it('staged blocks are visible before commit; commit makes them durable; abort drops them', async () => {
      let repo = await backend.open()
      try {
        const rng = makeRng(7)
        const a = rng.bytes(5000)
        const b = rng.bytes(6000)
        const ra = putBlock(repo, deflateCompressor(), a)
        expect(ra.put).toBe(true)
        expect(repo.blocks.has(ra.cid)).toBe(true)
        expect(repo.blocks.stagedCount).toBe(1)
        expect(bytesEqual(repo.blocks.get(ra.cid), a)).toBe(true)
        // a staged block cannot be staged twice
        expect(putBlock(repo, identity, a).put).toBe(false)
        await repo.commit([])
        expect(repo.blocks.stagedCount).toBe(0)
        expect(repo.blocks.has(ra.cid)).toBe(true)

        // a second transaction, aborted
        const rb = putBlock(repo, identity, b)
        expect(rb.put).toBe(true)
        expect(repo.blocks.has(rb.cid)).toBe(true)
        repo.blocks.abort()
        expect(repo.blocks.has(rb.cid)).toBe(false)
        expect(repo.blocks.locate(rb.cid)).toBeUndefined()
        expect((await caught(() => repo.blocks.get(rb.cid))).code).toBe('CKPT_NOT_FOUND')
        // the committed one survived the abort
        expect(bytesEqual(repo.blocks.get(ra.cid), a)).toBe(true)
        // the CID may be staged again after the abort, and commits fine
        expect(putBlock(repo, identity, b).put).toBe(true)
        await repo.commit([])
        expect(bytesEqual(repo.blocks.get(rb.cid), b)).toBe(true)

        // abort of a later transaction in the same open pack, then more work
        const c3 = rng.bytes(3000)
        const rc = putBlock(repo, identity, c3)
        repo.blocks.abort()
        expect(repo.blocks.has(rc.cid)).toBe(false)
        const d = rng.bytes(2000)
        const rd = putBlock(repo, identity, d)
        await repo.commit([])
        expect(repo.blocks.has(rc.cid)).toBe(false)
        expect(bytesEqual(repo.blocks.get(rd.cid), d)).toBe(true)
        expect(await repo.blocks.count()).toBe(3)
        const listed = (await collect(repo.blocks.list())).map(hex).sort()
        expect(listed).toEqual([ra.cid, rb.cid, rd.cid].map(hex).sort())

        if (backend.reopen) {
          repo = await backend.reopen(repo)
          expect(repo.blocks.has(rc.cid)).toBe(false)
          expect((await caught(() => repo.blocks.get(rc.cid))).code).toBe('CKPT_NOT_FOUND')
          for (const [r, raw] of [
            [ra, a],
            [rb, b],
            [rd, d],
          ] as const) {
            expect(bytesEqual(repo.blocks.get(r.cid), raw)).toBe(true)
          }
        }
      } finally {
        await repo.close()
      }
    })

    it('big transactions: blocks larger than the write buffer, and an abort after staged bytes reached the pack', async () => {
      let repo = await backend.open()
      try {
        const rng = makeRng(19)
        // 5 MiB: larger than the 4 MiB write buffer; 16 MiB is the format's limit
        const huge = rng.bytes(5 << 20)
        const rh = putBlock(repo, identity, huge)
        expect(bytesEqual(repo.blocks.get(rh.cid), huge)).toBe(true)
        const maxi = compressible(rng, 16 << 20)
        const rm = putBlock(repo, deflateCompressor(), maxi)
        expect(bytesEqual(repo.blocks.get(rm.cid), maxi)).toBe(true)
        await repo.commit([])
        const committedSize = repo.blocks.io.size([...repo.blocks.packRecords().keys()][0]!)
        // stage ~3 MiB in 600 KB blocks (past the 1 MiB flush threshold: bytes go to the pack), then abort
        const dropped: CidBytes[] = []
        for (let i = 0; i < 5; i++) dropped.push(putBlock(repo, identity, rng.bytes(600_000)).cid)
        expect(dropped.every((c) => repo.blocks.has(c))).toBe(true)
        repo.blocks.abort()
        expect(dropped.some((c) => repo.blocks.has(c))).toBe(false)
        expect(repo.blocks.io.size([...repo.blocks.packRecords().keys()][0]!)).toBe(committedSize)
        // the next transaction lands where the aborted one was, and reads back
        const after = rng.bytes(700_000)
        const ra = putBlock(repo, identity, after)
        await repo.commit([])
        for (const [cid, raw] of [
          [rh.cid, huge],
          [rm.cid, maxi],
          [ra.cid, after],
        ] as const) {
          expect(bytesEqual(repo.blocks.get(cid), raw)).toBe(true)
        }
        if (backend.reopen) {
          repo = await backend.reopen(repo)
          expect(bytesEqual(repo.blocks.get(ra.cid), after)).toBe(true)
          expect(bytesEqual(repo.blocks.get(rh.cid), huge)).toBe(true)
          expect(dropped.some((c) => repo.blocks.has(c))).toBe(false)
          expect(await repo.blocks.count()).toBe(3)
        }
      } finally {
        await repo.close()
      }
    })

    it('abort right after open (nothing staged, no pack yet) is harmless', async () => {
      const repo = await backend.open()
      try {
        repo.blocks.abort()
        const x = new Uint8Array(100).fill(9)
        const r = putBlock(repo, identity, x)
        repo.blocks.abort()
        repo.blocks.abort()
        expect(repo.blocks.has(r.cid)).toBe(false)
        const r2 = putBlock(repo, identity, x)
        expect(r2.put).toBe(true)
        await repo.commit([])
        expect(bytesEqual(repo.blocks.get(r.cid), x)).toBe(true)
      } finally {
        await repo.close()
      }
    })

    it('small packs: commits seal packs; an aborted transaction in a fresh pack leaves nothing behind', async () => {
      let repo = await backend.open({ packTargetSize: 16 * 1024 })
      try {
        const rng = makeRng(8)
        const kept: { cid: CidBytes; raw: Uint8Array }[] = []
        for (let i = 0; i < 6; i++) {
          const raw = rng.bytes(10_000)
          kept.push({ cid: putBlock(repo, identity, raw).cid, raw })
          await repo.commit([])
        }
        const sealedBefore = [...repo.blocks.packRecords().values()].filter((r) => r.sealed).length
        expect(sealedBefore).toBeGreaterThan(1)
        const packsBefore = repo.blocks.io.list()
        // the open pack was just sealed by the last commit or holds one block: stage two blocks so
        // that, whatever the state, the staged ones are dropped
        const x = rng.bytes(12_000)
        const y = rng.bytes(12_000)
        const rx = putBlock(repo, identity, x)
        const ry = putBlock(repo, identity, y)
        repo.blocks.abort()
        expect(repo.blocks.has(rx.cid) || repo.blocks.has(ry.cid)).toBe(false)
        // no pack file holding only aborted bytes is left around
        expect(repo.blocks.io.list()).toEqual(packsBefore)
        for (const k of kept) expect(bytesEqual(repo.blocks.get(k.cid), k.raw)).toBe(true)
        const z = rng.bytes(5000)
        const rz = putBlock(repo, identity, z)
        await repo.commit([])
        kept.push({ cid: rz.cid, raw: z })
        if (backend.reopen) repo = await backend.reopen(repo)
        for (const k of kept) expect(bytesEqual(repo.blocks.get(k.cid), k.raw)).toBe(true)
        expect(repo.blocks.has(rx.cid)).toBe(false)
        expect(await repo.blocks.count()).toBe(kept.length)
      } finally {
        await repo.close()
      }
    })

    it('put of an already stored CID is skipped and returns false', async () => {
      const repo = await backend.open()
      try {
        const x = makeRng(3).bytes(4096)
        const first = putBlock(repo, identity, x)
        expect(first.put).toBe(true)
        await repo.commit([])
        const before = repo.blocks.locate(first.cid)
        // a different at-rest form of the same content: still skipped, the stored one stays
        expect(putBlock(repo, deflateCompressor(), x).put).toBe(false)
        expect(repo.blocks.put(first.cid, AT_REST.identity, x, x.length)).toBe(false)
        expect(repo.blocks.stagedCount).toBe(0)
        expect(repo.blocks.locate(first.cid)).toEqual(before)
        expect(await repo.blocks.count()).toBe(1)
        await repo.commit([])
        expect(await repo.blocks.count()).toBe(1)
        expect((await collect(repo.blocks.list())).length).toBe(1)
      } finally {
        await repo.close()
      }
    })

    it('get of an unknown CID is CKPT_NOT_FOUND naming it', async () => {
      const repo = await backend.open()
      try {
        const cid = rawCid(Uint8Array.of(1, 2, 3))
        expect(repo.blocks.has(cid)).toBe(false)
        const err = await caught(() => repo.blocks.get(cid))
        expect(err.code).toBe('CKPT_NOT_FOUND')
        expect(err.details?.cid).toBe(cidToString(cid))
      } finally {
        await repo.close()
      }
    })

    it('a block whose stored bytes were flipped fails with CKPT_HASH_MISMATCH naming it', async () => {
      let repo = await backend.open()
      try {
        const rng = makeRng(11)
        const victim = rng.bytes(8192)
        const other = rng.bytes(8192)
        const v = putBlock(repo, identity, victim)
        const o = putBlock(repo, identity, other)
        await repo.commit([])
        const loc = repo.blocks.locate(v.cid)!
        expect(loc.codec).toBe(AT_REST.identity)
        repo = await backend.tamper(repo, loc.pack, loc.offset + ENTRY_HEADER_SIZE + 1234)
        const err = await caught(() => repo.blocks.get(v.cid))
        expect(err.code).toBe('CKPT_HASH_MISMATCH')
        expect(err.details?.cid).toBe(cidToString(v.cid))
        // the neighbour is intact
        expect(bytesEqual(repo.blocks.get(o.cid), other)).toBe(true)
      } finally {
        await repo.close()
      }
    })

    for (const { name: codecName, c } of CODECS.filter((x) => x.name !== 'identity')) {
      // a corrupt compressed payload fails with an error naming the block, like the re-hash path
      ;(c === undefined ? it.skip : it)(`a flipped ${codecName} block fails with a CkptError naming the block`, async () => {
        let repo = await backend.open()
        try {
          const raw = compressible(makeRng(12), 16384)
          const v = putBlock(repo, c!, raw)
          expect(v.code).toBe(c!.code)
          await repo.commit([])
          const loc = repo.blocks.locate(v.cid)!
          // the first payload byte: the stream's header, so the codec itself notices
          repo = await backend.tamper(repo, loc.pack, loc.offset + ENTRY_HEADER_SIZE)
          const err = await caught(() => repo.blocks.get(v.cid))
          // Either the codec notices (corrupt stream) or the re-hash does; both must say which block it is.
          expect(['CKPT_HASH_MISMATCH', 'CKPT_BAD_PACK']).toContain(err.code)
          expect(err.details?.cid).toBe(cidToString(v.cid))
        } finally {
          await repo.close()
        }
      })
    }

    it('catalog: checkpoints, seek, latest, order, reverse/limit, records, timelines', async () => {
      let repo = await backend.open()
      try {
        const rng = makeRng(21)
        const tls = ['a', 'ab', 'a.b', 'a/b', 'b']
        const vt: Record<string, bigint[]> = {}
        const cidOf = (t: string, v: bigint) => cidBytes(DAG_CBOR, blake3(Buffer.from(`${t}@${v}`)))
        for (const t of tls) {
          // vtimes that sort differently as text than as numbers, up to 2^64-1
          const set = new Set<bigint>([0n, 1n, 9n, 10n, 255n, 256n, 65536n, 2n ** 53n + 1n, 0xffffffffffffffffn])
          while (set.size < 20) set.add(BigInt(rng.u32()) * BigInt(rng.int(1, 1000)))
          vt[t] = [...set].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0))
          // committed in random order, several per commit
          const shuffled = rng.shuffle([...vt[t]!])
          for (let i = 0; i < shuffled.length; i += 3) {
            const ops = shuffled.slice(i, i + 3).flatMap((v) => repo.putCheckpointOps({ timeline: t, vtime: v, cid: cidOf(t, v) }))
            if (i === 0) ops.push(repo.putTimelineOp({ name: t, lineage: '0123456789abcdef0123456789abcdef', regions: { ram: { size: 8192, chunkSize: 4096 } }, created: 1000 + t.length }))
            await repo.commit(ops)
          }
        }
        const check = async (r: Repository) => {
          const names = (await collect(r.timelines())).map((x) => x.name)
          expect(names).toEqual([...tls].sort())
          expect(await r.getTimeline('a.b')).toEqual({ name: 'a.b', lineage: '0123456789abcdef0123456789abcdef', regions: { ram: { size: 8192, chunkSize: 4096 } }, created: 1003 })
          expect(await r.getTimeline('nope')).toBeUndefined()
          for (const t of tls) {
            const vs = vt[t]!
            const all = await collect(r.checkpoints(t))
            expect(all.map((e) => e.vtime)).toEqual(vs)
            for (const e of all) {
              expect(e.timeline).toBe(t)
              expect(hex(e.cid)).toBe(hex(cidOf(t, e.vtime)))
            }
            expect((await collect(r.checkpoints(t, { reverse: true }))).map((e) => e.vtime)).toEqual([...vs].reverse())
            expect((await collect(r.checkpoints(t, { limit: 4 }))).map((e) => e.vtime)).toEqual(vs.slice(0, 4))
            expect((await collect(r.checkpoints(t, { reverse: true, limit: 3 }))).map((e) => e.vtime)).toEqual(vs.slice(-3).reverse())
            const lo = vs[5]!
            const hi = vs[12]!
            expect((await collect(r.checkpoints(t, { gte: lo, lte: hi }))).map((e) => e.vtime)).toEqual(vs.slice(5, 13))
            expect((await collect(r.checkpoints(t, { gte: lo + 1n, lte: hi - 1n }))).map((e) => e.vtime)).toEqual(vs.slice(6, 12))
            expect((await r.latest(t))?.vtime).toBe(0xffffffffffffffffn)
            // seek: exact, between, before the first
            for (let k = 0; k < vs.length; k++) {
              const exact = await r.seek(t, vs[k]!)
              expect(exact?.vtime).toBe(vs[k])
              expect(hex(exact!.cid)).toBe(hex(cidOf(t, vs[k]!)))
              if (k + 1 < vs.length && vs[k + 1]! - vs[k]! > 1n) {
                const mid = vs[k]! + (vs[k + 1]! - vs[k]!) / 2n
                expect((await r.seek(t, mid))?.vtime).toBe(vs[k])
              }
            }
            for (let k = 0; k < 30; k++) {
              const q = BigInt(rng.u32()) * BigInt(rng.int(1, 1500))
              const want = [...vs].reverse().find((v) => v <= q)
              expect((await r.seek(t, q))?.vtime).toBe(want)
            }
            // checkpoint records map a CID back
            expect(await r.checkpointRecord(cidOf(t, vs[3]!))).toEqual({ timeline: t, vtime: vs[3] })
          }
          expect(await r.checkpointRecord(cidOf('zz', 1n))).toBeUndefined()
          expect(await r.seek('nope', 5n)).toBeUndefined()
          expect(await r.latest('nope')).toBeUndefined()
          expect(await collect(r.checkpoints('nope'))).toEqual([])
        }
        // 0 is the smallest vtime, so "before the first" needs a timeline whose first is > 0
        await repo.commit(repo.putCheckpointOps({ timeline: 'late', vtime: 100n, cid: cidOf('late', 100n) }))
        expect(await repo.seek('late', 99n)).toBeUndefined()
        expect((await repo.seek('late', 100n))?.vtime).toBe(100n)
        expect((await repo.seek('late', 101n))?.vtime).toBe(100n)
        await check(repo)
        if (backend.reopen) {
          repo = await backend.reopen(repo)
          await check(repo)
          expect(await repo.seek('late', 99n)).toBeUndefined()
        }
      } finally {
        await repo.close()
      }
    })

    it('catalog ops commit atomically with the blocks they reference', async () => {
      let repo = await backend.open()
      try {
        const m = makeRng(5).bytes(300)
        const cid = cidBytes(DAG_CBOR, blake3(m))
        expect(repo.blocks.put(cid, AT_REST.identity, m, m.length)).toBe(true)
        await repo.commit([...repo.putCheckpointOps({ timeline: 't', vtime: 7n, cid }), repo.setRefOp('r', cid)])
        const check = async (r: Repository) => {
          const e = await r.seek('t', 7n)
          expect(hex(e!.cid)).toBe(hex(cid))
          expect(bytesEqual(r.blocks.get(e!.cid), m)).toBe(true)
          expect(hex((await r.getRef('r'))!)).toBe(hex(cid))
        }
        await check(repo)
        if (backend.reopen) {
          repo = await backend.reopen(repo)
          await check(repo)
        }
      } finally {
        await repo.close()
      }
    })

    it('refs and meta', async () => {
      let repo = await backend.open()
      try {
        const c = (s: string) => cidBytes(DAG_CBOR, blake3(Buffer.from(s)))
        await repo.commit([repo.setRefOp('main', c('1')), repo.setRefOp('feature/x', c('2'))])
        // metadata is not catalog: an index operation of the caller's own
        await repo.commitWith([repo.putMetaOp('owner', { name: 'ci', n: 3 })])
        expect(hex((await repo.getRef('main'))!)).toBe(hex(c('1')))
        expect(await repo.getRef('nope')).toBeUndefined()
        // moving a ref overwrites it
        await repo.commit([repo.setRefOp('main', c('3')), repo.setRefOp('a', c('4'))])
        const check = async (r: Repository) => {
          const refs = (await collect(r.refs())).map((x) => [x.name, hex(x.cid)])
          expect(refs).toEqual([
            ['a', hex(c('4'))],
            ['feature/x', hex(c('2'))],
            ['main', hex(c('3'))],
          ])
          expect(await r.getMeta('owner')).toEqual({ name: 'ci', n: 3 })
          expect(await r.getMeta('none')).toBeUndefined()
          // refs, meta and checkpoints do not leak into each other's listings
          expect(await collect(r.timelines())).toEqual([])
          expect(await collect(r.blocks.list())).toEqual([])
        }
        await check(repo)
        if (backend.reopen) {
          repo = await backend.reopen(repo)
          await check(repo)
        }
      } finally {
        await repo.close()
      }
    })

    it('list() streams every stored CID exactly once', async () => {
      let repo = await backend.open()
      try {
        const rng = makeRng(31)
        const want = new Set<string>()
        for (let round = 0; round < 4; round++) {
          for (let i = 0; i < 50; i++) {
            const raw = rng.bytes(rng.int(1, 3000))
            const r = putBlock(repo, rng.pick([identity, deflateCompressor()]), raw)
            if (r.put) want.add(hex(r.cid))
          }
          if (round === 2) repo.blocks.abort()
          else {
            await repo.commit([])
          }
          if (round === 2) {
            // forget what was aborted
            const listed = new Set((await collect(repo.blocks.list())).map(hex))
            for (const w of [...want]) if (!listed.has(w)) want.delete(w)
          }
        }
        const check = async (r: Repository) => {
          const listed = (await collect(r.blocks.list())).map(hex)
          expect(listed.length).toBe(want.size)
          expect(new Set(listed)).toEqual(want)
          expect(await r.blocks.count()).toBe(want.size)
        }
        await check(repo)
        expect(want.size).toBe(150)
        if (backend.reopen) {
          repo = await backend.reopen(repo)
          await check(repo)
        }
      } finally {
        await repo.close()
      }
    })

    it('a closed repository refuses catalog calls with CKPT_CLOSED', async () => {
      const repo = await backend.open()
      await repo.close()
      expect(repo.isClosed).toBe(true)
      expect((await caught(() => repo.commit([]))).code).toBe('CKPT_CLOSED')
      expect((await caught(() => repo.seek('t', 1n))).code).toBe('CKPT_CLOSED')
      expect((await caught(() => repo.getRef('x'))).code).toBe('CKPT_CLOSED')
      await repo.close() // idempotent
    })
  })
}

/** the disk backend, opened with `extra` each time (e.g. without the dedup filter, as short-lived processes open it) */
function diskBackend(extra: RepositoryOptions = {}): Backend {
  const again = async (repo: Repository) => {
    await repo.close()
    return Repository.open(repo.dir, { mustExist: true, ...extra })
  }
  return {
    open: (opts) => Repository.open(tmpStorePath('ckpt-conf-'), { ...opts, ...extra }),
    reopen: again,
    async tamper(repo, pack, offset) {
      await repo.close()
      const file = path.join(repo.dir, 'packs', packFileName(pack))
      const fd = fs.openSync(file, 'r+')
      const b = Buffer.alloc(1)
      fs.readSync(fd, b, 0, 1, offset)
      b[0]! ^= 0x5a
      fs.writeSync(fd, b, 0, 1, offset)
      fs.closeSync(fd)
      return Repository.open(repo.dir, { mustExist: true, ...extra })
    },
  }
}

conformance('LevelDB + pack files', diskBackend())
// as short-lived processes open it (the CLI, gc): no dedup filter, every "stored already?" asks the index
conformance('LevelDB + pack files, opened without the dedup filter', diskBackend({ dedupFilter: false }))

conformance('memory', {
  open: (opts) => Repository.open('memory:x', { ...opts, memory: true }),
  async tamper(repo, pack, offset) {
    // no file to edit: reach into the memory pack (test-only access to a private field)
    const packs = (repo.blocks.io as unknown as { packs: Map<number, { buf: Buffer }> }).packs
    packs.get(pack)!.buf[offset]! ^= 0x5a
    return repo
  },
})

describe('disk backend specifics', () => {
  it('blocks committed across many packs survive reopen; torn tails past the commit are cut', async () => {
    const dir = tmpStorePath('ckpt-conf-')
    let repo = await Repository.open(dir, { packTargetSize: 32 * 1024 })
    const rng = makeRng(41)
    const all: { cid: CidBytes; raw: Uint8Array }[] = []
    for (let round = 0; round < 12; round++) {
      for (let i = 0; i < 5; i++) {
        const raw = rng.bytes(rng.int(1000, 9000))
        all.push({ cid: putBlock(repo, identity, raw).cid, raw })
      }
      await repo.commit([])
    }
    const packs = fs.readdirSync(path.join(dir, 'packs')).filter((f) => f.endsWith('.pack'))
    expect(packs.length).toBeGreaterThan(2)
    const committed = new Map([...repo.blocks.packRecords()].map(([n, r]) => [n, r.committedLength]))
    // stage more (past the 1 MiB flush threshold, so the bytes reach the file), never commit, close
    const lostCids = Array.from({ length: 3 }, () => putBlock(repo, identity, rng.bytes(600_000)).cid)
    const grown = packs.length < fs.readdirSync(path.join(dir, 'packs')).length || [...committed].some(([n, len]) => repo.blocks.io.size(n) > len)
    expect(grown || repo.blocks.io.list().some((n) => !committed.has(n))).toBe(true)
    await repo.close()
    repo = await Repository.open(dir)
    try {
      for (const c of lostCids) expect(repo.blocks.has(c)).toBe(false)
      // torn tails cut back to the committed lengths, and a pack nobody committed (a leftover: at most
      // the commit a crash interrupted) deleted, before anything is committed again
      expect(repo.blocks.io.list().sort()).toEqual([...committed.keys()].sort())
      expect(repo.leftovers).toEqual([])
      for (const [n, len] of committed) expect(fs.statSync(path.join(dir, 'packs', packFileName(n))).size).toBe(len)
      for (const b of all) expect(bytesEqual(repo.blocks.get(b.cid), b.raw)).toBe(true)
      // and writing continues
      const more = rng.bytes(7000)
      const m = putBlock(repo, identity, more)
      await repo.commit([])
      expect(bytesEqual(repo.blocks.get(m.cid), more)).toBe(true)
      expect(await repo.blocks.count()).toBe(all.length + 1)
    } finally {
      await repo.close()
    }
  })

  // an open that fails after LevelDB was opened must release it (and its lock)
  it('an open that fails after the index was opened leaves the store openable', async () => {
    const dir = tmpStorePath('ckpt-conf-')
    const repo = await Repository.open(dir)
    // a pack record of 3 bytes instead of 13
    await repo.commitWith([{ type: 'put', key: packKey(9), value: Uint8Array.of(1, 2, 3) }])
    await repo.close()
    const first = await caught(() => Repository.open(dir))
    expect(first.code).toBe('CKPT_BAD_INDEX')
    const second = await caught(() => Repository.open(dir))
    expect(second.code).toBe('CKPT_BAD_INDEX')
  })

  it('mustExist on a missing store fails with CKPT_BAD_STORE and creates nothing', async () => {
    const dir = tmpStorePath('ckpt-conf-')
    expect((await caught(() => Repository.open(dir, { mustExist: true }))).code).toBe('CKPT_BAD_STORE')
    expect(fs.existsSync(dir)).toBe(false)
  })
})

// ---------------------------------------------------------------------------------------------------
// KV pair: MemoryKV and LevelKV against a sorted-array model

function kvModelRange(model: Map<string, [Uint8Array, Uint8Array]>, r: KVRange): [Uint8Array, Uint8Array][] {
  let rows = [...model.values()].sort((a, b) => compareBytes(a[0], b[0]))
  rows = rows.filter(([k]) => {
    if (r.gte && compareBytes(k, r.gte) < 0) return false
    if (r.gt && compareBytes(k, r.gt) <= 0) return false
    if (r.lte && compareBytes(k, r.lte) > 0) return false
    if (r.lt && compareBytes(k, r.lt) >= 0) return false
    return true
  })
  if (r.reverse) rows.reverse()
  if (r.limit !== undefined && r.limit >= 0) rows = rows.slice(0, r.limit)
  return rows
}

function kvConformance(name: string, open: () => Promise<KV>): void {
  describe(`KV conformance: ${name}`, () => {
    it('get/getSync/getMany/batch/iterate agree with a model on random keys', async () => {
      const kv = await open()
      try {
        const rng = makeRng(77)
        const model = new Map<string, [Uint8Array, Uint8Array]>()
        // a small alphabet (with 0x00 and 0xff) so keys share prefixes and bounds fall between them
        const alphabet = [0x00, 0x01, 0x61, 0x62, 0x7f, 0x80, 0xfe, 0xff]
        const randKey = () => Uint8Array.from({ length: rng.int(1, 6) }, () => rng.pick(alphabet))
        for (let round = 0; round < 25; round++) {
          const ops: { type: 'put' | 'del'; key: Uint8Array; value: Uint8Array }[] = []
          const existing = [...model.values()]
          for (let i = rng.int(1, 40); i > 0; i--) {
            if (existing.length > 0 && rng.chance(0.25)) {
              ops.push({ type: 'del', key: rng.pick(existing)[0].slice(), value: new Uint8Array() })
            } else if (rng.chance(0.05)) {
              ops.push({ type: 'del', key: randKey(), value: new Uint8Array() }) // maybe absent
            } else {
              ops.push({ type: 'put', key: randKey(), value: rng.bytes(rng.int(0, 40)) })
            }
          }
          await kv.batch(
            ops.map((o) => (o.type === 'put' ? { type: 'put', key: o.key, value: o.value } : { type: 'del', key: o.key })),
            { sync: rng.chance(0.3) },
          )
          // later ops in a batch win over earlier ones on the same key
          for (const o of ops) {
            const k = hex(o.key)
            if (o.type === 'put') model.set(k, [o.key.slice(), o.value.slice()])
            else model.delete(k)
          }
          // point reads, present and absent
          const probes = [...[...model.values()].map((r) => r[0]), ...Array.from({ length: 20 }, randKey)]
          for (const k of probes) {
            const want = model.get(hex(k))?.[1]
            const got = await kv.get(k)
            const gotSync = kv.getSync(k)
            if (want === undefined) {
              expect(got).toBeUndefined()
              expect(gotSync).toBeUndefined()
            } else {
              expect(hex(got!)).toBe(hex(want))
              expect(hex(gotSync!)).toBe(hex(want))
            }
          }
          const many = await kv.getMany(probes)
          expect(many.map((v) => (v === undefined ? null : hex(v)))).toEqual(
            probes.map((k) => {
              const v = model.get(hex(k))?.[1]
              return v === undefined ? null : hex(v)
            }),
          )
          // ranges
          for (let q = 0; q < 30; q++) {
            const r: KVRange = {}
            const lo = rng.int(0, 3)
            if (lo === 1) r.gte = randKey()
            if (lo === 2) r.gt = randKey()
            const hi = rng.int(0, 3)
            if (hi === 1) r.lte = randKey()
            if (hi === 2) r.lt = randKey()
            if (rng.chance(0.5)) r.reverse = rng.chance(0.7)
            if (rng.chance(0.4)) r.limit = rng.pick([0, 1, 2, 5, 1000, -1])
            const got: string[] = []
            for await (const [k, v] of kv.iterate(r)) got.push(`${hex(k)}=${hex(v)}`)
            const want = kvModelRange(model, r).map(([k, v]) => `${hex(k)}=${hex(v)}`)
            expect(got, JSON.stringify({ ...r, gte: r.gte && hex(r.gte), gt: r.gt && hex(r.gt), lte: r.lte && hex(r.lte), lt: r.lt && hex(r.lt) })).toEqual(want)
          }
        }
        expect(model.size).toBeGreaterThan(50)
      } finally {
        await kv.close()
      }
    })

    it('keeps its own copies of keys and values (in and out)', async () => {
      const kv = await open()
      try {
        const k = Uint8Array.of(1, 2, 3)
        const v = Uint8Array.of(9, 9, 9)
        await kv.batch([{ type: 'put', key: k, value: v }])
        k[0] = 7
        v[0] = 7
        expect(hex((await kv.get(Uint8Array.of(1, 2, 3)))!)).toBe('090909')
        expect(await kv.get(Uint8Array.of(7, 2, 3))).toBeUndefined()
        const out = kv.getSync(Uint8Array.of(1, 2, 3))!
        out[0] = 0
        expect(hex(kv.getSync(Uint8Array.of(1, 2, 3))!)).toBe('090909')
        for await (const [ik, iv] of kv.iterate({})) {
          ik[0] = 0
          iv[0] = 0
        }
        expect(hex((await kv.get(Uint8Array.of(1, 2, 3)))!)).toBe('090909')
      } finally {
        await kv.close()
      }
    })

    it('an empty batch is fine; an empty store iterates nothing', async () => {
      const kv = await open()
      try {
        await kv.batch([])
        expect(await collect(kv.iterate({}))).toEqual([])
        expect(await collect(kv.iterate({ reverse: true, limit: 3 }))).toEqual([])
        expect(await kv.getMany([])).toEqual([])
      } finally {
        await kv.close()
      }
    })
  })
}

kvConformance('MemoryKV', async () => new MemoryKV())
kvConformance('LevelKV', () => LevelKV.open(path.join(tmpDir('ckpt-kv-'), 'db')))
