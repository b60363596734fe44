/**
 * The library calls the CLI is a thin layer over: store.stats() with the logical bytes and dedup ratio
 * (`ckpt stats`), restoreAll (`ckpt restore --all`), timelineForFiles with its chunk-size guess
 * (`ckpt add`'s open-or-create).
 */
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { exportBundle, openStore, restoreAll, type CkptStore, type ExportProgress, type RestoreAllProgress } from '../../src/index.js'
import { defaultChunkSize, inputFileSize, timelineForFiles } from '../../src/timeline-files.js'
import { caught, removeTmpDirs, tmpDir } from '../helpers/tmp.js'

let dir: string
let store: CkptStore
const ram = Buffer.alloc(64 * 1024)
const disk = Buffer.alloc(256 * 1024)
const cpu = Buffer.from('cpu state\n')

beforeAll(async () => {
  dir = tmpDir('ckpt-lib-')
  randomBytes(8192).copy(ram, 4096)
  randomBytes(65536).copy(disk, 0)
  fs.writeFileSync(path.join(dir, 'ram.bin'), ram)
  fs.writeFileSync(path.join(dir, 'disk.img'), disk)
  store = await openStore(path.join(dir, 'store'), { threads: 0 })
})

afterAll(async () => {
  await store?.close()
  removeTmpDirs()
})

describe('timelineForFiles', () => {
  it('creates a timeline sized by its files, guessing 4 KiB for ram*/mem* and 64 KiB otherwise', async () => {
    expect(defaultChunkSize('ram')).toBe(4096)
    expect(defaultChunkSize('MEM0')).toBe(4096)
    expect(defaultChunkSize('disk')).toBe(65536)
    const files = [
      { name: 'ram', file: path.join(dir, 'ram.bin') },
      { name: 'disk', file: path.join(dir, 'disk.img') },
    ]
    const tl = await timelineForFiles(store, 'vm', files)
    expect(tl.regions.ram).toMatchObject({ size: ram.length, chunkSize: 4096 })
    expect(tl.regions.disk).toMatchObject({ size: disk.length, chunkSize: 65536 })
    await tl.checkpoint({ vtime: 0n, regions: { ram: { data: files[0]!.file }, disk: { data: files[1]!.file } }, blobs: { cpu } })
    // an existing timeline is opened; a chunk size given must be its region's
    expect((await timelineForFiles(store, 'vm', files)).regions.ram!.chunkSize).toBe(4096)
    const e = await caught(() => timelineForFiles(store, 'vm', [{ ...files[0]!, chunkSize: 8192 }]))
    expect(e.code).toBe('CKPT_TIMELINE_CONFIG')
  })

  it('gives a new timeline a policy; a missing file is CKPT_NOT_FOUND, a directory CKPT_BAD_ARGUMENT', async () => {
    const tl = await timelineForFiles(store, 'small', [{ name: 'm', file: path.join(dir, 'ram.bin'), chunkSize: 16384 }], { policy: 'last=3' })
    expect(tl.regions.m!.chunkSize).toBe(16384)
    expect((await store.timeline('small')).policy).toBe('last=3')
    await tl.checkpoint({ vtime: 0n, regions: { m: { data: path.join(dir, 'ram.bin') } } })
    await timelineForFiles(store, 'small', [], { policy: null })
    expect((await store.timeline('small')).policy).toBeUndefined()
    expect((await caught(() => timelineForFiles(store, 'nope', [{ name: 'r', file: path.join(dir, 'missing') }]))).code).toBe('CKPT_NOT_FOUND')
    expect((await caught(() => inputFileSize(dir))).code).toBe('CKPT_BAD_ARGUMENT')
  })
})

describe('store.stats()', () => {
  it('has the logical bytes of every catalogued checkpoint, the stored bytes and the dedup ratio', async () => {
    const tl = await store.timeline('vm')
    await tl.checkpoint({ vtime: 10n, regions: { ram: { data: path.join(dir, 'ram.bin') }, disk: { data: path.join(dir, 'disk.img') } }, blobs: { cpu } })
    const s = await store.stats()
    // vm@0 and vm@10 (ram, disk, cpu), small@0 (one region the size of ram.bin)
    expect(s.checkpoints).toBe(3)
    expect(s.logicalBytes).toBe(2 * (ram.length + disk.length + cpu.length) + ram.length)
    expect(s.storedBytes).toBe(s.packBytes + s.indexBytes)
    expect(s.dedupRatio).toBeCloseTo(s.logicalBytes / s.packBytes)
    // the second checkpoint repeats the first: more than two logical bytes per stored one
    expect(s.dedupRatio!).toBeGreaterThan(2)
  })

  it('has no dedup ratio while there are no pack bytes', async () => {
    const empty = await openStore(path.join(tmpDir('ckpt-lib-'), 'store'), { threads: 0 })
    try {
      const s = await empty.stats()
      expect(s).toMatchObject({ checkpoints: 0, logicalBytes: 0, packBytes: 0, dedupRatio: null })
    } finally {
      await empty.close()
    }
  })
})

describe('restoreAll', () => {
  it('writes every region and blob of a checkpoint to DIR/NAME, with progress up to the total', async () => {
    const out = path.join(dir, 'all')
    const seen: RestoreAllProgress[] = []
    const r = await restoreAll(store, 'vm@0', out, { onProgress: (p) => seen.push(p) })
    expect(r).toMatchObject({ timeline: 'vm', vtime: 0n, out })
    expect(r.files.map((f) => [f.kind, f.name])).toEqual([
      ['region', 'ram'],
      ['region', 'disk'],
      ['blob', 'cpu'],
    ])
    expect(fs.readFileSync(path.join(out, 'ram')).equals(ram)).toBe(true)
    expect(fs.readFileSync(path.join(out, 'disk')).equals(disk)).toBe(true)
    expect(fs.readFileSync(path.join(out, 'cpu')).equals(cpu)).toBe(true)
    const total = ram.length + disk.length + cpu.length
    expect(seen.every((p) => p.total === total)).toBe(true)
    expect(seen.at(-1)!.done).toBe(total)
    expect(fs.readdirSync(out).sort()).toEqual(['cpu', 'disk', 'ram'])
  })

  it('refuses a name both a region and a blob carry, writing nothing', async () => {
    const both = await store.timeline('both', { regions: { s: { size: 4096, chunkSize: 4096 } } })
    await both.checkpoint({ vtime: 0n, regions: { s: { data: new Uint8Array(4096) } }, blobs: { s: cpu } })
    const b = await caught(() => restoreAll(store, 'both', path.join(dir, 'both')))
    expect(b).toMatchObject({ code: 'CKPT_BAD_ARGUMENT', details: { reason: 'both' } })
    expect(fs.existsSync(path.join(dir, 'both'))).toBe(false)
  })
})

describe('exportBundle progress (the bar of ckpt export)', () => {
  it('reports the block bytes written as the bundle grows, also for blocks of 64 KiB', async () => {
    const big = randomBytes(4 << 20)
    const tl = await store.timeline('big', { regions: { disk: { size: big.length, chunkSize: 65536 } } })
    await tl.checkpoint({ vtime: 0n, regions: { disk: { data: big } } })
    const seen: ExportProgress[] = []
    const stream = exportBundle(store, ['big'], { onProgress: (p) => seen.push(p) })
    let n = 0
    for await (const c of stream) n += c.length
    const sum = await stream.summary
    expect(n).toBe(sum.carBytes)
    expect(seen.length).toBeGreaterThanOrEqual(3)
    for (let i = 1; i < seen.length; i++) expect(seen[i]!.bytes).toBeGreaterThan(seen[i - 1]!.bytes)
    expect(seen.at(-1)!.bytes).toBeLessThanOrEqual(sum.bytes)
  })
})
