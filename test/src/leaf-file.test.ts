/**
 * Leaf files (SPEC §18.1): a full scan writes every chunk link of the committed tree beside the scan
 * cache, and a full scan in a later process takes the old tree's leaves from it instead of rebuilding
 * them from their delta chains. The file is never trusted with content: a leaf whose entries do not
 * hash to the CID its parent holds is read from the packs, so a wrong, stale or damaged file changes
 * nothing but the time taken.
 */
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, describe, expect, it, vi } from 'vitest'
import { openStore } from '../../src/index.js'
import { BlockStore } from '../../store/index.js'
import { blake3 } from '../../codecs/blake3.js'
import { decodeChunkTable, encodeChunkTable, LEAF_HEADER_SIZE } from '../../codecs/leaf-table.js'
import { leafFilePath } from '../../src/scan-cache.js'
import { makeRng, type Rng } from '../helpers/rng.js'
import { removeTmpDirs, tmpDir } from '../helpers/tmp.js'
import { runVerify } from '../helpers/verify.js'

afterAll(removeTmpDirs)

const RAM = 2 << 20 // 512 pages: two leaves of 256
const DISK = 40 * 65536 // 40 clusters: one leaf

function image(rng: Rng, size: number, chunk: number): Buffer {
  const b = Buffer.alloc(size)
  for (let at = 0; at < size; at += chunk) if (rng.chance(0.6)) b.set(rng.bytes(chunk), at)
  return b
}

function dirty(rng: Rng, b: Buffer, chunk: number, n: number): void {
  for (let k = 0; k < n; k++) b.set(rng.bytes(chunk), rng.int(0, b.length / chunk - 1) * chunk)
}

/** the links a tree of this content holds: 0x55 and BLAKE3 per non-zero chunk, 0 and zeros for a hole */
function links(b: Buffer, chunk: number): { codecs: Uint8Array; digests: Uint8Array } {
  const n = b.length / chunk
  const codecs = new Uint8Array(n)
  const digests = new Uint8Array(n * 32)
  for (let i = 0; i < n; i++) {
    const c = b.subarray(i * chunk, (i + 1) * chunk)
    if (c.every((x) => x === 0)) continue
    codecs[i] = 0x55
    digests.set(blake3(c), i * 32)
  }
  return { codecs, digests }
}

async function setup() {
  const dir = path.join(tmpDir('ckpt-leaf-'), 's')
  const rng = makeRng(7)
  const ram = image(rng, RAM, 4096)
  const disk = image(rng, DISK, 65536)
  const files = { ram: path.join(dir, '..', 'ram.bin'), disk: path.join(dir, '..', 'disk.bin') }
  const write = () => {
    fs.writeFileSync(files.ram, ram)
    fs.writeFileSync(files.disk, disk)
  }
  write()
  const s = await openStore(dir)
  const tl = await s.timeline('t', { regions: { ram: { size: RAM, chunkSize: 4096, fanout: 256 }, disk: { size: DISK, chunkSize: 65536, fanout: 256 } } })
  const c0 = await tl.checkpoint({ vtime: 0, regions: { ram: { data: files.ram }, disk: { data: files.disk } } })
  await s.close()
  /** one full scan of the files in a new process's worth of state (a fresh store open) */
  const scan = async (vtime: number) => {
    write()
    const st = await openStore(dir)
    try {
      const c = await (await st.timeline('t')).checkpoint({ vtime, regions: { ram: { data: files.ram }, disk: { data: files.disk } } })
      const outRam = Buffer.alloc(RAM)
      const outDisk = Buffer.alloc(DISK)
      await st.restore(c.cid, 'ram', outRam)
      await st.restore(c.cid, 'disk', outDisk)
      const v = await runVerify(st, { deep: true })
      return { c, identical: outRam.equals(ram) && outDisk.equals(disk), verifyOk: v.findings.length === 0 }
    } finally {
      await st.close()
    }
  }
  return { dir, rng, ram, disk, c0, scan }
}

describe('leaf files', () => {
  it('a full scan writes the committed tree’s links, and the next process takes its leaves from them', async () => {
    const { dir, rng, ram, disk, c0, scan } = await setup()
    expect(c0.stats.leavesFromFile).toBe(0)
    for (const [region, b, chunk] of [['ram', ram, 4096], ['disk', disk, 65536]] as const) {
      const t = decodeChunkTable(fs.readFileSync(leafFilePath(dir, 't', region)))!
      expect(t, region).toBeDefined()
      const want = links(b, chunk)
      expect(Buffer.from(t.codecs).equals(Buffer.from(want.codecs)), region).toBe(true)
      expect(Buffer.from(t.digests).equals(Buffer.from(want.digests)), region).toBe(true)
    }
    dirty(rng, ram, 4096, 20)
    dirty(rng, disk, 65536, 3)
    const r = await scan(1)
    expect(r.identical).toBe(true)
    expect(r.verifyOk).toBe(true)
    // the two RAM leaves and the disk leaf, none read from the packs
    expect(r.c.stats.leavesFromFile).toBe(3)
    // and the file now describes the new tree
    const t = decodeChunkTable(fs.readFileSync(leafFilePath(dir, 't', 'ram')))!
    expect(Buffer.from(t.digests).equals(Buffer.from(links(ram, 4096).digests))).toBe(true)
  })

  it('a leaf whose entries do not hash to its CID is read from the packs: a lying file changes nothing', async () => {
    const { dir, rng, ram, disk, scan } = await setup()
    const file = leafFilePath(dir, 't', 'ram')
    const t = decodeChunkTable(fs.readFileSync(file))!
    // the second leaf says chunk 300 is chunk 301's content: a well-formed file with a valid sum
    t.digests.copyWithin(300 * 32, 301 * 32, 302 * 32)
    t.codecs[300] = 0x55
    fs.writeFileSync(file, encodeChunkTable(t))
    dirty(rng, ram, 4096, 5)
    dirty(rng, disk, 65536, 1)
    const r = await scan(1)
    expect(r.identical).toBe(true)
    expect(r.verifyOk).toBe(true)
    expect(r.c.stats.leavesFromFile).toBe(2) // ram's first leaf and disk's, not ram's second
  })

  it('a stale, damaged, truncated or missing leaf file is ignored', async () => {
    const { dir, rng, ram, scan } = await setup()
    const file = leafFilePath(dir, 't', 'ram')
    const good = fs.readFileSync(file)
    // stale: the file of an older tree (the first one) after another checkpoint
    dirty(rng, ram, 4096, 3)
    const r1 = await scan(1)
    expect(r1.c.stats.leavesFromFile).toBe(3)
    fs.writeFileSync(file, good)
    dirty(rng, ram, 4096, 3)
    const r2 = await scan(2)
    expect(r2.identical && r2.verifyOk).toBe(true)
    expect(r2.c.stats.leavesFromFile).toBe(1) // the disk's file only
    // damaged (one byte), truncated, missing
    const cases: [string, (b: Buffer) => Buffer | undefined][] = [
      ['flipped', (b) => {
        const x = Buffer.from(b)
        x[LEAF_HEADER_SIZE + 10]! ^= 1
        return x
      }],
      ['truncated', (b) => b.subarray(0, b.length - 1)],
      ['missing', () => undefined],
    ]
    let vtime = 3
    for (const [what, damage] of cases) {
      const now = fs.readFileSync(file)
      const bad = damage(now)
      if (bad) fs.writeFileSync(file, bad)
      else fs.rmSync(file)
      dirty(rng, ram, 4096, 3)
      const r = await scan(vtime++)
      expect(r.identical && r.verifyOk, what).toBe(true)
      expect(r.c.stats.leavesFromFile, what).toBe(1)
      expect(decodeChunkTable(fs.readFileSync(file)), `${what}: written anew`).toBeDefined()
    }
  })

  it('decodes only complete, intact version-2 (and version-1) files; a hole costs one byte', () => {
    const digests = new Uint8Array(4 * 32)
    for (let i = 0; i < digests.length; i++) digests[i] = (i * 7 + 1) & 0xff
    digests.fill(0, 32, 64) // chunk 1 is a hole: its digest is all zero
    const t = { size: 3 * 4096 + 5, chunkSize: 4096, fanout: 256, root: new Uint8Array(36).fill(9), codecs: Uint8Array.from([0x55, 0, 0x55, 0x55]), digests }
    const bytes = encodeChunkTable(t)
    // header, a codec byte per chunk, a digest per linked chunk (3), the sum
    expect(bytes.length).toBe(LEAF_HEADER_SIZE + 4 + 3 * 32 + 32)
    expect(Buffer.from(bytes).readUInt16LE(8)).toBe(2)
    // the digests in chunk order, the hole's left out
    expect(Buffer.from(bytes.subarray(LEAF_HEADER_SIZE + 4, LEAF_HEADER_SIZE + 4 + 32)).equals(Buffer.from(digests.subarray(0, 32)))).toBe(true)
    expect(Buffer.from(bytes.subarray(LEAF_HEADER_SIZE + 4 + 32, LEAF_HEADER_SIZE + 4 + 96)).equals(Buffer.from(digests.subarray(64, 128)))).toBe(true)
    // a version-1 file (every chunk's digest, zeros for a hole) of the same table reads the same
    const v1 = Buffer.alloc(LEAF_HEADER_SIZE + 4 * 33 + 32)
    v1.set(bytes.subarray(0, LEAF_HEADER_SIZE + 4))
    v1.writeUInt16LE(1, 8)
    v1.set(digests, LEAF_HEADER_SIZE + 4)
    v1.set(blake3(v1.subarray(0, v1.length - 32)), v1.length - 32)
    for (const [what, b] of [['v1', v1], ['v2', bytes]] as const) {
      const x = decodeChunkTable(b)!
      expect(x, what).toBeDefined()
      expect(Buffer.from(x.digests).equals(Buffer.from(digests)), what).toBe(true)
      expect(Buffer.from(x.codecs).equals(Buffer.from(t.codecs)), what).toBe(true)
    }
    const back = decodeChunkTable(bytes)!
    expect(back.size).toBe(t.size)
    expect(back.fanout).toBe(256)
    expect(Buffer.from(back.codecs).equals(Buffer.from(t.codecs))).toBe(true)
    expect(Buffer.from(back.digests).equals(Buffer.from(t.digests))).toBe(true)
    expect(Buffer.from(back.root).equals(Buffer.from(t.root))).toBe(true)
    for (let at = 0; at < bytes.length; at += 7) {
      const x = Buffer.from(bytes)
      x[at]! ^= 0x10
      expect(decodeChunkTable(x), `byte ${at}`).toBeUndefined()
    }
    expect(decodeChunkTable(bytes.subarray(0, bytes.length - 1))).toBeUndefined()
    expect(decodeChunkTable(Buffer.concat([bytes, Buffer.alloc(1)]))).toBeUndefined()
  })
})

describe('leaf files in a restore', () => {
  it('a restore of a tree with a leaf file reads none of its leaves from the packs, and a lying file changes no byte', async () => {
    const { dir, rng, ram, disk, scan } = await setup()
    dirty(rng, ram, 4096, 9)
    const { c } = await scan(1)
    const restoreCounting = async () => {
      // a node read from the packs: resolveNode at the top of its chain (getNode and getNodeBytes, on a cache miss)
      const spy = vi.spyOn(BlockStore.prototype, 'resolveNode')
      const st = await openStore(dir)
      try {
        const outRam = Buffer.alloc(RAM)
        const outDisk = Buffer.alloc(DISK)
        await st.restore(c.cid, 'ram', outRam)
        await st.restore(c.cid, 'disk', outDisk)
        return { reads: spy.mock.calls.filter((args) => args[1] === 0).length, identical: outRam.equals(ram) && outDisk.equals(disk) }
      } finally {
        spy.mockRestore()
        await st.close()
      }
    }
    const withFile = await restoreCounting()
    expect(withFile.identical).toBe(true)
    // the ram root (above its two leaves) alone; the disk's single leaf is its root, offered too
    expect(withFile.reads).toBe(1)
    // a file whose second RAM leaf lies: that leaf is read from the packs, the bytes are still right
    const file = leafFilePath(dir, 't', 'ram')
    const t = decodeChunkTable(fs.readFileSync(file))!
    t.digests.copyWithin(400 * 32, 401 * 32, 402 * 32)
    t.codecs[400] = 0x55
    fs.writeFileSync(file, encodeChunkTable(t))
    const lying = await restoreCounting()
    expect(lying.identical).toBe(true)
    expect(lying.reads).toBe(2)
    fs.rmSync(file)
    fs.rmSync(leafFilePath(dir, 't', 'disk'))
    const without = await restoreCounting()
    expect(without.identical).toBe(true)
    expect(without.reads).toBe(4) // ram root, its two leaves, the disk's root
  })
})

describe('leaf files and the node cache', () => {
  it('leaves offered by a restore are not the tree’s to change: a checkpoint after the restore leaves the old checkpoint’s bytes as they were', async () => {
    const { dir, rng, ram, disk, scan } = await setup()
    dirty(rng, ram, 4096, 9)
    const { c } = await scan(1)
    const old = { ram: Buffer.from(ram), disk: Buffer.from(disk) }
    const st = await openStore(dir)
    try {
      // the restore offers c's leaves (its roots have leaf files); the next checkpoint's tree takes them
      const out = Buffer.alloc(RAM)
      await st.restore(c.cid, 'ram', out)
      expect(out.equals(old.ram)).toBe(true)
      const outDisk = Buffer.alloc(DISK)
      await st.restore(c.cid, 'disk', outDisk)
      // changes declared as dirty pages: the tree reads its leaves through the node cache
      const pages = [3, 7, 100, 300, 301, 500]
      for (const p of pages) ram.set(rng.bytes(4096), p * 4096)
      disk.set(rng.bytes(65536), 2 * 65536)
      const tl = await st.timeline('t')
      const hinted = await tl.checkpoint({ vtime: 2, regions: { ram: { data: ram, dirty: pages }, disk: { data: disk, dirty: [2] } } })
      for (const [region, want] of [['ram', old.ram], ['disk', old.disk]] as const) {
        const o = Buffer.alloc(want.length)
        await st.restore(c.cid, region, o)
        expect(o.equals(want), `${region} of the older checkpoint`).toBe(true)
      }
      const o = Buffer.alloc(RAM)
      await st.restore(hinted.cid, 'ram', o)
      expect(o.equals(ram)).toBe(true)
    } finally {
      await st.close()
    }
  })
})
