/**
 * Bundles (CAR files): round trips of a long timeline, thin bundles, idempotence, compression,
 * timeline lineage conflicts, and every kind of bad bundle (truncated, flipped, missing blocks,
 * duplicate roots, garbage, absurd lengths, foreign CIDs, CARv2) — each rejected with a CKPT_* code
 * and no visible change to the store. A fuzz loop mutates valid bundles.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { CARV2_PRAGMA, CarReader, encodeCarHeader, sectionPrefix } from '../../codecs/car.js'
import { exportBundle, importBundle, openStore, type CkptStore, type Timeline } from '../../src/index.js'
import { makeRng, type Rng } from '../helpers/rng.js'
import { bytesEqual, caught, removeTmpDirs, tmpStorePath } from '../helpers/tmp.js'
import { runVerify } from '../helpers/verify.js'

afterAll(removeTmpDirs)

const REGIONS = { ram: { size: 256 * 1024, chunkSize: 4096 }, disk: { size: 512 * 1024, chunkSize: 65536 } }
type Name = keyof typeof REGIONS

async function bytesOf(stream: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const c of stream) parts.push(Buffer.from(c))
  return Buffer.concat(parts)
}

function source(buf: Uint8Array, piece = 7919): AsyncIterable<Uint8Array> {
  return (async function* () {
    for (let at = 0; at < buf.length; at += piece) yield buf.subarray(at, at + piece)
  })()
}

async function catalog(store: CkptStore): Promise<string[]> {
  const out: string[] = []
  for await (const e of store.log()) out.push(`${e.timeline}@${e.vtime}=${e.cid}`)
  return out
}

function mutate(rng: Rng, buf: Uint8Array, g: { size: number; chunkSize: number }, n: number): number[] {
  const chunks = Math.ceil(g.size / g.chunkSize)
  const dirty = new Set<number>()
  for (let k = 0; k < n; k++) {
    const i = rng.int(0, chunks)
    const start = i * g.chunkSize
    const end = Math.min(g.size, start + g.chunkSize)
    const kind = rng.int(0, 4)
    if (kind === 0) buf.fill(0, start, end)
    else if (kind === 1) buf.set(rng.bytes(end - start), start)
    else buf.writeUInt32LE?.(rng.u32(), start + rng.int(0, (end - start) >> 2) * 4)
    if (kind === 3) buf.fill(rng.int(1, 255), start, start + 64)
    dirty.add(i)
  }
  return [...dirty]
}

interface Snap {
  vtime: bigint
  cid: string
  ram: Buffer
  disk: Buffer
}

/** A timeline of n checkpoints with dirty hints, blobs now and then; returns every state. */
async function record(store: CkptStore, name: string, n: number, seed: number, start = 0): Promise<{ tl: Timeline; snaps: Snap[] }> {
  const rng = makeRng(seed)
  const ram = Buffer.alloc(REGIONS.ram.size)
  const disk = Buffer.alloc(REGIONS.disk.size)
  for (let i = 0; i < ram.length; i += 4096) if (rng.chance(0.6)) ram.set(rng.bytes(4096), i)
  for (let i = 0; i < disk.length; i += 65536) if (rng.chance(0.5)) disk.set(rng.bytes(65536), i)
  const tl = await store.timeline(name, { regions: REGIONS })
  const snaps: Snap[] = []
  for (let k = 0; k < n; k++) {
    const vtime = BigInt(start + k) * 10_000_000n
    const regions: Record<string, { data: Buffer; dirty?: number[] }> = {}
    if (k === 0) {
      regions.ram = { data: ram }
      regions.disk = { data: disk }
    } else {
      regions.ram = { data: ram, dirty: mutate(rng, ram, REGIONS.ram, rng.int(1, 6)) }
      if (rng.chance(0.3)) regions.disk = { data: disk, dirty: mutate(rng, disk, REGIONS.disk, 1) }
    }
    const blobs = k % 50 === 0 ? { cpu: rng.bytes(rng.int(10, 3000)) } : undefined
    const ck = await tl.checkpoint({ vtime, regions, blobs, meta: k % 100 === 0 ? { label: `step ${k}` } : {} })
    snaps.push({ vtime, cid: ck.cid.toString(), ram: Buffer.from(ram), disk: Buffer.from(disk) })
  }
  return { tl, snaps }
}

async function expectRestores(store: CkptStore, snaps: Snap[], every = 1): Promise<void> {
  const ram = Buffer.alloc(REGIONS.ram.size)
  const disk = Buffer.alloc(REGIONS.disk.size)
  for (let i = 0; i < snaps.length; i += every) {
    const s = snaps[i]!
    await store.restore(s.cid, 'ram', ram)
    await store.restore(s.cid, 'disk', disk)
    expect(ram.equals(s.ram), `ram of ${s.vtime}`).toBe(true)
    expect(disk.equals(s.disk), `disk of ${s.vtime}`).toBe(true)
  }
}

let src: CkptStore
let snaps: Snap[]
let full: Buffer

beforeAll(async () => {
  src = await openStore(tmpStorePath('ckpt-bundle-src-'))
  snaps = (await record(src, 'run', 1000, 1)).snaps
  full = await bytesOf(exportBundle(src, snaps.map((s) => s.cid)))
}, 120_000)

afterAll(async () => {
  await src?.close()
})

describe('bundle round trip', () => {
  it('1,000 checkpoints: every one restores byte-identical, seeks the same, and the catalog matches', async () => {
    const dst = await openStore(tmpStorePath('ckpt-bundle-dst-'))
    try {
      const s = await importBundle(dst, source(full))
      expect(s.checkpoints).toBe(1000)
      expect(s.alreadyPresent).toBe(0)
      expect(s.timelines).toEqual(['run'])
      expect(await catalog(dst)).toEqual(await catalog(src))
      await expectRestores(dst, snaps)
      const rng = makeRng(9)
      for (let i = 0; i < 200; i++) {
        const v = BigInt(rng.int(0, 1000 * 10_000_000 + 5))
        expect((await dst.seek('run', v))?.cid.toString()).toBe((await src.seek('run', v))?.cid.toString())
      }
      for (const k of [0, 50, 500, 950]) expect(bytesEqual(await dst.readBlob(snaps[k]!.cid, 'cpu'), await src.readBlob(snaps[k]!.cid, 'cpu'))).toBe(true)
      expect((await dst.manifest(snaps[100]!.cid)).meta).toEqual({ label: 'step 100' })
      // tree nodes are stored as deltas again: the imported store is about as small as the source
      const [a, b] = [await src.stats(), await dst.stats()]
      expect(b.blocks).toBe(a.blocks)
      expect(b.packBytes).toBeLessThan(a.packBytes * 1.15)
    } finally {
      await dst.close()
    }
  }, 120_000)

  it('every block appears once; the CAR is header + sections with the checkpoints as roots', async () => {
    const r = new CarReader(source(full))
    const h = await r.header()
    expect(h.roots.map((x) => CID.decode(x).toString())).toEqual(snaps.map((s) => s.cid))
    const seen = new Set<string>()
    let count = 0
    for await (const sec of r.sections()) {
      const k = Buffer.from(sec.cid).toString('hex')
      expect(seen.has(k)).toBe(false)
      seen.add(k)
      count++
    }
    expect(count).toBe((await src.stats()).blocks)
  })

  it('importing the same bundle twice is a no-op', async () => {
    const dst = await openStore(tmpStorePath('ckpt-bundle-twice-'))
    try {
      await importBundle(dst, source(full))
      const before = await dst.stats()
      const again = await importBundle(dst, source(full))
      expect(again.checkpoints).toBe(0)
      expect(again.alreadyPresent).toBe(1000)
      expect(again.newBlocks).toBe(0)
      const after = await dst.stats()
      expect(after.packBytes).toBe(before.packBytes)
      expect(after.checkpoints).toBe(1000)
    } finally {
      await dst.close()
    }
  }, 60_000)

  it('a thin bundle (--since) is a small fraction of the full one and imports where the base is', async () => {
    const base = snaps[899]!
    const head = snaps.slice(900)
    const thin = await bytesOf(exportBundle(src, head.map((s) => s.cid), { since: [base.cid] }))
    expect(thin.length).toBeLessThan(full.length * 0.2)
    const baseOnly = await bytesOf(exportBundle(src, snaps.slice(0, 900).map((s) => s.cid)))

    const dst = await openStore(tmpStorePath('ckpt-bundle-thin-'))
    try {
      // without the base the thin bundle is incomplete: rejected, nothing visible
      const e = await caught(() => importBundle(dst, source(thin)))
      expect(e.code).toBe('CKPT_BUNDLE_INCOMPLETE')
      expect(await catalog(dst)).toEqual([])
      await importBundle(dst, source(baseOnly))
      const s = await importBundle(dst, source(thin))
      expect(s.checkpoints).toBe(100)
      expect(await catalog(dst)).toEqual(await catalog(src))
      await expectRestores(dst, head, 7)
    } finally {
      await dst.close()
    }
  }, 60_000)

  for (const compress of ['zstd', 'gzip'] as const) {
    it(`a ${compress}-compressed bundle is recognised on import; cut short, it is CKPT_BAD_BUNDLE`, async () => {
      const some = snaps.slice(0, 40).map((s) => s.cid)
      const packed = await bytesOf(exportBundle(src, some, { compress }))
      const plain = await bytesOf(exportBundle(src, some))
      expect(packed.length).toBeLessThan(plain.length)
      const dst = await openStore(tmpStorePath(`ckpt-bundle-${compress}-`))
      try {
        const cut = await caught(() => importBundle(dst, source(packed.subarray(0, packed.length - 100))))
        expect(['CKPT_BAD_BUNDLE']).toContain(cut.code)
        expect(await catalog(dst)).toEqual([])
        const s = await importBundle(dst, source(packed))
        expect(s.checkpoints).toBe(40)
        await expectRestores(dst, snaps.slice(0, 40), 9)
      } finally {
        await dst.close()
      }
    })
  }
})

describe('an import committed in small steps', () => {
  it('commits its blocks in ~100 steps: every checkpoint restores and verify is clean', async () => {
    const dst = await openStore(tmpStorePath('ckpt-bundle-steps-'))
    // ~100 step commits over the bundle, each after the batches dispatched before it are placed
    const s = await importBundle(dst, source(full, 65536), { stageLimit: Math.ceil(full.length / 400) })
    expect(s.checkpoints).toBe(snaps.length)
    await expectRestores(dst, snaps, 37)
    const v = (await runVerify(dst)).summary
    expect(v.clean).toBe(true)
    await dst.close()
  })

  it('a bad block after many step commits: CKPT_HASH_MISMATCH, no checkpoint visible, then the good bundle imports', async () => {
    const dst = await openStore(tmpStorePath('ckpt-bundle-steps-bad-'))
    const parsed = await sectionsOf(full)
    // a chunk near the end, after most step commits have been made
    let k = Math.floor(parsed.sections.length * 0.9)
    while (parsed.sections[k]!.cid[1] !== 0x55) k++
    const sec = parsed.sections[k]!
    const car = Buffer.from(full)
    car[sec.offset + sectionPrefix(sec.cid, sec.block.length).length + (sec.block.length >> 1)]! ^= 0x01
    const e = await caught(() => importBundle(dst, source(car, 65536), { stageLimit: Math.ceil(full.length / 400) }))
    expect(e.code).toBe('CKPT_HASH_MISMATCH')
    expect(await catalog(dst)).toEqual([])
    expect((await runVerify(dst)).summary.clean).toBe(true)
    const s = await importBundle(dst, source(full, 65536), { stageLimit: Math.ceil(full.length / 400) })
    expect(s.checkpoints).toBe(snaps.length)
    await expectRestores(dst, snaps, 101)
    await dst.close()
  })
})

describe('timelines travel with their checkpoints', () => {
  it('a timeline of the same name with another history is never merged: --as or a prefix', async () => {
    const other = await openStore(tmpStorePath('ckpt-bundle-other-'))
    try {
      await record(other, 'run', 3, 77)
      const before = await catalog(other)
      const part = await bytesOf(exportBundle(src, snaps.slice(0, 5).map((s) => s.cid)))
      const e = await caught(() => importBundle(other, source(part)))
      expect(e.code).toBe('CKPT_TIMELINE_CONFLICT')
      expect(await catalog(other)).toEqual(before)
      const a = await importBundle(other, source(part), { as: 'run-from-src' })
      expect(a.timelines).toEqual(['run-from-src'])
      const p = await importBundle(other, source(part), { timelinePrefix: 'src/' })
      expect(p.timelines).toEqual(['src/run'])
      expect((await other.seek('src/run', 40_000_000n))?.cid.toString()).toBe(snaps[4]!.cid)
      // the same history continues: later checkpoints of the lineage merge into it
      const more = await bytesOf(exportBundle(src, snaps.slice(5, 10).map((s) => s.cid), { since: [snaps[4]!.cid] }))
      const m = await importBundle(other, source(more), { as: 'run-from-src' })
      expect(m.checkpoints).toBe(5)
      expect((await other.seek('run-from-src', 1n << 60n))?.cid.toString()).toBe(snaps[9]!.cid)
    } finally {
      await other.close()
    }
  })

  it('an import moves an open timeline handle: dirty hints relative to the old head are refused', async () => {
    const dst = await openStore(tmpStorePath('ckpt-bundle-open-'))
    try {
      await importBundle(dst, source(await bytesOf(exportBundle(src, [snaps[0]!.cid]))))
      const tl = await dst.timeline('run')
      await importBundle(dst, source(await bytesOf(exportBundle(src, [snaps[1]!.cid], { since: [snaps[0]!.cid] }))))
      const ram = Buffer.from(snaps[1]!.ram)
      const e = await caught(() => tl.checkpoint({ vtime: 20_000_000n, regions: { ram: { data: ram, dirty: [0] } } }))
      expect(e.code).toBe('CKPT_PREVIOUS_FAILED')
      const v = await caught(() => tl.checkpoint({ vtime: 5_000_000n, regions: { ram: { data: ram } } }))
      expect(v.code).toBe('CKPT_VTIME_ORDER')
      // the refused checkpoint still took its vtime (SPEC: CKPT_VTIME_ORDER); a full scan sets a new baseline
      const ok = await tl.checkpoint({ vtime: 30_000_000n, regions: { ram: { data: ram } } })
      expect((await dst.manifest(ok.cid)).parent?.toString()).toBe(CID.parse(snaps[1]!.cid).toString())
    } finally {
      await dst.close()
    }
  })
})

// ------------------------------------------------------------------------ bad bundles

interface Section {
  cid: Uint8Array
  block: Uint8Array
  offset: number
}

async function sectionsOf(car: Uint8Array): Promise<{ roots: Uint8Array[]; sections: Section[] }> {
  const r = new CarReader(source(car))
  const { roots } = await r.header()
  const sections: Section[] = []
  for await (const s of r.sections()) sections.push({ cid: s.cid.slice(), block: s.block.slice(), offset: s.offset })
  return { roots, sections }
}

function carOf(roots: Uint8Array[], sections: { cid: Uint8Array; block: Uint8Array }[]): Buffer {
  const parts: Uint8Array[] = [encodeCarHeader(roots)]
  for (const s of sections) parts.push(sectionPrefix(s.cid, s.block.length), s.block)
  return Buffer.concat(parts)
}

describe('bad bundles are rejected with a CKPT_* code and change nothing visible', () => {
  let small: Buffer
  let parsed: { roots: Uint8Array[]; sections: Section[] }
  let dst: CkptStore
  beforeAll(async () => {
    small = await bytesOf(exportBundle(src, snaps.slice(0, 6).map((s) => s.cid)))
    parsed = await sectionsOf(small)
    dst = await openStore(tmpStorePath('ckpt-bundle-bad-'))
  })
  afterAll(async () => {
    await dst.close()
  })

  async function rejects(car: Uint8Array, code: string | string[]): Promise<Record<string, unknown> | undefined> {
    const before = await catalog(dst)
    const e = await caught(() => importBundle(dst, source(car)))
    expect(Array.isArray(code) ? code : [code]).toContain(e.code)
    expect(e.message.length).toBeGreaterThan(10)
    expect(await catalog(dst)).toEqual(before)
    return e.details
  }

  it('truncated anywhere', async () => {
    const rng = makeRng(3)
    const cuts = [0, 1, 5, 20, small.length - 1, small.length - 33, ...Array.from({ length: 40 }, () => rng.int(1, small.length))]
    for (const cut of cuts) await rejects(small.subarray(0, cut), ['CKPT_BAD_BUNDLE', 'CKPT_BUNDLE_INCOMPLETE'])
  })

  it('a flipped byte inside a block: CKPT_HASH_MISMATCH naming the CID and offset', async () => {
    for (const k of [0, 5, parsed.sections.length - 1]) {
      const s = parsed.sections[k]!
      const car = Buffer.from(small)
      const prefix = sectionPrefix(s.cid, s.block.length).length
      car[s.offset + prefix + Math.floor(s.block.length / 2)]! ^= 0x40
      const d = await rejects(car, 'CKPT_HASH_MISMATCH')
      expect(d?.cid).toBe(CID.decode(s.cid).toString())
      expect(d?.offset).toBe(s.offset)
    }
  })

  it('a missing block: CKPT_BUNDLE_INCOMPLETE naming it', async () => {
    const k = parsed.sections.findIndex((s) => s.cid[1] === 0x55)
    const gone = parsed.sections[k]!
    const d = await rejects(carOf(parsed.roots, parsed.sections.filter((_, i) => i !== k)), 'CKPT_BUNDLE_INCOMPLETE')
    expect(d?.cid).toBe(CID.decode(gone.cid).toString())
  })

  it('a duplicate root, no roots, a root that is not a manifest, a root nowhere', async () => {
    await rejects(carOf([parsed.roots[0]!, parsed.roots[1]!, parsed.roots[0]!], parsed.sections), 'CKPT_BAD_BUNDLE')
    await rejects(carOf([], parsed.sections), 'CKPT_BAD_BUNDLE')
    const raw = parsed.sections.find((s) => s.cid[1] === 0x55)!
    await rejects(carOf([raw.cid], parsed.sections), 'CKPT_BAD_BUNDLE')
    const node = parsed.sections.find((s) => s.cid[1] === 0x71 && s.block[0]! >> 5 === 4)!
    await rejects(carOf([node.cid], parsed.sections), ['CKPT_BAD_MANIFEST', 'CKPT_BAD_BUNDLE'])
    const nowhere = new Uint8Array(parsed.roots[0]!)
    nowhere[10]! ^= 1
    await rejects(carOf([nowhere], parsed.sections), 'CKPT_BUNDLE_INCOMPLETE')
  })

  it('garbage, an absurd header or section length, a non-minimal varint', async () => {
    const rng = makeRng(4)
    await rejects(Buffer.from(rng.bytes(5000)), 'CKPT_BAD_BUNDLE')
    await rejects(Buffer.from('this is not a CAR file at all, just some text\n'.repeat(20)), 'CKPT_BAD_BUNDLE')
    await rejects(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3]), 'CKPT_BAD_BUNDLE')
    const header = encodeCarHeader(parsed.roots)
    await rejects(Buffer.concat([header, Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0x7f])]), 'CKPT_BAD_BUNDLE')
    await rejects(Buffer.concat([header, Buffer.from([0x80, 0x80, 0x00])]), 'CKPT_BAD_BUNDLE')
    await rejects(Buffer.concat([header, Buffer.from([0x01, 0x01])]), 'CKPT_BAD_BUNDLE')
    await rejects(new Uint8Array(0), 'CKPT_BAD_BUNDLE')
  })

  it('a block under an unknown codec or hash: CKPT_BAD_CID with its offset', async () => {
    const data = new TextEncoder().encode('hello')
    const foreign = CID.createV1(0x55, await sha256.digest(data))
    const d = await rejects(carOf(parsed.roots, [{ cid: foreign.bytes, block: data }, ...parsed.sections]), 'CKPT_BAD_CID')
    expect(typeof d?.offset).toBe('number')
    const dagPb = CID.createV1(0x70, (await sha256.digest(data)))
    await rejects(carOf(parsed.roots, [...parsed.sections, { cid: dagPb.bytes, block: data }]), 'CKPT_BAD_CID')
  })

  it('a CARv2 wrapper is read by its data payload; a broken one is CKPT_BAD_BUNDLE', async () => {
    const v1 = small
    const header = Buffer.alloc(40)
    const dataOffset = CARV2_PRAGMA.length + 40 + 7
    header.writeBigUInt64LE(BigInt(dataOffset), 16)
    header.writeBigUInt64LE(BigInt(v1.length), 24)
    header.writeBigUInt64LE(0n, 32)
    const v2 = Buffer.concat([CARV2_PRAGMA, header, Buffer.alloc(7), v1, Buffer.from('index bytes follow')])
    const fresh = await openStore(tmpStorePath('ckpt-bundle-v2-'))
    try {
      const s = await importBundle(fresh, source(v2))
      expect(s.carVersion).toBe(2)
      expect(s.checkpoints).toBe(6)
    } finally {
      await fresh.close()
    }
    const bad = Buffer.from(v2)
    bad.writeBigUInt64LE(BigInt(v1.length + 1000), CARV2_PRAGMA.length + 24)
    await rejects(bad, 'CKPT_BAD_BUNDLE')
    await rejects(v2.subarray(0, CARV2_PRAGMA.length + 20), 'CKPT_BAD_BUNDLE')
  })

  it('fuzz: mutated bundles and random bytes never crash or hang, and never import partially', async () => {
    const rng = makeRng(11)
    const ops = ['flip', 'cut', 'insert', 'delete', 'splice', 'zero', 'random'] as const
    const codes = new Set<string>()
    for (let i = 0; i < 250; i++) {
      let car = Buffer.from(small)
      const op = ops[i % ops.length]!
      const at = rng.int(0, car.length)
      if (op === 'flip') car[at]! ^= 1 << rng.int(0, 8)
      else if (op === 'cut') car = car.subarray(0, at)
      else if (op === 'insert') car = Buffer.concat([car.subarray(0, at), Buffer.from(rng.bytes(rng.int(1, 40))), car.subarray(at)])
      else if (op === 'delete') car = Buffer.concat([car.subarray(0, at), car.subarray(Math.min(car.length, at + rng.int(1, 40)))])
      else if (op === 'splice') car = Buffer.concat([car.subarray(0, at), car.subarray(rng.int(0, car.length))])
      else if (op === 'zero') car.fill(0, at, at + rng.int(1, 64))
      else car = Buffer.from(rng.bytes(rng.int(0, 3000)))
      const before = await catalog(dst)
      let code = 'imported'
      try {
        await importBundle(dst, source(car, rng.int(1, 5000)))
      } catch (err) {
        code = (err as { code?: string }).code ?? `uncoded ${(err as Error).message}`
      }
      codes.add(code)
      if (code === 'imported') {
        // a harmless mutation (e.g. trailing garbage cut off at a section boundary): what became visible restores
        for (const e of (await catalog(dst)).filter((x) => !before.includes(x))) {
          const cid = e.split('=')[1]!
          const snap = snaps.find((s) => s.cid === cid)!
          const out = Buffer.alloc(REGIONS.ram.size)
          await dst.restore(cid, 'ram', out)
          expect(out.equals(snap.ram)).toBe(true)
        }
      } else {
        expect(code, `mutation ${i} (${op} at ${at})`).toMatch(/^CKPT_[A-Z_]+$/)
        expect(await catalog(dst)).toEqual(before)
      }
    }
    expect(codes.has('CKPT_BAD_BUNDLE')).toBe(true)
    expect(codes.has('CKPT_HASH_MISMATCH')).toBe(true)
  }, 120_000)
})

describe('bundle ordering', () => {
  it('a CAR with its blocks in another order (manifests first, nodes shuffled) imports the same', async () => {
    const part = await bytesOf(exportBundle(src, snaps.slice(0, 30).map((s) => s.cid)))
    const { roots, sections } = await sectionsOf(part)
    const rng = makeRng(21)
    const reordered = [...sections.filter((s) => s.cid[1] === 0x71).reverse(), ...rng.shuffle(sections.filter((s) => s.cid[1] === 0x55))]
    const dst = await openStore(tmpStorePath('ckpt-bundle-order-'))
    try {
      const s = await importBundle(dst, source(carOf(roots, reordered)))
      expect(s.checkpoints).toBe(30)
      await expectRestores(dst, snaps.slice(0, 30), 3)
    } finally {
      await dst.close()
    }
  })
})

void ({} as Name)
