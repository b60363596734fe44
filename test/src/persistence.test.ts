/**
 * Persistence across close/reopen: several sessions on one store directory, each adding checkpoints
 * (starting with dirty-hint checkpoints right after the reopen); everything restores byte-identical,
 * the timeline continues where it stopped (vtime order enforced across sessions), stats are right.
 * One variant uses small packs so packs are sealed and new ones started.
 */
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { openStore, type CkptStore } from '../../src/index.js'
import { decodeFooter, FOOTER_SIZE } from '../../codecs/pack-format.js'
import { collect } from '../helpers/bytes.js'
import { makeRng, type Rng } from '../helpers/rng.js'
import { bytesEqual, caught, removeTmpDirs, tmpStorePath } from '../helpers/tmp.js'

afterAll(removeTmpDirs)

const GEO = { ram: { size: 512 * 1024, chunkSize: 4096 }, disk: { size: (1 << 20) + 1000, chunkSize: 65536 } }
type Name = keyof typeof GEO

interface Snap {
  vtime: bigint
  cid: string
  ram: Uint8Array
  disk: Uint8Array
  blob?: Uint8Array
}

/** Writes a few chunks (random, zero or repeated) and returns the dirty chunk indexes. */
function mutate(rng: Rng, buf: Uint8Array, g: { size: number; chunkSize: number }, n: number): number[] {
  const chunks = Math.ceil(g.size / g.chunkSize)
  const dirty = new Set<number>()
  for (let k = 0; k < n; k++) {
    const i = rng.chance(0.1) ? chunks - 1 : rng.int(0, chunks)
    const start = i * g.chunkSize
    const len = Math.min(g.chunkSize, g.size - start)
    const kind = rng.int(0, 4)
    if (kind === 0) buf.fill(0, start, start + len)
    else if (kind === 1 && i > 0) buf.copyWithin(start, 0, len)
    else buf.set(rng.bytes(len), start)
    dirty.add(i)
  }
  return [...dirty]
}

function packFiles(dir: string): string[] {
  return fs
    .readdirSync(path.join(dir, 'packs'))
    .filter((f) => f.endsWith('.pack'))
    .sort()
}

async function verifyAll(store: CkptStore, snaps: Snap[]): Promise<void> {
  const log = await collect(store.log('vm'))
  expect(log.map((e) => [e.vtime, e.cid.toString()])).toEqual(snaps.map((s) => [s.vtime, s.cid]))
  const out = { ram: new Uint8Array(GEO.ram.size), disk: new Uint8Array(GEO.disk.size) }
  for (const [k, s] of snaps.entries()) {
    for (const name of ['ram', 'disk'] as Name[]) {
      out[name].fill(0x3c)
      await store.restore(s.cid, name, out[name])
      expect(bytesEqual(out[name], s[name]), `${name} of checkpoint ${k} (vtime ${s.vtime})`).toBe(true)
    }
    if (s.blob) expect(bytesEqual(await store.readBlob(s.cid, 'cpu'), s.blob)).toBe(true)
  }
}

describe('persistence across reopen', () => {
  for (const variant of [
    { name: 'default packs', opts: {} as { packTargetSize?: number }, seed: 1 },
    { name: 'small packs (64 KiB target): sealed packs and new ones', opts: { packTargetSize: 64 * 1024 }, seed: 2 },
  ]) {
    it(variant.name, async () => {
      const dir = tmpStorePath('ckpt-persist-')
      const rng = makeRng(variant.seed * 31337)
      const live = { ram: new Uint8Array(GEO.ram.size), disk: new Uint8Array(GEO.disk.size) }
      live.ram.set(rng.bytes(GEO.ram.size / 2), 4096)
      live.disk.set(rng.bytes(300_000), 70_000)
      const snaps: Snap[] = []
      let vtime = 100n
      let blob: Uint8Array | undefined

      for (let session = 0; session < 5; session++) {
        const store = await openStore(dir, { ...variant.opts, threads: session % 2 === 0 ? undefined : 0 })
        try {
          // the store remembers everything from earlier sessions
          await verifyAll(store, snaps)
          expect((await store.stats()).checkpoints).toBe(snaps.length)
          // reopen the timeline: with its regions, or with none (then its stored ones are used)
          const tl = await store.timeline('vm', session % 2 === 0 ? { regions: GEO } : {})
          expect(tl.regions).toEqual(GEO)
          if (snaps.length > 0) {
            // the timeline continues: order is enforced against the last stored checkpoint
            const last = snaps[snaps.length - 1]!.vtime
            for (const v of [last, last - 1n]) {
              const err = await caught(() => tl.checkpoint({ vtime: v, regions: { ram: { data: live.ram } } }))
              expect(err.code).toBe('CKPT_VTIME_ORDER')
              expect(err.details?.last).toBe(last.toString())
            }
            expect((await store.resolve('vm')).toString()).toBe(snaps[snaps.length - 1]!.cid)
          }
          for (let step = 0; step < 6; step++) {
            const regions: Record<string, { data: Uint8Array; dirty?: number[] | { bitmap: Uint8Array } }> = {}
            const dRam = mutate(rng, live.ram, GEO.ram, rng.int(0, 30))
            const dDisk = mutate(rng, live.disk, GEO.disk, rng.int(0, 4))
            // right after a (re)open: dirty hints, relative to the previous session's last checkpoint
            const hinted = snaps.length > 0 && (step === 0 || rng.chance(0.6))
            if (hinted) {
              regions.ram = { data: live.ram, dirty: dRam }
              const bm = new Uint8Array(Math.ceil(17 / 8))
              for (const i of dDisk) bm[i >> 3]! |= 1 << (i & 7)
              regions.disk = { data: live.disk, dirty: { bitmap: bm } }
            } else {
              regions.ram = { data: live.ram }
              regions.disk = { data: live.disk }
            }
            if (step === 3 || rng.chance(0.3)) blob = rng.bytes(rng.int(0, 40_000))
            vtime += BigInt(rng.int(1, 1000))
            const c = await tl.checkpoint({ vtime, regions, blobs: blob ? { cpu: blob } : undefined })
            if (hinted) expect(c.stats.chunks).toBe(dRam.length + dDisk.length)
            snaps.push({ vtime, cid: c.cid.toString(), ram: live.ram.slice(), disk: live.disk.slice(), blob })
          }
          // a checkpoint of blobs only carries both regions over
          if (session === 2) {
            blob = rng.bytes(1000)
            vtime += 1n
            const c = await tl.checkpoint({ vtime, blobs: { cpu: blob } })
            const prev = snaps[snaps.length - 1]!
            snaps.push({ vtime, cid: c.cid.toString(), ram: prev.ram, disk: prev.disk, blob })
            const m = await store.manifest(c.cid)
            const pm = await store.manifest(prev.cid)
            expect(m.regions.ram!.root!.equals(pm.regions.ram!.root!)).toBe(true)
          }
          await verifyAll(store, snaps)
          const st = await store.stats()
          expect(st.checkpoints).toBe(snaps.length)
          expect(st.timelines).toBe(1)
        } finally {
          await store.close()
        }
        // the index and the pack files agree, and the lock note is gone
        expect(fs.existsSync(path.join(dir, 'lock.json'))).toBe(false)
      }

      // last look, read-only, with stats against the files on disk
      const store = await openStore(dir, { ...variant.opts, mustExist: true })
      try {
        await verifyAll(store, snaps)
        const st = await store.stats()
        const files = packFiles(dir)
        expect(st.packs).toBe(files.length)
        expect(st.packBytes).toBe(files.reduce((n, f) => n + fs.statSync(path.join(dir, 'packs', f)).size, 0))
        expect(st.blocks).toBeGreaterThan(0)
        if (variant.opts.packTargetSize) {
          expect(files.length).toBeGreaterThan(3)
          // every pack but the newest is sealed: it ends with the footer
          let sealed = 0
          for (const f of files) {
            const b = fs.readFileSync(path.join(dir, 'packs', f))
            if (decodeFooter(b.subarray(b.length - FOOTER_SIZE))) sealed++
          }
          expect(sealed).toBeGreaterThanOrEqual(files.length - 1)
        }
        // another timeline in the same store, then one more reopen
        const t2 = await store.timeline('other', { regions: { ram: GEO.ram } })
        await t2.checkpoint({ vtime: 1, regions: { ram: { data: snaps[0]!.ram } } })
      } finally {
        await store.close()
      }
      const s2 = await openStore(dir)
      try {
        expect((await s2.listTimelines()).map((t) => t.name).sort()).toEqual(['other', 'vm'])
        expect((await s2.stats()).checkpoints).toBe(snaps.length + 1)
        const m1 = await s2.manifest('other@1')
        const m0 = await s2.manifest(snaps[0]!.cid)
        expect(m1.regions.ram!.root!.equals(m0.regions.ram!.root!)).toBe(true)
        await verifyAll(s2, snaps)
      } finally {
        await s2.close()
      }
    })
  }
})

describe('damaged pack bytes after reopen', () => {
  it('every read path detects a flipped chunk byte; a failed restore to a file leaves the target untouched', async () => {
    const dir = tmpStorePath('ckpt-persist-dmg-')
    const g = { size: 256 * 1024, chunkSize: 4096 }
    const data = makeRng(5).bytes(g.size) // random: stored with identity, so the flip reaches the re-hash
    let store = await openStore(dir, { threads: 0 })
    const c = await (await store.timeline('t', { regions: { ram: g } })).checkpoint({ vtime: 1, regions: { ram: { data } } })
    const cid = c.cid.toString()
    await store.close()
    // the first entry of the first pack is a chunk (chunks are appended before nodes and the manifest)
    const pack = path.join(dir, 'packs', packFiles(dir)[0]!)
    const fd = fs.openSync(pack, 'r+')
    const at = 16 + 52 + 1000
    const b = Buffer.alloc(1)
    fs.readSync(fd, b, 0, 1, at)
    b[0]! ^= 0xff
    fs.writeSync(fd, b, 0, 1, at)
    fs.closeSync(fd)

    store = await openStore(dir)
    try {
      const e1 = await caught(() => store.restore(cid, 'ram', new Uint8Array(g.size)))
      expect(e1.code).toBe('CKPT_HASH_MISMATCH')
      expect(typeof e1.details?.cid).toBe('string')
      // exactly one chunk is damaged, and readChunk names it
      const bad: number[] = []
      for (let i = 0; i < g.size / g.chunkSize; i++) {
        try {
          const got = await store.readChunk(cid, 'ram', i)
          expect(bytesEqual(got, data.subarray(i * g.chunkSize, (i + 1) * g.chunkSize))).toBe(true)
        } catch (err) {
          expect((err as { code?: string }).code).toBe('CKPT_HASH_MISMATCH')
          expect((err as { details?: { cid?: string } }).details?.cid).toBe(e1.details?.cid)
          bad.push(i)
        }
      }
      expect(bad.length).toBe(1)
      // to a file: the existing target is not clobbered and no partial file is left behind
      const outDir = path.dirname(tmpStorePath('ckpt-persist-out-'))
      const target = path.join(outDir, 'ram.img')
      fs.writeFileSync(target, 'previous contents')
      const e2 = await caught(() => store.restore(cid, 'ram', target))
      expect(e2.code).toBe('CKPT_HASH_MISMATCH')
      expect(fs.readFileSync(target, 'utf8')).toBe('previous contents')
      expect(fs.readdirSync(outDir)).toEqual(['ram.img'])
    } finally {
      await store.close()
    }
  })

  it('restore to a file in a missing directory -> CKPT_NOT_FOUND naming the path (nothing created)', async () => {
    const dir = tmpStorePath('ckpt-persist-io-')
    const store = await openStore(dir, { threads: 0 })
    try {
      const g = { size: 64 * 1024, chunkSize: 4096 }
      const c = await (await store.timeline('t', { regions: { ram: g } })).checkpoint({ vtime: 1, regions: { ram: { data: makeRng(6).bytes(g.size) } } })
      const target = path.join(path.dirname(dir), 'no', 'such', 'dir', 'ram.img')
      const err = await caught(() => store.restore(c.cid, 'ram', target))
      expect(err.code).toBe('CKPT_NOT_FOUND')
      expect(err.details?.path).toBe(target)
      expect(fs.existsSync(path.join(path.dirname(dir), 'no'))).toBe(false)
    } finally {
      await store.close()
    }
  })
})

describe('vtime extremes survive reopen', () => {
  it('0, 2^53 + 1 and 2^64 - 1 as vtimes: stored, ordered, sought and resolved exactly', async () => {
    const dir = tmpStorePath('ckpt-persist-vt-')
    const g = { size: 16 * 1024, chunkSize: 4096 }
    const vts = [0n, 1n, 2n ** 53n + 1n, 2n ** 63n, 2n ** 64n - 1n]
    const rng = makeRng(64)
    const datas = vts.map(() => rng.bytes(g.size))
    const cids: string[] = []
    let store = await openStore(dir, { threads: 0 })
    try {
      const tl = await store.timeline('t', { regions: { ram: g } })
      for (const [k, v] of vts.entries()) {
        const c = await tl.checkpoint({ vtime: v, regions: { ram: { data: datas[k]! } } })
        expect(c.vtime).toBe(v)
        cids.push(c.cid.toString())
      }
      // nothing fits after 2^64 - 1
      expect((await caught(() => tl.checkpoint({ vtime: 2n ** 64n - 1n, regions: {} }))).code).toBe('CKPT_VTIME_ORDER')
    } finally {
      await store.close()
    }
    store = await openStore(dir)
    try {
      expect((await collect(store.log('t'))).map((e) => e.vtime)).toEqual(vts)
      for (const [k, v] of vts.entries()) {
        const m = await store.manifest(cids[k]!)
        expect(m.vtime).toBe(v)
        expect((await store.seek('t', v))?.cid.toString()).toBe(cids[k])
        expect((await store.resolve(`t@${v}`)).toString()).toBe(cids[k])
        const out = new Uint8Array(g.size)
        await store.restore(`t@${v}`, 'ram', out)
        expect(bytesEqual(out, datas[k]!)).toBe(true)
      }
      // 2^53 + 2 is after 2^53 + 1, not rounded onto it
      expect((await store.seek('t', 2n ** 53n + 2n))?.vtime).toBe(2n ** 53n + 1n)
      expect((await store.seek('t', 2n ** 53n))?.vtime).toBe(1n)
      const tl = await store.timeline('t')
      expect((await caught(() => tl.checkpoint({ vtime: 5, regions: {} }))).code).toBe('CKPT_VTIME_ORDER')
    } finally {
      await store.close()
    }
  })
})
