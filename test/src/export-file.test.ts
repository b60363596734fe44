/**
 * exportBundleToFile and durable output files (SPEC.md §17): the file holds exactly the bundle the
 * stream gives, is written under a temporary name and renamed, is fdatasynced as it is written (a
 * file past one sync step gets a sync before its end) and once more before the rename, its
 * directory after; a failing sync is a CKPT_* error that leaves neither the file nor its temporary.
 */
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { exportBundle, exportBundleToFile, fileSource, importBundle, openStore } from '../../src/index.js'
import { writeOutput } from '../../src/output-file.js'
import { pattern } from '../helpers/bytes.js'
import { caught, removeTmpDirs, tmpDir, tmpStorePath } from '../helpers/tmp.js'

afterAll(removeTmpDirs)

async function bytesOf(stream: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const c of stream) parts.push(Buffer.from(c))
  return Buffer.concat(parts)
}

/** FileHandle.prototype.datasync, counted (and made to fail when `fail` says so) while a test runs */
async function spyDatasync(fail?: (call: number) => boolean): Promise<{ calls: () => number; restore: () => void }> {
  const probe = await fs.promises.open(path.join(tmpDir(), 'probe'), 'w')
  const proto = Object.getPrototypeOf(probe) as { datasync: () => Promise<void> }
  await probe.close()
  const original = proto.datasync
  let calls = 0
  proto.datasync = function (this: unknown) {
    calls++
    if (fail?.(calls)) return Promise.reject(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO', errno: -5 }))
    return original.call(this)
  }
  return { calls: () => calls, restore: () => void (proto.datasync = original) }
}

let restoreSpy: (() => void) | undefined
afterEach(() => {
  restoreSpy?.()
  restoreSpy = undefined
})

function chunks(total: number, size = 1 << 20): AsyncIterable<Uint8Array> {
  return (async function* () {
    for (let at = 0, k = 0; at < total; at += size, k++) yield new Uint8Array(Math.min(size, total - at)).fill(k & 0xff)
  })()
}

describe('exportBundleToFile', () => {
  it('writes exactly the bundle exportBundle streams, renamed into place, and it imports', async () => {
    const dir = tmpStorePath()
    const store = await openStore(dir)
    const tl = await store.timeline('t', { regions: { ram: { size: 64 * 4096, chunkSize: 4096 } } })
    const ram = Buffer.alloc(64 * 4096)
    const cids: string[] = []
    for (let v = 1; v <= 5; v++) {
      ram.fill(v, v * 4096, (v + 3) * 4096)
      cids.push((await tl.checkpoint({ vtime: BigInt(v), regions: { ram: { data: ram } } })).cid.toString())
    }
    const out = tmpDir()
    const file = path.join(out, 'run.car')
    // through a symlink: the link's target is written, the link stays
    fs.symlinkSync(file, path.join(out, 'link.car'))
    const s = await exportBundleToFile(store, cids, path.join(out, 'link.car'))
    const streamed = await bytesOf(exportBundle(store, cids))
    await store.close()
    expect(fs.readFileSync(file).equals(streamed)).toBe(true)
    expect(s.fileBytes).toBe(streamed.length)
    expect(s.carBytes).toBe(streamed.length)
    expect(s.target).toBe(fs.realpathSync(file))
    expect(s.roots).toEqual(cids)
    expect(fs.lstatSync(path.join(out, 'link.car')).isSymbolicLink()).toBe(true)
    expect(fs.readdirSync(out).sort()).toEqual(['link.car', 'run.car'])
    const other = await openStore(tmpStorePath())
    const imp = await importBundle(other, fileSource(file))
    expect(imp.checkpoints).toBe(5)
    await other.close()
  })

  it('a bundle of many pieces: the file (its pieces in recycled buffers) is the stream, whose pieces stay intact while held', async () => {
    const dir = tmpStorePath()
    const store = await openStore(dir)
    const size = 16 << 20
    const tl = await store.timeline('t', { regions: { ram: { size, chunkSize: 4096 } } })
    const ram = pattern(size, 1)
    const cids: string[] = []
    for (let v = 1; v <= 3; v++) {
      if (v > 1) pattern(size / 2, v).copy(ram, (v - 2) * (size / 4))
      cids.push((await tl.checkpoint({ vtime: BigInt(v), regions: { ram: { data: ram } } })).cid.toString())
    }
    const file = path.join(tmpDir(), 'many.car')
    const s = await exportBundleToFile(store, cids, file)
    // the public stream's pieces, kept as given (not copied) until the end
    const held: Uint8Array[] = []
    for await (const c of exportBundle(store, cids)) held.push(c)
    await store.close()
    // ~32 MiB of chunks: far more pieces (~1 MiB each) than the few buffers an export recycles
    expect(held.length).toBeGreaterThan(20)
    const streamed = Buffer.concat(held)
    expect(s.fileBytes).toBe(streamed.length)
    expect(fs.readFileSync(file).equals(streamed)).toBe(true)
    const other = await openStore(tmpStorePath())
    const imp = await importBundle(other, fileSource(file))
    expect(imp.checkpoints).toBe(3)
    const back = Buffer.alloc(size)
    await other.restore(cids[2]!, 'ram', back)
    await other.close()
    expect(back.equals(ram)).toBe(true)
  })

  it('a directory is CKPT_BAD_ARGUMENT before anything is read or written', async () => {
    const store = await openStore(tmpStorePath())
    const tl = await store.timeline('t', { regions: { ram: { size: 4096, chunkSize: 4096 } } })
    const c = await tl.checkpoint({ vtime: 1n, regions: { ram: { data: Buffer.alloc(4096, 1) } } })
    const out = tmpDir()
    const err = await caught(() => exportBundleToFile(store, [c.cid.toString()], out))
    await store.close()
    expect(err.code).toBe('CKPT_BAD_ARGUMENT')
    expect(fs.readdirSync(out)).toEqual([])
  })
})

/** A store of `n` checkpoints of a 256 KiB region, each changing a few pages with random bytes. */
async function smallStore(n: number): Promise<{ dir: string; store: Awaited<ReturnType<typeof openStore>>; cids: string[] }> {
  const dir = tmpStorePath()
  const store = await openStore(dir)
  const tl = await store.timeline('t', { regions: { ram: { size: 64 * 4096, chunkSize: 4096 } } })
  const ram = Buffer.alloc(64 * 4096)
  const cids: string[] = []
  for (let v = 1; v <= n; v++) {
    for (let k = 0; k < 4; k++) crypto.getRandomValues(ram.subarray(((v * 7 + k * 13) % 64) * 4096, ((v * 7 + k * 13) % 64) * 4096 + 4096))
    cids.push((await tl.checkpoint({ vtime: BigInt(v), regions: { ram: { data: ram } } })).cid.toString())
  }
  return { dir, store, cids }
}

describe('exports that end early', () => {
  it('a consumer that stops after two pieces: the store closes cleanly, nothing left running', async () => {
    const { store, cids } = await smallStore(40)
    const stream = exportBundle(store, cids)
    let n = 0
    for await (const c of stream) {
      expect(c.length).toBeGreaterThan(0)
      if (++n === 2) break
    }
    await store.close()
    expect(n).toBe(2)
  })

  it('a damaged chunk fails the export with its CKPT_* code and leaves no file', async () => {
    const { dir, store, cids } = await smallStore(40)
    await store.close()
    // flip a byte in the middle of the first pack's data: some chunk's payload
    const packs = path.join(dir, 'packs')
    const pack = path.join(packs, fs.readdirSync(packs).filter((f) => f.endsWith('.pack')).sort()[0]!)
    const bytes = fs.readFileSync(pack)
    bytes[bytes.length >> 1] ^= 0xff
    fs.writeFileSync(pack, bytes)
    const again = await openStore(dir)
    const out = tmpDir()
    const err = await caught(() => exportBundleToFile(again, cids, path.join(out, 'run.car')))
    await again.close()
    expect(err.code).toMatch(/^CKPT_(HASH_MISMATCH|BAD_PACK|CORRUPT)/)
    expect(fs.readdirSync(out)).toEqual([])
  })
})

describe('durable output files', () => {
  it('a file past one sync step is synced while it is written, again at its end, then its directory', async () => {
    const spy = await spyDatasync()
    restoreSpy = spy.restore
    const syncs: string[] = []
    const fsyncSync = fs.fsyncSync
    const out = tmpDir()
    fs.fsyncSync = (fd: number) => {
      syncs.push(fs.readlinkSync(`/proc/self/fd/${fd}`))
      return fsyncSync(fd)
    }
    try {
      const w = await writeOutput(path.join(out, 'big'), chunks(100 << 20), { durable: true })
      expect(w.bytes).toBe(100 << 20)
    } finally {
      fs.fsyncSync = fsyncSync
    }
    // 100 MiB in steps of 32 MiB: at least one sync during the writes, plus the final one
    expect(spy.calls()).toBeGreaterThanOrEqual(2)
    expect(spy.calls()).toBeLessThanOrEqual(4)
    expect(syncs).toContain(fs.realpathSync(out))
    const got = fs.readFileSync(path.join(out, 'big'))
    expect(got.length).toBe(100 << 20)
    expect(got[0]).toBe(0)
    expect(got[(99 << 20) + 5]).toBe(99)
    expect(fs.readdirSync(out)).toEqual(['big'])
  })

  it('without durable (a restore) nothing is synced', async () => {
    const spy = await spyDatasync()
    restoreSpy = spy.restore
    const out = tmpDir()
    await writeOutput(path.join(out, 'f'), chunks(40 << 20))
    expect(spy.calls()).toBe(0)
    expect(fs.statSync(path.join(out, 'f')).size).toBe(40 << 20)
  })

  for (const which of ['the first sync (in the background)', 'the final sync'] as const) {
    it(`a failing fdatasync (${which}) is CKPT_IO and leaves neither the file nor its temporary`, async () => {
      const spy = await spyDatasync((call) => (which === 'the final sync' ? call >= 2 : call === 1))
      restoreSpy = spy.restore
      const out = tmpDir()
      fs.writeFileSync(path.join(out, 'old'), 'previous content')
      const err = await caught(() => writeOutput(path.join(out, 'old'), chunks(70 << 20), { durable: true }))
      expect(err.code).toBe('CKPT_IO')
      // the file it was to replace is as it was
      expect(fs.readdirSync(out)).toEqual(['old'])
      expect(fs.readFileSync(path.join(out, 'old'), 'utf8')).toBe('previous content')
    })
  }
})
