/**
 * A checkpoint is a complete DAG on its own (SPEC.md §3.3, §9): a Helia node (in-process, in-memory,
 * no network: test/helpers/helia.ts) that imports a bundle of one non-first checkpoint pins it
 * recursively, and the pin's DAG walk visits exactly that checkpoint's own blocks — not its parent's,
 * whatever else the node holds. Helia does not re-hash CAR blocks; ckpt's import does.
 */
import * as dagCbor from '@ipld/dag-cbor'
import { CarReader } from '@ipld/car'
import { CID } from 'multiformats/cid'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { exportBundle, importBundle, openStore, verifyStore, type CkptStore, type ExportOptions } from '../../src/index.js'
import { heliaImport, heliaPin, startHelia, type TestHelia } from '../helpers/helia.js'
import { makeRng } from '../helpers/rng.js'
import { removeTmpDirs, tmpStorePath } from '../helpers/tmp.js'

afterAll(removeTmpDirs)

const RAM = { size: 512 * 1024 + 4096 * 3, chunkSize: 4096 }
const DISK = { size: 256 * 1024, chunkSize: 16384 }

let store: CkptStore
const cids: CID[] = []

beforeAll(async () => {
  store = await openStore(tmpStorePath('ckpt-pin-'))
  const rng = makeRng(12)
  const ram = Buffer.alloc(RAM.size)
  const disk = Buffer.alloc(DISK.size)
  for (let i = 0; i < ram.length; i += 4096) if (rng.chance(0.6)) ram.set(rng.bytes(4096), i)
  for (let i = 0; i < disk.length; i += 16384) if (rng.chance(0.5)) disk.set(rng.bytes(16384), i)
  const tl = await store.timeline('vm', { regions: { ram: RAM, disk: DISK } })
  for (let k = 0; k < 5; k++) {
    const dirty = k === 0 ? undefined : [rng.int(0, 130), rng.int(0, 130), rng.int(0, 130)]
    for (const p of dirty ?? []) ram.set(rng.bytes(4096), p * 4096)
    if (k === 3) disk.set(rng.bytes(16384), 16384 * 5)
    const ck = await tl.checkpoint({ vtime: k * 1000, regions: { ram: { data: ram, dirty }, disk: { data: disk } }, blobs: { cpu: rng.bytes(300) } })
    cids.push(ck.cid)
  }
})

afterAll(async () => {
  await store?.close()
})

async function bundle(refs: CID[], opts: ExportOptions = {}): Promise<Uint8Array> {
  const parts: Uint8Array[] = []
  for await (const c of exportBundle(store, refs, opts)) parts.push(c)
  return Buffer.concat(parts)
}

/** The CIDs of a CAR's blocks. */
async function carCids(car: Uint8Array): Promise<string[]> {
  const reader = await CarReader.fromBytes(car)
  const out: string[] = []
  for await (const b of reader.blocks()) out.push(b.cid.toString())
  return out
}

/** A checkpoint's own blocks: those of a bundle of it alone (ckpt's export walks its DAG, the parent not followed). */
async function ownBlocks(cid: CID): Promise<Set<string>> {
  return new Set(await carCids(await bundle([cid])))
}

async function withHelia<T>(f: (helia: TestHelia) => Promise<T>): Promise<T> {
  const helia = await startHelia()
  try {
    return await f(helia)
  } finally {
    await helia.stop()
  }
}

describe('IPFS: a checkpoint is a complete DAG on its own', () => {
  it('the manifests ckpt writes hold the parent as bytes (version 2): to dag-cbor, no link to the parent', async () => {
    const reader = await CarReader.fromBytes(await bundle([cids[3]!]))
    const m = dagCbor.decode<Record<string, unknown>>((await reader.get(cids[3]! as never))!.bytes) // as never: @ipld/car has its own multiformats
    expect(m.v).toBe(2)
    expect(m.parent).toBeUndefined()
    expect(CID.decode(m.parentCid as Uint8Array).equals(cids[2])).toBe(true)
    expect((await store.manifest(cids[3]!)).parent?.equals(cids[2])).toBe(true)
    expect((await store.manifest(cids[0]!)).parent).toBeNull()
  })

  it('a Helia node imports a bundle of one non-first checkpoint and pins it: the walk visits exactly its own blocks', async () => {
    const car = await bundle([cids[3]!])
    const own = await ownBlocks(cids[3]!)
    expect(own.has(cids[2]!.toString())).toBe(false)
    // the checkpoint's own block count, counted by ckpt on another store: what the bundle's import stores
    const dst = await openStore(tmpStorePath('ckpt-pin-dst-'))
    try {
      const s = await importBundle(dst, (async function* () {
        yield car
      })())
      expect(s.checkpoints).toBe(1)
      expect((await dst.stats()).blocks).toBe(own.size)
      const it = verifyStore(dst, { deep: true })
      let r = await it.next()
      while (!r.done) r = await it.next()
      expect(r.value.clean).toBe(true)
    } finally {
      await dst.close()
    }
    await withHelia(async (helia) => {
      await heliaImport(helia, car)
      const walked = await heliaPin(helia, cids[3]!)
      expect(walked[0]).toBe(cids[3]!.toString())
      expect(new Set(walked)).toEqual(own)
      expect(new Set(walked).size).toBe(own.size)
      expect(await helia.pins.isPinned(cids[3]!)).toBe(true)
    })
  })

  it('pinning one checkpoint of a whole-history bundle walks that checkpoint only, not its ancestors', async () => {
    const car = await bundle(cids)
    const all = new Set(await carCids(car))
    await withHelia(async (helia) => {
      await heliaImport(helia, car)
      for (const k of [1, 4]) {
        const own = await ownBlocks(cids[k]!)
        const walked = new Set(await heliaPin(helia, cids[k]!))
        expect(walked).toEqual(own)
        for (let j = 0; j < k; j++) expect(walked.has(cids[j]!.toString())).toBe(false)
        expect(walked.size).toBeLessThan(all.size)
      }
    })
  })

  it('a thin bundle on top of the bundle of an earlier checkpoint pins (the checkpoints between are absent)', async () => {
    const base = await bundle([cids[1]!])
    const thin = await bundle([cids[4]!], { since: [cids[1]!] })
    expect((await carCids(thin)).length).toBeLessThan((await ownBlocks(cids[4]!)).size)
    await withHelia(async (helia) => {
      await heliaImport(helia, base)
      await heliaImport(helia, thin)
      expect(new Set(await heliaPin(helia, cids[4]!))).toEqual(await ownBlocks(cids[4]!))
    })
  })

  it('Helia takes a block that does not match its CID; ckpt import refuses it (CKPT_HASH_MISMATCH)', async () => {
    const reader = await CarReader.fromBytes(await bundle([cids[3]!]))
    const { CarWriter } = await import('@ipld/car')
    const { writer, out } = CarWriter.create([cids[3]! as never])
    const parts: Uint8Array[] = []
    const collected = (async () => {
      for await (const p of out) parts.push(p)
    })()
    let flipped: CID | undefined
    for await (const b of reader.blocks()) {
      if (!flipped && b.cid.code === 0x55) {
        flipped = b.cid
        const bytes = Uint8Array.from(b.bytes)
        bytes[0] = bytes[0]! ^ 0xff
        await writer.put({ cid: b.cid, bytes })
      } else await writer.put(b)
    }
    await writer.close()
    await collected
    const bad = Buffer.concat(parts)
    expect(flipped).toBeDefined()
    await withHelia(async (helia) => {
      await heliaImport(helia, bad)
      expect((await heliaPin(helia, cids[3]!)).length).toBeGreaterThan(0)
    })
    const dst = await openStore(tmpStorePath('ckpt-pin-bad-'))
    try {
      await expect(
        importBundle(dst, (async function* () {
          yield bad
        })()),
      ).rejects.toMatchObject({ code: 'CKPT_HASH_MISMATCH' })
      expect((await dst.stats()).checkpoints).toBe(0)
    } finally {
      await dst.close()
    }
  })
})
