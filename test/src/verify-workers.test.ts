/**
 * verify's structure phase scans packs on the worker threads (and, with --deep, re-hashes there the
 * blocks stored whole): its findings must be the ones the same verify gives with every scan on the
 * main thread, on clean and damaged stores alike. CKPT_INLINE_BYTES=0 makes a store of any size use
 * the workers; CKPT_WORKERS=0 keeps everything on the calling thread.
 */
import fs from 'node:fs'
import path from 'node:path'
import { crc32 } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ENTRY_HEADER_SIZE } from '../../codecs/pack-format.js'
import { openStore } from '../../src/index.js'
import { scanPackFile } from '../../store/pack-scan.js'
import { makeRng } from '../helpers/rng.js'
import { removeTmpDirs, tmpDir } from '../helpers/tmp.js'
import { runVerify } from '../helpers/verify.js'

afterAll(removeTmpDirs)

let base: string

beforeAll(async () => {
  base = path.join(tmpDir('ckpt-verify-workers-'), 'store')
  const store = await openStore(base, { packTargetSize: 256 << 10 })
  const rng = makeRng(5)
  const ram = Buffer.alloc(96 * 4096)
  const tl = await store.timeline('vm', { regions: { ram: { size: ram.length, chunkSize: 4096 } } })
  for (let k = 0; k < 40; k++) {
    const dirty: number[] = []
    for (let j = 0; j < 4; j++) {
      const i = rng.int(0, 96)
      if (rng.chance(0.5)) ram.set(rng.bytes(4096), i * 4096)
      else ram.fill(rng.int(1, 255), i * 4096, i * 4096 + 2048)
      dirty.push(i)
    }
    await tl.checkpoint({ vtime: k, regions: { ram: k === 0 ? { data: ram } : { data: ram, dirty } } })
  }
  await store.close()
})

/** verify's findings and summary figures, with the worker threads used or not */
async function verifyWith(dir: string, workers: boolean, deep: boolean): Promise<unknown> {
  const saved = { w: process.env.CKPT_WORKERS, i: process.env.CKPT_INLINE_BYTES, p: process.env.CKPT_SCAN_PART_BYTES }
  if (workers) {
    delete process.env.CKPT_WORKERS
    process.env.CKPT_INLINE_BYTES = '0'
    // every pack scanned in parts of 48 KiB, on both workers (joined, or scanned whole where damage keeps them from joining)
    process.env.CKPT_SCAN_PART_BYTES = String(48 << 10)
  } else process.env.CKPT_WORKERS = '0'
  try {
    const store = await openStore(dir, { mustExist: true })
    try {
      const v = await runVerify(store, { deep })
      const s = v.summary
      return {
        findings: v.findings.map((f) => `${f.phase} ${f.severity} ${f.kind}: ${f.message}`).sort(),
        errors: s.errors,
        warnings: s.warnings,
        damagedBlocks: [...s.damagedBlocks].sort(),
        damagedCheckpoints: s.damagedCheckpoints.map((c) => c.cid).sort(),
        dataBlocks: s.dataBlocks,
        dataBytes: s.dataBytes,
      }
    } finally {
      await store.close()
    }
  } finally {
    for (const [k, v] of [['CKPT_WORKERS', saved.w], ['CKPT_INLINE_BYTES', saved.i], ['CKPT_SCAN_PART_BYTES', saved.p]] as const) {
      if (v === undefined) delete process.env[k]
      else process.env[k] = v
    }
  }
}

/** A copy of the store with pack damage: payload bytes changed under a recomputed checksum (content damage), or plain flips. */
function damaged(name: string, seed: number, fixCrc: boolean): string {
  const dir = path.join(tmpDir(`ckpt-verify-workers-${name}-`), 'store')
  fs.cpSync(base, dir, { recursive: true })
  const rng = makeRng(seed)
  const packs = fs.readdirSync(path.join(dir, 'packs')).filter((f) => f.endsWith('.pack')).sort()
  for (let k = 0; k < 3; k++) {
    const f = path.join(dir, 'packs', rng.pick(packs))
    const entries = [...scanPackFile(f, Number(path.basename(f).slice(0, 8)), {})].flatMap((e) => (e.kind === 'entry' ? [{ offset: e.entry.offset, stored: e.entry.storedLength }] : []))
    const e = rng.pick(entries.filter((x) => x.stored > 8))
    const bytes = fs.readFileSync(f)
    bytes[e.offset + ENTRY_HEADER_SIZE + rng.int(0, e.stored)]! ^= 0x10
    if (fixCrc) {
      let c = crc32(bytes.subarray(e.offset, e.offset + 48))
      c = crc32(bytes.subarray(e.offset + ENTRY_HEADER_SIZE, e.offset + ENTRY_HEADER_SIZE + e.stored), c)
      bytes.writeUInt32LE(c >>> 0, e.offset + 48)
    }
    fs.writeFileSync(f, bytes)
  }
  return dir
}

describe('verify on the worker threads finds what verify on one thread finds', () => {
  it('a clean store: clean both ways, every block re-hashed once with --deep', async () => {
    for (const deep of [false, true]) {
      const a = (await verifyWith(base, true, deep)) as { errors: number; dataBlocks: number }
      expect(a).toEqual(await verifyWith(base, false, deep))
      expect(a.errors).toBe(0)
      if (deep) expect(a.dataBlocks).toBeGreaterThan(150)
    }
  })

  for (const [name, seed, fixCrc] of [
    ['flipped', 1, false],
    ['content', 2, true],
    ['content2', 3, true],
  ] as const) {
    it(`pack damage (${name}): the same findings, shallow and deep`, async () => {
      const dir = damaged(name, seed, fixCrc)
      for (const deep of [false, true]) {
        const a = (await verifyWith(dir, true, deep)) as { errors: number }
        expect(a).toEqual(await verifyWith(dir, false, deep))
        // a changed payload under a good checksum is found by re-hashing: by --deep (or the walk, for nodes)
        if (deep || !fixCrc) expect(a.errors).toBeGreaterThan(0)
      }
    })
  }
})
