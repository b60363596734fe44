/**
 * The store's conformance suites, as runners a test file calls once per backend (conformance-disk,
 * conformance-memory): a new backend (packs on an object store, say) gets its own runner file and
 * must pass the same suites.
 *
 *   runRepositoryConformance  blocks (put, get, commit, abort, seal, damage), catalog, refs, meta
 *   runKvConformance          a KV against a sorted-array model on random keys
 *   runPackIoConformance      a PackIO: append, read ranges, seal, list, delete, missing objects
 */
import { describe, expect, it } from 'vitest'
import { blake3, initBlake3 } from '../../codecs/blake3.js'
import { cidBytes, cidToString, DAG_CBOR, RAW, type CidBytes } from '../../codecs/cid.js'
import { AT_REST, compressBlock, deflateCompressor, identity, zstdCompressor, type Compressor } from '../../codecs/compress.js'
import { ENTRY_HEADER_SIZE, ENTRY_KIND, writeEntry } from '../../codecs/pack-format.js'
import type { Backend, PackIO } from '../../store/interface.js'
import { compareBytes, type KV, type KVRange } from '../../store/kv.js'
import { Repository, type RepositoryOptions } from '../../store/repository.js'
import { collect, hex } from '../helpers/bytes.js'
import { makeRng, type Rng } from '../helpers/rng.js'
import { bytesEqual, caught } from '../helpers/tmp.js'

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
export function putBlock(repo: Repository, c: Compressor, raw: Uint8Array): { cid: CidBytes; code: number; put: boolean } {
  const cid = rawCid(raw)
  const z = compressBlock(c, raw)
  const put = repo.blocks.put(cid, z.code, z.bytes, raw.length)
  return { cid, code: z.code, put }
}

/** What the repository suite runs against: a backend, where its stores go, and how to damage one. */
export interface Subject {
  backend: Backend
  /** a new store's directory (for memory, a label) */
  newDir(): string
  /** given to every open (e.g. dedupFilter: false, as short-lived processes open a store) */
  options?: RepositoryOptions
  /** flips one byte at an absolute offset of a pack (after a commit); returns the repository to read from */
  tamper(repo: Repository, pack: number, offset: number): Promise<Repository>
}

interface Harness {
  /** a fresh, empty repository */
  open(opts?: RepositoryOptions): Promise<Repository>
  /** close and open the same store again (durable backends only) */
  reopen?(repo: Repository): Promise<Repository>
  tamper(repo: Repository, pack: number, offset: number): Promise<Repository>
}

function harness(s: Subject): Harness {
  const opts = (more: RepositoryOptions = {}): RepositoryOptions => ({ ...more, ...s.options, backend: s.backend })
  return {
    open: (more) => Repository.open(s.newDir(), opts(more)),
    reopen: s.backend.durable
      ? async (repo) => {
          await repo.close()
          return Repository.open(repo.dir, opts({ mustExist: true }))
        }
      : undefined,
    tamper: (repo, pack, offset) => s.tamper(repo, pack, offset),
  }
}

export function runRepositoryConformance(name: string, makeSubject: () => Subject): void {
  const subject = makeSubject()
  const backend = harness(subject)
  /** Runs check on repo, and again on it reopened where the backend persists; returns the open one. */
  const checkAcrossReopen = async (repo: Repository, check: (r: Repository) => Promise<void>): Promise<Repository> => {
    await check(repo)
    if (!backend.reopen) return repo
    const again = await backend.reopen(repo)
    await check(again)
    return again
  }
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
        repo = await checkAcrossReopen(repo, check)
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
        repo = await checkAcrossReopen(repo, check)
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

    it('the three write entry points: put (and put replacing a copy), putEntry, copyEntry', async () => {
      let repo = await backend.open()
      try {
        const rng = makeRng(44)
        const a = rng.bytes(3000)
        const b = rng.bytes(4000)
        const c = rng.bytes(5000)
        const ca = rawCid(a)
        const cb = rawCid(b)
        const cc = rawCid(c)
        expect(repo.blocks.put(ca, AT_REST.identity, a, a.length)).toBe(true)
        // a worker's entry: header and payload
        const entry = Buffer.alloc(ENTRY_HEADER_SIZE + b.length)
        writeEntry(entry, 0, cb, AT_REST.identity, 0, b.length, b)
        expect(repo.blocks.putEntry(cb, entry, b.length, AT_REST.identity)).toBe(true)
        expect(repo.blocks.putEntry(cb, entry, b.length, AT_REST.identity)).toBe(false)
        await repo.commit([])
        const before = repo.blocks.locate(ca)!
        // replace: a new copy of a stored CID, the index moves to it at commit
        expect(repo.blocks.put(ca, AT_REST.identity, a, a.length, { replace: true })).toBe(true)
        // copyEntry: an entry as it is, the index moves to the copy; it says where it went
        const ce = Buffer.alloc(ENTRY_HEADER_SIZE + c.length)
        writeEntry(ce, 0, cc, AT_REST.identity, 0, c.length, c)
        const at = repo.blocks.copyEntry(ce, { rawLength: c.length, codec: AT_REST.identity, depth: 0, kind: ENTRY_KIND.block })
        expect(repo.blocks.lastStaged).toEqual(at)
        await repo.commit([])
        const after = repo.blocks.locate(ca)!
        expect(after.offset === before.offset && after.pack === before.pack).toBe(false)
        expect(repo.blocks.locate(cc)).toEqual(at)
        if (backend.reopen) repo = await backend.reopen(repo)
        for (const [cid, raw] of [
          [ca, a],
          [cb, b],
          [cc, c],
        ] as const) {
          expect(bytesEqual(repo.blocks.get(cid), raw)).toBe(true)
        }
        // (a running count adds replaced copies again: a sizing figure; a reopen counts the index)
        if (backend.reopen) expect(await repo.blocks.count()).toBe(3)
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

export function runKvConformance(name: string, open: () => Promise<KV>): void {
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


// ---------------------------------------------------------------------------------------------------
// PackIO: numbered objects, appended to, read by range, sealed, listed, deleted

/** A fresh, empty PackIO; `reopen` (durable backends) gives another over the same objects. */
export interface PackIoSubject {
  io: PackIO
  reopen?(): PackIO
}

export function runPackIoConformance(name: string, make: () => PackIoSubject): void {
  describe(`PackIO conformance: ${name}`, () => {
    const fill = (n: number, seed: number) => makeRng(seed).bytes(n)

    it('append, then read any range of what was appended', async () => {
      const { io, reopen } = make()
      try {
        expect(io.list()).toEqual([])
        io.openForAppend(3, 0)
        const parts = [fill(10, 1), fill(70_000, 2), fill(1, 3), fill(5000, 4)]
        for (const p of parts) io.append(3, p)
        const all = Buffer.concat(parts)
        expect(io.exists(3)).toBe(true)
        expect(io.size(3)).toBe(all.length)
        await io.syncAsync(3)
        const rng = makeRng(9)
        for (let k = 0; k < 50; k++) {
          const at = rng.int(0, all.length - 1)
          const len = rng.int(0, all.length - at)
          expect(hex(io.read(3, at, len))).toBe(hex(all.subarray(at, at + len)))
          const out = new Uint8Array(len)
          expect(io.readInto(3, at, out)).toBe(out)
          expect(hex(out)).toBe(hex(all.subarray(at, at + len)))
        }
        // the whole object as a reader
        const r = io.reader(3)
        expect(r.size).toBe(all.length)
        const back = new Uint8Array(all.length)
        let got = 0
        while (got < back.length) {
          const n = r.read(back.subarray(got), got)
          if (n === 0) break
          got += n
        }
        expect(got).toBe(all.length)
        expect(hex(back)).toBe(hex(all))
        expect(io.describe(3)).toContain('00000003.pack')
        if (reopen) {
          io.close()
          const again = reopen()
          try {
            expect(again.list()).toEqual([3])
            expect(again.size(3)).toBe(all.length)
            expect(hex(again.read(3, 70_005, 6))).toBe(hex(all.subarray(70_005, 70_011)))
          } finally {
            again.close()
          }
        }
      } finally {
        io.close()
      }
    })

    it('openForAppend cuts a torn tail, and appending goes on from there', () => {
      const { io } = make()
      try {
        io.openForAppend(1, 0)
        io.append(1, fill(1000, 5))
        io.openForAppend(1, 400)
        expect(io.size(1)).toBe(400)
        io.append(1, Uint8Array.of(7, 8, 9))
        expect(io.size(1)).toBe(403)
        expect([...io.read(1, 400, 3)]).toEqual([7, 8, 9])
        expect(hex(io.read(1, 0, 400))).toBe(hex(fill(1000, 5).subarray(0, 400)))
      } finally {
        io.close()
      }
    })

    it('a sealed object reads as before and takes no more appends', () => {
      const { io } = make()
      try {
        io.openForAppend(2, 0)
        const bytes = fill(3000, 6)
        io.append(2, bytes)
        io.seal(2)
        expect(io.size(2)).toBe(3000)
        expect(hex(io.read(2, 100, 50))).toBe(hex(bytes.subarray(100, 150)))
        expect(() => io.append(2, Uint8Array.of(1))).toThrow()
        expect(io.size(2)).toBe(3000)
      } finally {
        io.close()
      }
    })

    it('list is ascending; remove deletes; removing a missing object is no error', () => {
      const { io } = make()
      try {
        for (const n of [12, 3, 7, 100]) {
          io.openForAppend(n, 0)
          io.append(n, fill(10 + n, n))
        }
        expect(io.list()).toEqual([3, 7, 12, 100])
        io.remove(7)
        expect(io.list()).toEqual([3, 12, 100])
        expect(io.exists(7)).toBe(false)
        io.remove(7)
        io.remove(55)
        expect(io.list()).toEqual([3, 12, 100])
        expect(hex(io.read(12, 0, 22))).toBe(hex(fill(22, 12)))
        expect(io.quarantined()).toEqual([])
      } finally {
        io.close()
      }
    })

    it('a missing object, or a range past the end, is CKPT_BAD_PACK naming the pack', async () => {
      const { io } = make()
      try {
        io.openForAppend(4, 0)
        io.append(4, fill(100, 4))
        for (const f of [() => io.read(9, 0, 10), () => io.size(9), () => io.reader(9), () => io.read(4, 95, 10), () => io.readInto(4, 101, new Uint8Array(1))]) {
          const err = await caught(f)
          expect(err.code).toBe('CKPT_BAD_PACK')
          expect(typeof err.details?.pack).toBe('number')
        }
        expect(io.exists(9)).toBe(false)
        io.remove(4)
        expect((await caught(() => io.read(4, 0, 1))).code).toBe('CKPT_BAD_PACK')
      } finally {
        io.close()
      }
    })
  })
}
