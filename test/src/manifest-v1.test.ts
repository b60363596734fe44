/**
 * Version-1 manifests (the parent a tag-42 link) are still read everywhere (SPEC.md §3.3): the golden
 * fixture stores hold them (written before version 2). Their bundles import and verify; a timeline
 * continued from a version-1 head writes version 2 with the old head as parentCid; thin bundles,
 * diff, fork, gc and an index rebuild work across the two versions; a Helia node pins a version-2
 * checkpoint whose parent is version 1, and cannot pin a version-1 one (its parent link leads to
 * blocks it lacks: the problem version 2 solves).
 */
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import * as dagCbor from '@ipld/dag-cbor'
import { CarReader } from '@ipld/car'
import { CID } from 'multiformats/cid'
import { afterAll, describe, expect, it } from 'vitest'
import { exportBundle, importBundle, openStore, repairStore, verifyStore, type CkptStore, type ExportOptions } from '../../src/index.js'
import { heliaImport, heliaPin, startHelia } from '../helpers/helia.js'
import { removeTmpDirs, tmpDir, tmpStorePath } from '../helpers/tmp.js'

afterAll(removeTmpDirs)

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/stores')
const PAGE = 4096

/** A writable copy of a golden fixture store (four checkpoints fx@0..30 of version-1 manifests). */
function fixtureCopy(name: string): string {
  const dir = path.join(tmpDir('ckpt-mv1-'), 'store')
  fs.cpSync(path.join(FIXTURES, name, 'store'), dir, { recursive: true })
  return dir
}

async function bundle(store: CkptStore, refs: CID[], opts: ExportOptions = {}): Promise<Uint8Array> {
  const parts: Uint8Array[] = []
  for await (const c of exportBundle(store, refs, opts)) parts.push(c)
  return Buffer.concat(parts)
}

async function importInto(store: CkptStore, car: Uint8Array) {
  return importBundle(
    store,
    (async function* () {
      yield car
    })(),
  )
}

async function verifiedClean(store: CkptStore): Promise<number> {
  const it = verifyStore(store, { deep: true })
  const findings: unknown[] = []
  let r = await it.next()
  for (; !r.done; r = await it.next()) findings.push(r.value)
  expect(findings).toEqual([])
  expect(r.value.clean).toBe(true)
  return r.value.checkpoints
}

/** The manifest versions of a bundle's roots, read with generic dag-cbor. */
async function rootVersions(car: Uint8Array): Promise<number[]> {
  const reader = await CarReader.fromBytes(car)
  const out: number[] = []
  for (const root of await reader.getRoots()) out.push(dagCbor.decode<{ v: number }>((await reader.get(root))!.bytes).v)
  return out
}

async function ram(store: CkptStore, cid: CID): Promise<Buffer> {
  const out = Buffer.alloc(8 * PAGE)
  await store.restore(cid, 'ram', out)
  return out
}

async function log(store: CkptStore, timeline?: string): Promise<CID[]> {
  const out: CID[] = []
  for await (const e of store.log(timeline)) out.push(e.cid)
  return out
}

describe('version-1 manifests are still read', () => {
  for (const fixture of ['clean-v2', 'clean-v1']) {
    it(`${fixture}: a bundle of one non-first version-1 checkpoint, and of all, import and verify`, async () => {
      const src = await openStore(fixtureCopy(fixture))
      try {
        const cks = await log(src, 'fx')
        expect(cks.length).toBe(4)
        const one = await bundle(src, [cks[2]!])
        expect(await rootVersions(one)).toEqual([1])
        const m = dagCbor.decode<Record<string, unknown>>((await (await CarReader.fromBytes(one)).get(cks[2]! as never))!.bytes) // as never: @ipld/car's own multiformats
        expect(CID.asCID(m.parent)?.equals(cks[1])).toBe(true)
        expect((await src.manifest(cks[2]!)).parent?.equals(cks[1])).toBe(true)
        const all = await bundle(src, cks)
        expect(await rootVersions(all)).toEqual([1, 1, 1, 1])
        for (const [car, n] of [[one, 1], [all, 4]] as const) {
          const dst = await openStore(tmpStorePath('ckpt-mv1-dst-'))
          try {
            expect((await importInto(dst, car)).checkpoints).toBe(n)
            expect(await verifiedClean(dst)).toBe(n)
            for (const c of await log(dst)) expect((await ram(dst, c)).equals(await ram(src, c))).toBe(true)
            expect((await dst.manifest(cks[2]!)).parent?.equals(cks[1])).toBe(true)
          } finally {
            await dst.close()
          }
        }
      } finally {
        await src.close()
      }
    })
  }

  it('a timeline continued from a version-1 head writes version 2; thin bundles, diff, fork, gc and a rebuild span both', async () => {
    const dir = fixtureCopy('clean-v2')
    let src = await openStore(dir)
    const cks = await log(src, 'fx')
    const head = cks[3]!
    const data = await ram(src, head)
    data.fill(0x5a, 4 * PAGE, 5 * PAGE)
    const tl = await src.timeline('fx')
    const next = (await tl.checkpoint({ vtime: 40, regions: { ram: { data } } })).cid
    expect((await src.manifest(next)).parent?.equals(head)).toBe(true)
    const forked = (await src.fork('fx-branch', cks[1]!)).cid
    expect((await src.manifest(forked)).parent?.equals(cks[1])).toBe(true)
    const diff = []
    for await (const d of src.diff(head, next)) diff.push(d)
    expect(diff).toEqual([{ kind: 'chunks', region: 'ram', start: 4, end: 5, chunkSize: PAGE }])

    // a receiver holding the version-1 checkpoints takes the version-2 one as a thin bundle
    const dst = await openStore(tmpStorePath('ckpt-mv1-thin-'))
    try {
      await importInto(dst, await bundle(src, cks))
      const thin = await bundle(src, [next], { since: [head] })
      expect(await rootVersions(thin)).toEqual([2])
      const thinBlocks = []
      for await (const b of (await CarReader.fromBytes(thin)).blocks()) thinBlocks.push(b.cid.toString())
      expect(thinBlocks.length).toBeLessThan(4) // the manifest, the changed page, the nodes above it
      const s = await importInto(dst, thin)
      expect(s.checkpoints).toBe(1)
      expect((await log(dst, 'fx')).map(String)).toEqual([...cks, next].map(String))
      expect(await verifiedClean(dst)).toBe(5)
      expect((await ram(dst, next)).equals(data)).toBe(true)
    } finally {
      await dst.close()
    }

    // gc keeps both versions; the index rebuilt from the packs lists them all
    await src.gc()
    expect(await verifiedClean(src)).toBe(6)
    await src.close()
    await repairStore(dir, { rebuildIndex: true })
    src = await openStore(dir)
    try {
      expect((await log(src, 'fx')).map(String)).toEqual([...cks, next].map(String))
      expect((await log(src, 'fx-branch')).map(String)).toEqual([forked.toString()])
      expect(await verifiedClean(src)).toBe(6)
      expect((await ram(src, next)).equals(data)).toBe(true)
      expect((await src.manifest(next)).parent?.equals(head)).toBe(true)

      // Helia: the version-2 checkpoint pins from its bundle alone; the version-1 one does not
      const helia = await startHelia()
      try {
        await heliaImport(helia, await bundle(src, [next]))
        const walked = await heliaPin(helia, next)
        expect(walked).not.toContain(head.toString())
        await heliaImport(helia, await bundle(src, [cks[2]!]))
        await expect(heliaPin(helia, cks[2]!)).rejects.toThrow(/No block brokers|cannot be fetched/)
      } finally {
        await helia.stop()
      }
    } finally {
      await src.close()
    }
  })
})
