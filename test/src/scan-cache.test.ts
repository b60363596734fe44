/**
 * The scan cache (DESIGN.md "Full scans"): full scans that skip the chunks of 64 KiB spans whose
 * digest equals the cache give exactly the checkpoints a scan without it gives; a cache that is
 * missing, stale, corrupt or for another tree is ignored; and it does skip work (spansUnchanged).
 */
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest'
import { DEFAULT_FANOUT, memoryBackend, openStore, type CkptStore } from '../../src/index.js'
import { decodeSpanTable, encodeSpanTable, SPAN_SIZE, spanTableSum } from '../../codecs/scan-cache.js'
import { blake3 } from '../../codecs/blake3.js'
import { leafFilePath, scanCachePath, SCAN_DIR } from '../../src/scan-cache.js'
import { makeRng, type Rng } from '../helpers/rng.js'
import { removeTmpDirs, tmpDir } from '../helpers/tmp.js'

afterAll(removeTmpDirs)
afterEach(() => {
  vi.restoreAllMocks()
})

const CLI = fileURLToPath(new URL('../../dist/cli/ckpt.js', import.meta.url))

function randomImage(rng: Rng, size: number, chunkSize: number): Buffer {
  const b = Buffer.alloc(size)
  for (let at = 0; at < size; at += chunkSize) {
    const n = Math.min(chunkSize, size - at)
    const u = rng.float()
    if (u < 0.4) continue // a hole
    if (u < 0.8) b.set(rng.bytes(n), at)
    else b.fill(rng.int(1, 255), at, at + n) // compressible, and often the same as another chunk
  }
  // whole zero spans too
  for (let s = 0; s * SPAN_SIZE < size; s++) if (rng.chance(0.15)) b.fill(0, s * SPAN_SIZE, Math.min(size, (s + 1) * SPAN_SIZE))
  return b
}

function liveSpans(img: Uint8Array): number {
  let n = 0
  for (let at = 0; at < img.length; at += SPAN_SIZE) if (img.subarray(at, at + SPAN_SIZE).some((x) => x !== 0)) n++
  return n
}

/** Changes of the kinds a span check must not miss; returns a short description for failures. */
function mutate(rng: Rng, img: Buffer, chunkSize: number): string[] {
  const done: string[] = []
  const spans = Math.ceil(img.length / SPAN_SIZE)
  for (let m = rng.int(0, 4); m > 0; m--) {
    const kind = rng.int(0, 6)
    const s = rng.int(0, spans - 1)
    const from = s * SPAN_SIZE
    const to = Math.min(img.length, from + SPAN_SIZE)
    if (kind === 0) {
      const at = rng.int(0, img.length - 1)
      img[at] = img[at]! ^ (1 << rng.int(0, 7)) // one bit: same size, other digest
      done.push(`flip ${at}`)
    } else if (kind === 1) {
      img.fill(0, from, to) // non-zero -> zero span
      done.push(`zero span ${s}`)
    } else if (kind === 2) {
      img.set(rng.bytes(to - from), from) // (often) zero -> non-zero span
      done.push(`fill span ${s}`)
    } else if (kind === 3) {
      const c = rng.int(0, Math.ceil(img.length / chunkSize) - 1)
      img.fill(0, c * chunkSize, Math.min(img.length, (c + 1) * chunkSize)) // one chunk becomes a hole
      done.push(`zero chunk ${c}`)
    } else if (kind === 4) {
      img[img.length - 1] = img[img.length - 1]! ^ 0x80 // the last (often partial) span
      done.push('flip last byte')
    } else if (kind === 5) {
      // swap two chunks: same bytes in the span, other order
      const c = rng.int(0, Math.ceil(img.length / chunkSize) - 2)
      if ((c + 2) * chunkSize <= img.length) {
        const a = Buffer.from(img.subarray(c * chunkSize, (c + 1) * chunkSize))
        img.copy(img, c * chunkSize, (c + 1) * chunkSize, (c + 2) * chunkSize)
        a.copy(img, (c + 1) * chunkSize)
        done.push(`swap chunks ${c} ${c + 1}`)
      }
    } else {
      img.fill(0)
      done.push('all zero')
    }
  }
  return done
}

/** The root of the region's tree for exactly these bytes (a fresh store: nothing to diff against). */
/** The store's scan key (kept in its index), read without writing anything. */
async function scanKeyOf(dir: string): Promise<Uint8Array> {
  const s = await openStore(dir, { readOnly: true })
  try {
    return (await s.context().repo.scanKey({ create: false }))!
  } finally {
    await s.close()
  }
}

/** The span digests of an image as the scan cache holds them (32 zero bytes for a zero span). */
function spanDigests(img: Uint8Array): Uint8Array {
  const n = Math.ceil(img.length / SPAN_SIZE)
  const out = new Uint8Array(n * 32)
  for (let k = 0; k < n; k++) {
    const span = img.subarray(k * SPAN_SIZE, Math.min(img.length, (k + 1) * SPAN_SIZE))
    if (span.some((x) => x !== 0)) out.set(blake3(span), k * 32)
  }
  return out
}

async function truthRoot(img: Uint8Array, chunkSize: number): Promise<string | null> {
  const s = await openStore('mem', { backend: memoryBackend() })
  try {
    const tl = await s.timeline('x', { regions: { r: { size: img.length, chunkSize } } })
    const c = await tl.checkpoint({ vtime: 0, regions: { r: { data: img, stable: true } } })
    const root = (await s.manifest(c.cid)).regions.r!.root
    return root ? root.toString() : null
  } finally {
    await s.close()
  }
}

async function rootOf(s: CkptStore, cid: Parameters<CkptStore['manifest']>[0], region = 'r'): Promise<string | null> {
  const root = (await s.manifest(cid)).regions[region]!.root
  return root ? root.toString() : null
}

function same(a: { chunks: number; zeroChunks: number; unchangedChunks: number; dedupChunks: number; newChunks: number }) {
  return { chunks: a.chunks, zeroChunks: a.zeroChunks, unchangedChunks: a.unchangedChunks, stored: a.dedupChunks + a.newChunks }
}

describe('scan cache: same checkpoints as without it', () => {
  it('property: random images and changes, files across store opens (manifest CIDs equal to a scan without the cache)', async () => {
    vi.spyOn(Date, 'now').mockReturnValue(1_750_000_000_000)
    let skipped = 0
    for (let seed = 1; seed <= 6; seed++) {
      const rng = makeRng(seed * 7919)
      const chunkSize = rng.pick([512, 4096, 16384, 32768])
      // sizes that are not multiples of 64 KiB, nor always of the chunk size
      const size = rng.int(1, 24) * SPAN_SIZE + rng.pick([0, 1, chunkSize, chunkSize + 3, SPAN_SIZE - 1])
      const img = randomImage(rng, size, chunkSize)
      const root = tmpDir('ckpt-scan-')
      const A = path.join(root, 'a')
      const file = path.join(root, 'img.bin')
      fs.writeFileSync(file, img)
      let s = await openStore(A)
      let tl = await s.timeline('t', { regions: { r: { size, chunkSize }, d: { size: 3 * SPAN_SIZE + 100, chunkSize: 65536 } } })
      await tl.checkpoint({ vtime: 0, regions: { r: { data: file } } })
      await s.close()
      for (let step = 1; step <= 5; step++) {
        const what = mutate(rng, img, chunkSize)
        fs.writeFileSync(file, img)
        // B: the same store without its cache
        const B = path.join(root, `b${step}`)
        fs.cpSync(A, B, { recursive: true })
        fs.rmSync(path.join(B, SCAN_DIR), { recursive: true, force: true })
        const sb = await openStore(B)
        const cb = await (await sb.timeline('t')).checkpoint({ vtime: step, regions: { r: { data: file } } })
        await sb.close()
        s = await openStore(A)
        tl = await s.timeline('t')
        const ca = await tl.checkpoint({ vtime: step, regions: { r: { data: file } } })
        const label = `seed ${seed} step ${step} chunk ${chunkSize} size ${size}: ${what.join(', ')}`
        expect(ca.cid.toString(), label).toBe(cb.cid.toString())
        expect(same(ca.stats), label).toEqual(same(cb.stats))
        expect(cb.stats.spansUnchanged).toBe(0)
        expect(await rootOf(s, ca.cid), label).toBe(await truthRoot(img, chunkSize))
        skipped += ca.stats.spansUnchanged
        if (step === 5) {
          const out = Buffer.alloc(size)
          await s.restore(ca.cid, 'r', out)
          expect(out.equals(img), label).toBe(true)
        }
        await s.close()
        fs.rmSync(B, { recursive: true, force: true })
      }
    }
    expect(skipped).toBeGreaterThan(0)
  })

  it('property: buffers in one process (the in-memory cache), copied or stable, with dirty-hint checkpoints between', async () => {
    let skipped = 0
    for (let seed = 11; seed <= 16; seed++) {
      const rng = makeRng(seed * 104729)
      const chunkSize = rng.pick([512, 4096, 16384])
      const size = rng.int(1, 20) * SPAN_SIZE + rng.pick([0, 7, chunkSize, SPAN_SIZE / 2])
      const img = randomImage(rng, size, chunkSize)
      const s = await openStore(path.join(tmpDir('ckpt-scan-'), 's'))
      const tl = await s.timeline('t', { regions: { r: { size, chunkSize } } })
      await tl.checkpoint({ vtime: 0, regions: { r: { data: img } } })
      for (let step = 1; step <= 6; step++) {
        let input: { data: Uint8Array; stable?: boolean; dirty?: number[] }
        let what: string[]
        if (rng.chance(0.25)) {
          // a dirty-hint checkpoint: changes a few chunks and says so
          const dirty = new Set<number>()
          for (let k = rng.int(0, 3); k > 0; k--) {
            const c = rng.int(0, Math.ceil(size / chunkSize) - 1)
            img.set(rng.bytes(Math.min(chunkSize, size - c * chunkSize)), c * chunkSize)
            dirty.add(c)
          }
          input = { data: img, dirty: [...dirty] }
          what = [`dirty ${[...dirty].join(' ')}`]
        } else {
          what = mutate(rng, img, chunkSize)
          input = { data: img, stable: rng.chance(0.5) }
        }
        const c = await tl.checkpoint({ vtime: step, regions: { r: input } })
        const label = `seed ${seed} step ${step} chunk ${chunkSize} size ${size}: ${what.join(', ')}`
        expect(await rootOf(s, c.cid), label).toBe(await truthRoot(img, chunkSize))
        expect(c.stats.zeroChunks + c.stats.unchangedChunks + c.stats.dedupChunks + c.stats.newChunks, label).toBe(c.stats.chunks)
        skipped += c.stats.spansUnchanged
      }
      await s.close()
    }
    expect(skipped).toBeGreaterThan(0)
  })

  it('skips the hashing of unchanged spans on the next scan (spansUnchanged), in any region with chunks under 64 KiB', async () => {
    const dir = path.join(tmpDir('ckpt-scan-'), 's')
    const rng = makeRng(5)
    const ram = randomImage(rng, 40 * SPAN_SIZE, 4096)
    const disk = randomImage(rng, 8 * SPAN_SIZE, 65536)
    let s = await openStore(dir)
    const tl = await s.timeline('t', { regions: { ram: { size: ram.length }, disk: { size: disk.length, chunkSize: 65536 } } })
    const c0 = await tl.checkpoint({ vtime: 0, regions: { ram: { data: ram }, disk: { data: disk } } })
    expect(c0.stats.spansUnchanged).toBe(0)
    await s.close()
    s = await openStore(dir)
    const live = Array.from({ length: 40 }, (_, k) => k).filter((k) => ram.subarray(k * SPAN_SIZE, (k + 1) * SPAN_SIZE).some((x) => x !== 0))
    const c1 = await (await s.timeline('t')).checkpoint({ vtime: 1, regions: { ram: { data: ram }, disk: { data: disk } } })
    expect(c1.stats.spansUnchanged).toBe(live.length)
    expect(c1.stats.newChunks + c1.stats.dedupChunks).toBe(0)
    // one byte in one span: that span alone is hashed chunk by chunk
    ram[live[3]! * SPAN_SIZE + 100] ^= 1
    const c2 = await (await s.timeline('t')).checkpoint({ vtime: 2, regions: { ram: { data: ram, stable: true } } })
    expect(c2.stats.spansUnchanged).toBe(live.length - 1)
    expect(c2.stats.newChunks + c2.stats.dedupChunks).toBe(1)
    await s.close()
  })

  it('a library store in memory keeps the cache in memory', async () => {
    const s = await openStore('m', { backend: memoryBackend() })
    const img = randomImage(makeRng(9), 10 * SPAN_SIZE, 4096)
    const tl = await s.timeline('t', { regions: { r: { size: img.length } } })
    await tl.checkpoint({ vtime: 0, regions: { r: { data: img } } })
    const c = await tl.checkpoint({ vtime: 1, regions: { r: { data: img } } })
    expect(c.stats.spansUnchanged).toBeGreaterThan(0)
    await s.close()
  })
})

describe('scan cache: ignored when it does not describe the head', () => {
  /** A store with one checkpoint of `img`, the image changed, and a hook to spoil the cache file before the next scan. */
  async function scanAfter(spoil: (file: string, dir: string, key: Uint8Array) => void, change = true): Promise<{ spansUnchanged: number; ok: boolean; live: number }> {
    const rng = makeRng(77)
    const img = randomImage(rng, 12 * SPAN_SIZE + 5000, 4096)
    const dir = path.join(tmpDir('ckpt-scan-'), 's')
    let s = await openStore(dir)
    await (await s.timeline('t', { regions: { r: { size: img.length } } })).checkpoint({ vtime: 0, regions: { r: { data: img } } })
    await s.close()
    if (change) mutate(rng, img, 4096)
    spoil(scanCachePath(dir, 't', 'r'), dir, await scanKeyOf(dir))
    s = await openStore(dir)
    try {
      const c = await (await s.timeline('t')).checkpoint({ vtime: 1, regions: { r: { data: img } } })
      return { spansUnchanged: c.stats.spansUnchanged, ok: (await rootOf(s, c.cid)) === (await truthRoot(img, 4096)), live: liveSpans(img) }
    } finally {
      await s.close()
    }
  }

  it('is used when intact (the control case)', async () => {
    const r = await scanAfter(() => {}, false)
    expect(r.ok).toBe(true)
    expect(r.live).toBeGreaterThan(8)
    expect(r.spansUnchanged).toBe(r.live)
  })

  const spoilers: [string, (file: string) => void][] = [
    ['missing', (f) => fs.rmSync(f)],
    ['truncated', (f) => fs.truncateSync(f, fs.statSync(f).size - 1)],
    ['cut to its header', (f) => fs.truncateSync(f, 40)],
    ['empty', (f) => fs.writeFileSync(f, '')],
    ['one digest byte flipped (checksum)', (f) => {
      const b = fs.readFileSync(f)
      b[200]! ^= 1
      fs.writeFileSync(f, b)
    }],
    ['another version', (f, _d, key) => {
      const b = fs.readFileSync(f)
      b[8] = 3
      b.set(spanTableSum(b.subarray(0, b.length - 32), key), b.length - 32)
      fs.writeFileSync(f, b)
    }],
    ['version 1 (a sum anyone could forge: BLAKE3 of the bytes, no key)', (f) => {
      const b = fs.readFileSync(f)
      b[8] = 1
      b.set(blake3(b.subarray(0, b.length - 32)), b.length - 32)
      fs.writeFileSync(f, b)
    }],
    ['garbage', (f) => fs.writeFileSync(f, Buffer.alloc(131_684, 0xa5))],
    ['a directory in its place', (f) => {
      fs.rmSync(f)
      fs.mkdirSync(f)
    }],
    ['wrong digests under a valid checksum', (f, _d, key) => {
      const t = decodeSpanTable(fs.readFileSync(f), key)!
      t.digests.fill(0x33)
      fs.writeFileSync(f, encodeSpanTable(t, key))
    }],
    ['another geometry', (f, _d, key) => {
      const t = decodeSpanTable(fs.readFileSync(f), key)!
      fs.writeFileSync(f, encodeSpanTable({ ...t, chunkSize: 8192 }, key))
    }],
    ['another tree (a crash after a commit, before its cache was written, or a cache for a checkpoint never committed)', (f, _d, key) => {
      const t = decodeSpanTable(fs.readFileSync(f), key)!
      const root = Uint8Array.from(t.root)
      root[10]! ^= 1
      fs.writeFileSync(f, encodeSpanTable({ ...t, root }, key))
    }],
    ['forged without the store key: the digests of the changed image, summed with another key', (f, _d, key) => {
      const t = decodeSpanTable(fs.readFileSync(f), key)!
      fs.writeFileSync(f, encodeSpanTable({ ...t, digests: t.digests.map((x) => x ^ 0x5a) }, blake3(Buffer.from('not the key'))))
    }],
  ]
  for (const [name, spoil] of spoilers) {
    it(`${name}: hashes everything, same result`, async () => {
      const r = await scanAfter(spoil)
      expect(r.ok).toBe(true)
      expect(r.spansUnchanged).toBe(0)
    })
  }

  it('a cache forged with the store key (by one who can read the index) would keep stale spans: scanCache false (add --no-scan-cache) hashes everything, and verify --deep names the file', async () => {
    const rng = makeRng(78)
    const img = randomImage(rng, 12 * SPAN_SIZE + 5000, 4096)
    const dir = path.join(tmpDir('ckpt-scan-'), 's')
    let s = await openStore(dir)
    await (await s.timeline('t', { regions: { r: { size: img.length } } })).checkpoint({ vtime: 0, regions: { r: { data: img } } })
    await s.close()
    // the image changes in a live span; the forged cache claims every span as it is now
    const live = [...Array(13).keys()].filter((k) => img.subarray(k * SPAN_SIZE, (k + 1) * SPAN_SIZE).some((x) => x !== 0))
    img[live[2]! * SPAN_SIZE + 7] ^= 0x40
    const key = await scanKeyOf(dir)
    const file = scanCachePath(dir, 't', 'r')
    const t = decodeSpanTable(fs.readFileSync(file), key)!
    fs.writeFileSync(file, encodeSpanTable({ ...t, digests: spanDigests(img) }, key))
    s = await openStore(dir)
    try {
      const { verifyStore } = await import('../../src/index.js')
      const it = verifyStore(s, { deep: true })
      const kinds: string[] = []
      let r = await it.next()
      for (; !r.done; r = await it.next()) kinds.push(`${r.value.kind}:${r.value.severity}:${r.value.path ?? ''}`)
      expect(kinds).toContain(`bad-scan-cache:warning:${file}`)
      expect(r.value.clean).toBe(false)
      const c = await (await s.timeline('t')).checkpoint({ vtime: 1, regions: { r: { data: img } }, scanCache: false })
      expect(c.stats.spansUnchanged).toBe(0)
      expect(await rootOf(s, c.cid)).toBe(await truthRoot(img, 4096))
      // the cache was written anew from what was hashed: verify is clean again
      const again = verifyStore(s, { deep: true })
      let q = await again.next()
      for (; !q.done; q = await again.next()) expect(q.value.kind).not.toBe('bad-scan-cache')
      expect(q.value.clean).toBe(true)
    } finally {
      await s.close()
    }
  })

  it('an unwritable scan directory costs nothing: the checkpoint is stored, the next scan hashes everything', async () => {
    const r = await scanAfter((f, dir) => {
      fs.rmSync(path.join(dir, SCAN_DIR), { recursive: true })
      fs.writeFileSync(path.join(dir, SCAN_DIR), 'not a directory')
    })
    expect(r.ok).toBe(true)
    expect(r.spansUnchanged).toBe(0)
  })

  it('a cache written for a checkpoint that never became the head (crash mid-commit) is ignored', async () => {
    const rng = makeRng(3)
    const img0 = randomImage(rng, 9 * SPAN_SIZE, 4096)
    const img1 = Buffer.from(img0)
    mutate(rng, img1, 4096)
    img1[SPAN_SIZE + 5] ^= 0xff
    const dir = path.join(tmpDir('ckpt-scan-'), 's')
    const other = path.join(tmpDir('ckpt-scan-'), 'o')
    let s = await openStore(dir)
    await (await s.timeline('t', { regions: { r: { size: img0.length } } })).checkpoint({ vtime: 0, regions: { r: { data: img0 } } })
    await s.close()
    // the same timeline elsewhere went on to img1: its cache describes a tree this store's head is not
    fs.cpSync(dir, other, { recursive: true })
    s = await openStore(other)
    await (await s.timeline('t')).checkpoint({ vtime: 1, regions: { r: { data: img1 } } })
    await s.close()
    fs.copyFileSync(scanCachePath(other, 't', 'r'), scanCachePath(dir, 't', 'r'))
    s = await openStore(dir)
    const img2 = Buffer.from(img0)
    img2[2 * SPAN_SIZE + 9] ^= 1
    const c = await (await s.timeline('t')).checkpoint({ vtime: 1, regions: { r: { data: img2 } } })
    expect(await rootOf(s, c.cid)).toBe(await truthRoot(img2, 4096))
    expect(c.stats.spansUnchanged).toBe(0)
    await s.close()
  })
})

describe('scan cache: lifecycle', () => {
  it('after a dirty-hint checkpoint the cache no longer matches the head; the next full scan hashes everything, and caches again', async () => {
    const rng = makeRng(21)
    const img = randomImage(rng, 16 * SPAN_SIZE, 4096)
    const s = await openStore(path.join(tmpDir('ckpt-scan-'), 's'))
    const tl = await s.timeline('t', { regions: { r: { size: img.length } } })
    await tl.checkpoint({ vtime: 0, regions: { r: { data: img } } })
    img.fill(0x42, 5 * 4096, 6 * 4096)
    const c1 = await tl.checkpoint({ vtime: 1, regions: { r: { data: img, dirty: [5] } } })
    expect(c1.stats.newChunks).toBe(1)
    // a page changed without a hint: only a full scan sees it
    img[9 * 4096 + 17] ^= 1
    const c2 = await tl.checkpoint({ vtime: 2, regions: { r: { data: img } } })
    expect(c2.stats.spansUnchanged).toBe(0)
    expect(await rootOf(s, c2.cid)).toBe(await truthRoot(img, 4096))
    // an empty dirty list changes nothing: the tree (and so the cache) still holds
    await tl.checkpoint({ vtime: 3, regions: { r: { data: img, dirty: [] } } })
    const c4 = await tl.checkpoint({ vtime: 4, regions: { r: { data: img } } })
    expect(c4.stats.spansUnchanged).toBeGreaterThan(0)
    expect(await rootOf(s, c4.cid)).toBe(await truthRoot(img, 4096))
    await s.close()
  })

  it('after rm of the head (and gc), a scan diffs against the new head and ignores the cache of the removed one', async () => {
    const rng = makeRng(22)
    const img = randomImage(rng, 10 * SPAN_SIZE, 4096)
    const dir = path.join(tmpDir('ckpt-scan-'), 's')
    let s = await openStore(dir)
    const tl = await s.timeline('t', { regions: { r: { size: img.length } } })
    await tl.checkpoint({ vtime: 0, regions: { r: { data: img } } })
    const v0 = Buffer.from(img)
    mutate(rng, img, 4096)
    img[3] ^= 1
    const c1 = await tl.checkpoint({ vtime: 1, regions: { r: { data: img } } })
    await s.close()
    s = await openStore(dir)
    await s.rm([c1.cid])
    await s.gc()
    await s.close()
    s = await openStore(dir)
    // back to v1's content: the head is v0 now, the cache describes v1 (gone)
    const c2 = await (await s.timeline('t')).checkpoint({ vtime: 2, regions: { r: { data: img } } })
    expect(c2.stats.spansUnchanged).toBe(0)
    expect(await rootOf(s, c2.cid)).toBe(await truthRoot(img, 4096))
    const out = Buffer.alloc(img.length)
    await s.restore(c2.cid, 'r', out)
    expect(out.equals(img)).toBe(true)
    expect(v0.equals(img)).toBe(false)
    await s.close()
  })

  it('thinning (which always keeps the newest) and gc leave the head and so the cache valid', async () => {
    const rng = makeRng(23)
    const img = randomImage(rng, 6 * SPAN_SIZE + 4096, 4096)
    img.fill(9, 0, 4 * SPAN_SIZE)
    const dir = path.join(tmpDir('ckpt-scan-'), 's')
    let s = await openStore(dir)
    const tl = await s.timeline('t', { regions: { r: { size: img.length } } })
    for (let v = 0; v < 4; v++) {
      img[v * SPAN_SIZE + 1] ^= 1
      await tl.checkpoint({ vtime: v, regions: { r: { data: img } } })
    }
    await s.close()
    s = await openStore(dir)
    const t = await s.thin('t', 'last=1')
    expect(t.dropped.length).toBe(3)
    await s.gc()
    await s.close()
    s = await openStore(dir)
    img[2 * SPAN_SIZE + 1] ^= 1
    const c = await (await s.timeline('t')).checkpoint({ vtime: 9, regions: { r: { data: img } } })
    expect(c.stats.spansUnchanged).toBe(liveSpans(img) - 1)
    expect(await rootOf(s, c.cid)).toBe(await truthRoot(img, 4096))
    await s.close()
  })

  it('ckpt add, one process per checkpoint: the second add of the same file skips its spans (CLI --json)', () => {
    const dir = tmpDir('ckpt-scan-')
    const file = path.join(dir, 'ram.bin')
    fs.writeFileSync(file, randomImage(makeRng(31), 80 * SPAN_SIZE, 4096))
    const store = path.join(dir, 's')
    execFileSync(process.execPath, [CLI, 'init', '--store', store])
    const add = (v: number) => JSON.parse(execFileSync(process.execPath, [CLI, 'add', '--store', store, '--timeline', 't', '--vtime', String(v), '--json', `ram=${file}:4096`], { encoding: 'utf8' }))
    const a = add(0)
    expect(a.stats.spansUnchanged).toBe(0)
    const b = add(1)
    expect(b.stats.spansUnchanged).toBe(liveSpans(fs.readFileSync(file)))
    expect(b.stats.unchangedChunks + b.stats.zeroChunks).toBe(b.stats.chunks)
    // the second process took the tree's leaves (80 spans of 16 pages: 1,280 chunks, at the default fan-out of 1,024 two) from the leaf file
    expect(DEFAULT_FANOUT).toBe(1024)
    expect(a.stats.leavesFromFile).toBe(0)
    expect(b.stats.leavesFromFile).toBe(Math.ceil(1280 / DEFAULT_FANOUT))
    expect(fs.readdirSync(path.join(store, SCAN_DIR)).sort()).toEqual([path.basename(leafFilePath(store, 't', 'ram')), path.basename(scanCachePath(store, 't', 'ram'))].sort())
  })
})

describe('prescan: spans hashed by the prestarted workers before the store opens (ckpt add)', () => {
  it('property: a scan that takes the prescanned spans gives the roots of the bytes, in regions of every chunk size', async () => {
    const { prestartWorkers, prescanFiles, prescanOf } = await import('../../src/pipeline/prestart.js')
    let skipped = 0
    let used = 0
    for (let seed = 41; seed <= 44; seed++) {
      const rng = makeRng(seed * 7919)
      const dir = tmpDir('ckpt-prescan-')
      // pages scanned by spans (with an odd tail), 64 KiB clusters (a chunk is a span), 1 MiB chunks (no spans)
      const shapes = [
        { name: 'ram', chunkSize: rng.pick([4096, 16384]), size: rng.int(3, 40) * SPAN_SIZE + rng.pick([0, 4096, 100]) },
        { name: 'disk', chunkSize: 65536, size: rng.int(3, 40) * SPAN_SIZE + rng.pick([0, 777]) },
        { name: 'big', chunkSize: 1 << 20, size: 3 * (1 << 20) - 5 },
      ]
      const imgs = shapes.map((r) => randomImage(rng, r.size, r.chunkSize))
      const files = shapes.map((r) => path.join(dir, `${r.name}.bin`))
      const write = () => imgs.forEach((img, k) => fs.writeFileSync(files[k]!, img))
      write()
      const storeDir = path.join(dir, 's')
      const regions = Object.fromEntries(shapes.map((r) => [r.name, { size: r.size, chunkSize: r.chunkSize }]))
      let s: CkptStore
      for (let step = 0; step < 4; step++) {
        const what = step === 0 ? [] : shapes.flatMap((r, k) => mutate(rng, imgs[k]!, r.chunkSize).map((m) => `${r.name}: ${m}`))
        write()
        // as `ckpt add` does: workers first, the prescan on them, then the store (whose pool adopts them)
        prestartWorkers(2)
        prescanFiles(files)
        expect(prescanOf(files[0]!, shapes[0]!.size), 'a prescan of the file as it is').toBeDefined()
        s = await openStore(storeDir, { threads: 2 })
        const c = await (await s.timeline('t', step === 0 ? { regions } : {})).checkpoint({ vtime: step, regions: Object.fromEntries(shapes.map((r, k) => [r.name, { data: files[k]! }])) })
        const label = `seed ${seed} step ${step}: ${what.join(', ')}`
        for (const [k, r] of shapes.entries()) expect(await rootOf(s, c.cid, r.name), `${label} (${r.name})`).toBe(await truthRoot(imgs[k]!, r.chunkSize))
        expect(c.stats.zeroChunks + c.stats.unchangedChunks + c.stats.dedupChunks + c.stats.newChunks, label).toBe(c.stats.chunks)
        skipped += c.stats.spansUnchanged
        used++
        if (step === 3) {
          for (const [k, r] of shapes.entries()) {
            const out = Buffer.alloc(r.size)
            await s.restore(c.cid, r.name, out)
            expect(out.equals(imgs[k]!), `${label}: restore ${r.name}`).toBe(true)
          }
        }
        await s.close()
      }
    }
    expect(used).toBe(16)
    expect(skipped).toBeGreaterThan(0)
  })

  it('a file written after its prescan is scanned anew, not taken from the prescan', async () => {
    const { prestartWorkers, prescanFiles, prescanOf } = await import('../../src/pipeline/prestart.js')
    const rng = makeRng(77)
    const dir = tmpDir('ckpt-prescan-')
    const size = 12 * SPAN_SIZE
    const img = randomImage(rng, size, 4096)
    const file = path.join(dir, 'ram.bin')
    fs.writeFileSync(file, img)
    const storeDir = path.join(dir, 's')
    let s = await openStore(storeDir)
    await (await s.timeline('t', { regions: { ram: { size, chunkSize: 4096 } } })).checkpoint({ vtime: 0, regions: { ram: { data: file } } })
    await s.close()
    prestartWorkers(2)
    prescanFiles([file])
    const pre = prescanOf(file, size)!
    expect(pre).toBeDefined()
    await Promise.all(pre.pieces)
    // the same size, other bytes, written after the prescan read the file (and well after its stat)
    await new Promise((r) => setTimeout(r, 30))
    img.set(rng.bytes(4096), 5 * 4096)
    img.fill(0, 7 * SPAN_SIZE, 8 * SPAN_SIZE)
    fs.writeFileSync(file, img)
    expect(prescanOf(file, size), 'the prescan of the old bytes').toBeUndefined()
    s = await openStore(storeDir, { threads: 2 })
    const c = await (await s.timeline('t')).checkpoint({ vtime: 1, regions: { ram: { data: file } } })
    expect(await rootOf(s, c.cid, 'ram')).toBe(await truthRoot(img, 4096))
    await s.close()
  })
})
