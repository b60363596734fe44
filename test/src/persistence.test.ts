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
import { decodeFooter, FOOTER_SIZE } from '../../store/pack-format.js'
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

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = []
  for await (const x of it) out.push(x)
  return out
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
            expect(Buffer.from(m.regions.ram!.root!).equals(Buffer.from(pm.regions.ram!.root!))).toBe(true)
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
        expect(Buffer.from(m1.regions.ram!.root!).equals(Buffer.from(m0.regions.ram!.root!))).toBe(true)
        await verifyAll(s2, snaps)
      } finally {
        await s2.close()
      }
    })
  }
})
