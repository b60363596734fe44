/**
 * Every API misuse fails with its stable code (or a TypeError for wrong argument types), checked by
 * `code` and typed details, never by message text; and a failed call stores nothing.
 */
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { CID } from 'multiformats/cid'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { blake3 } from '../../codecs/blake3.js'
import { cidBytes, DAG_CBOR, toCID } from '../../codecs/cid.js'
import { openStore, type CkptStore, type Timeline } from '../../src/index.js'
import { collect } from '../helpers/bytes.js'
import { makeRng } from '../helpers/rng.js'
import { bytesEqual, caught, removeTmpDirs, tmpDir, tmpStorePath } from '../helpers/tmp.js'

const DIST = fileURLToPath(new URL('../../dist/src/index.js', import.meta.url))

afterAll(removeTmpDirs)

const REGIONS = { ram: { size: 64 * 1024, chunkSize: 4096 }, disk: { size: 256 * 1024 + 100, chunkSize: 65536 } }

/** What the store holds, for "a failed call stores nothing". */
async function snapshot(store: CkptStore) {
  const log = (await collect(store.log())).map((e) => `${e.timeline}@${e.vtime}=${e.cid}`)
  const s = await store.stats()
  return { log, checkpoints: s.checkpoints, blocks: s.blocks, packBytes: s.packBytes, timelines: s.timelines }
}

describe('API errors', () => {
  let store: CkptStore
  let tl: Timeline
  let dir: string
  const ram = new Uint8Array(REGIONS.ram.size)
  const disk = new Uint8Array(REGIONS.disk.size)
  let first: CID

  beforeAll(async () => {
    dir = tmpStorePath('ckpt-err-')
    store = await openStore(dir)
    tl = await store.timeline('tl', { regions: REGIONS })
    const rng = makeRng(5)
    ram.set(rng.bytes(ram.length))
    disk.set(rng.bytes(disk.length))
    first = (await tl.checkpoint({ vtime: 10, regions: { ram: { data: ram }, disk: { data: disk } }, blobs: { cpu: rng.bytes(100) } })).cid
  })

  afterAll(async () => {
    await store?.close()
  })

  /** Runs fn, expects it to fail with `code` (or TypeError), and checks nothing was stored. */
  async function expectFails(code: string | typeof TypeError, fn: () => unknown): Promise<Error & { code?: string; details?: Record<string, unknown> }> {
    const before = await snapshot(store)
    const err = await caught(fn)
    if (typeof code === 'string') {
      expect(err.code, `${err.name}: ${err.message}`).toBe(code)
      expect(err.name).toBe('CkptError')
    } else {
      expect(err, `${err.name}: ${err.message}`).toBeInstanceOf(TypeError)
      expect(err.code).toBeUndefined()
    }
    expect(await snapshot(store)).toEqual(before)
    return err
  }

  it('dirty index out of range -> CKPT_OUT_OF_RANGE', async () => {
    for (const bad of [[16], [-1], [0, 3, 100], [1.5], [Number.NaN]]) {
      const err = await expectFails('CKPT_OUT_OF_RANGE', () => tl.checkpoint({ vtime: 11, regions: { ram: { data: ram, dirty: bad } } }))
      expect(err.details?.region).toBe('ram')
    }
    await expectFails('CKPT_OUT_OF_RANGE', () => tl.checkpoint({ vtime: 11, regions: { disk: { data: disk, dirty: [5] } } }))
    await expectFails('CKPT_OUT_OF_RANGE', () => tl.checkpoint({ vtime: 11, regions: { disk: { data: disk, dirty: Uint32Array.of(0, 5) } } }))
  })

  it('dirty bitmap of the wrong length -> CKPT_WRONG_SIZE', async () => {
    // 16 chunks: 2 bytes, or up to 8 (rounded up to 64-bit words, as a KVM dirty log is)
    for (const n of [0, 1, 9, 16]) {
      await expectFails('CKPT_WRONG_SIZE', () => tl.checkpoint({ vtime: 11, regions: { ram: { data: ram, dirty: { bitmap: new Uint8Array(n) } } } }))
    }
  })

  it('buffer of the wrong size -> CKPT_WRONG_SIZE', async () => {
    for (const n of [0, ram.length - 1, ram.length + 1, 4096]) {
      const err = await expectFails('CKPT_WRONG_SIZE', () => tl.checkpoint({ vtime: 11, regions: { ram: { data: new Uint8Array(n) } } }))
      expect(err.details?.region).toBe('ram')
    }
    // a file of the wrong size, too
    const f = path.join(tmpDir('ckpt-err-f-'), 'disk.img')
    fs.writeFileSync(f, Buffer.alloc(REGIONS.disk.size - 1))
    await expectFails('CKPT_WRONG_SIZE', () => tl.checkpoint({ vtime: 11, regions: { disk: { data: f } } }))
    // one good region does not get stored when another is bad
    await expectFails('CKPT_WRONG_SIZE', () => tl.checkpoint({ vtime: 11, regions: { ram: { data: ram }, disk: { data: new Uint8Array(10) } } }))
  })

  it('unknown region -> CKPT_UNKNOWN_REGION', async () => {
    const err = await expectFails('CKPT_UNKNOWN_REGION', () => tl.checkpoint({ vtime: 11, regions: { vram: { data: ram } } }))
    expect(err.details?.region).toBe('vram')
    expect(err.details?.timeline).toBe('tl')
    await expectFails('CKPT_UNKNOWN_REGION', () => store.restore(first, 'vram', new Uint8Array(10)))
    await expectFails('CKPT_UNKNOWN_REGION', () => store.readChunk(first, 'vram', 0))
  })

  it('vtime equal to or before the last -> CKPT_VTIME_ORDER', async () => {
    for (const v of [10, 9, 0, 10n]) {
      const err = await expectFails('CKPT_VTIME_ORDER', () => tl.checkpoint({ vtime: v, regions: { ram: { data: ram } } }))
      expect(err.details?.last).toBe('10')
      expect(err.details?.vtime).toBe(String(v))
      expect(err.details?.timeline).toBe('tl')
    }
  })

  it('vtime order is checked against checkpoints still in the pipeline', async () => {
    const t2 = await store.timeline('queued', { regions: { ram: REGIONS.ram } })
    const p = t2.checkpoint({ vtime: 50, regions: { ram: { data: ram } } })
    const err = await caught(() => t2.checkpoint({ vtime: 40, regions: { ram: { data: ram } } }))
    expect(err.code).toBe('CKPT_VTIME_ORDER')
    expect(err.details?.last).toBe('50')
    const c = await p
    expect((await collect(store.log('queued'))).map((e) => e.cid.toString())).toEqual([c.cid.toString()])
  })

  it('negative or non-integer vtime -> CKPT_BAD_ARGUMENT', async () => {
    for (const v of [-1, 10.5, 1e300, Number.NaN, Number.POSITIVE_INFINITY, -1n, 2n ** 64n, '12a', '-3', '', undefined]) {
      await expectFails('CKPT_BAD_ARGUMENT', () => tl.checkpoint({ vtime: v as never, regions: { ram: { data: ram } } }))
    }
    await expectFails('CKPT_BAD_ARGUMENT', () => store.seek('tl', -5))
    await expectFails('CKPT_BAD_ARGUMENT', () => store.seek('tl', 1.25))
  })

  it('bad chunk sizes and region sizes -> CKPT_BAD_ARGUMENT', async () => {
    for (const chunkSize of [1000, 256, 2 << 20, 0, -4096, 4096.5, 3 << 10]) {
      const err = await expectFails('CKPT_BAD_ARGUMENT', () => store.timeline(`cs-${Math.abs(Math.round(chunkSize))}`, { regions: { ram: { size: 1 << 20, chunkSize } } }))
      expect(err.details?.region).toBe('ram')
      expect(err.details?.chunkSize).toBe(chunkSize)
    }
    for (const size of [0, -1, 1.5, Number.NaN, 2 ** 60]) {
      await expectFails('CKPT_BAD_ARGUMENT', () => store.timeline('sz', { regions: { ram: { size, chunkSize: 4096 } } }))
    }
    // the bounds themselves are fine
    const ok = await store.timeline('cs-ok', { regions: { a: { size: 1000, chunkSize: 512 }, b: { size: 3 << 20, chunkSize: 1 << 20 } } })
    expect(ok.regions).toEqual({ a: { size: 1000, chunkSize: 512 }, b: { size: 3 << 20, chunkSize: 1 << 20 } })
  })

  it('bad timeline, region and blob names -> CKPT_BAD_ARGUMENT', async () => {
    const bad = ['', ' ', '.hidden', '-x', '_x', 'a b', 'a\u0000b', 'tl@5', 'é', 'a\nb', 'x'.repeat(201)]
    for (const name of bad) {
      await expectFails('CKPT_BAD_ARGUMENT', () => store.timeline(name, { regions: REGIONS }))
      await expectFails('CKPT_BAD_ARGUMENT', () => store.seek(name, 1))
      await expectFails('CKPT_BAD_ARGUMENT', () => collect(store.log(name)))
    }
    // the longest allowed name is fine
    expect((await store.timeline('x'.repeat(200), { regions: REGIONS })).name).toBe('x'.repeat(200))
    for (const name of ['', 'a/b', 'a:b', 'x'.repeat(65), '.r']) {
      await expectFails('CKPT_BAD_ARGUMENT', () => store.timeline('regions-bad', { regions: { [name]: { size: 4096 } } }))
      await expectFails('CKPT_BAD_ARGUMENT', () => tl.checkpoint({ vtime: 11, blobs: { [name]: new Uint8Array(4) } }))
    }
  })

  it('timeline reopened with other regions -> CKPT_TIMELINE_CONFIG', async () => {
    const others = [
      { ram: REGIONS.ram },
      { ...REGIONS, ram: { size: REGIONS.ram.size, chunkSize: 8192 } },
      { ...REGIONS, ram: { size: REGIONS.ram.size + 4096, chunkSize: 4096 } },
      { ...REGIONS, vram: { size: 4096, chunkSize: 4096 } },
    ]
    for (const regions of others) {
      const err = await expectFails('CKPT_TIMELINE_CONFIG', () => store.timeline('tl', { regions }))
      expect(err.details?.timeline).toBe('tl')
    }
    // same regions (keys in another order, default chunk size spelled out) or none: fine
    expect(await store.timeline('tl', { regions: { disk: REGIONS.disk, ram: { size: REGIONS.ram.size } } })).toBe(tl)
    expect(await store.timeline('tl')).toBe(tl)
    // an unknown timeline without regions
    await expectFails('CKPT_NOT_FOUND', () => store.timeline('never-made'))
  })

  it('restore into a wrong-size buffer -> CKPT_WRONG_SIZE', async () => {
    for (const n of [0, REGIONS.ram.size - 1, REGIONS.ram.size + 1]) {
      const out = new Uint8Array(n).fill(7)
      const err = await expectFails('CKPT_WRONG_SIZE', () => store.restore(first, 'ram', out))
      expect(err.details?.region).toBe('ram')
      expect(out.every((x) => x === 7)).toBe(true) // untouched
    }
    await expectFails('CKPT_WRONG_SIZE', () => store.restore(first, 'disk', new Uint8Array(REGIONS.disk.size - 100)))
  })

  it('readChunk out of range -> CKPT_OUT_OF_RANGE', async () => {
    for (const i of [-1, 16, 1000, 0.5, Number.NaN]) {
      const err = await expectFails('CKPT_OUT_OF_RANGE', () => store.readChunk(first, 'ram', i))
      expect(err.details?.region).toBe('ram')
    }
    await expectFails('CKPT_OUT_OF_RANGE', () => store.readChunk(first, 'disk', 5))
    // the short last chunk is in range
    const last = await store.readChunk(first, 'disk', 4)
    expect(bytesEqual(last, disk.subarray(4 * 65536))).toBe(true)
  })

  it('unknown references -> CKPT_NOT_FOUND', async () => {
    for (const ref of ['nosuch', 'nosuch@5', 'tl@9', 'tl@0']) {
      const err = await expectFails('CKPT_NOT_FOUND', () => store.resolve(ref))
      expect(err.details?.ref).toBe(ref)
    }
    // a well-formed CID of nothing in the store
    const ghost = toCID(cidBytes(DAG_CBOR, blake3(Buffer.from('ghost'))))
    await expectFails('CKPT_NOT_FOUND', () => store.manifest(ghost))
    await expectFails('CKPT_NOT_FOUND', () => store.restore(ghost, 'ram', new Uint8Array(REGIONS.ram.size)))
    expect(await store.locate(ghost)).toBeUndefined()
    await expectFails('CKPT_NOT_FOUND', () => store.readBlob(first, 'nope'))
    expect(await store.seek('tl', 9)).toBeUndefined()
  })

  it('wrong argument types -> TypeError', async () => {
    await expectFails(TypeError, () => openStore(42 as never))
    await expectFails(TypeError, () => openStore(''))
    await expectFails(TypeError, () => store.timeline(42 as never, { regions: REGIONS }))
    await expectFails(TypeError, () => store.timeline('typed', { regions: { ram: null as never } }))
    await expectFails(TypeError, () => tl.checkpoint(null as never))
    await expectFails(TypeError, () => tl.checkpoint(undefined as never))
    await expectFails(TypeError, () => tl.checkpoint({ vtime: 11, regions: { ram: null as never } }))
    await expectFails(TypeError, () => tl.checkpoint({ vtime: 11, regions: { ram: { data: 42 as never } } }))
    await expectFails(TypeError, () => tl.checkpoint({ vtime: 11, regions: { ram: { data: Array.from(ram) as never } } }))
    await expectFails(TypeError, () => tl.checkpoint({ vtime: 11, regions: { ram: { data: ram, dirty: {} as never } } }))
    await expectFails(TypeError, () => tl.checkpoint({ vtime: 11, regions: { ram: { data: ram, dirty: { bitmap: [1, 2] } as never } } }))
    await expectFails(TypeError, () => tl.checkpoint({ vtime: 11, blobs: { cpu: 'state' as never } }))
    await expectFails(TypeError, () => tl.checkpoint({ vtime: 11, meta: { a: 1 as never } }))
    await expectFails(TypeError, () => store.restore(first, 'ram', 42 as never))
    await expectFails(TypeError, () => store.resolve(42 as never))
    await expectFails(TypeError, () => store.seek(42 as never, 1))
    await expectFails(TypeError, () => collect(store.log(42 as never)))
  })

  it('a rejected checkpoint consumes no vtime: the same vtime then succeeds', async () => {
    await expectFails('CKPT_OUT_OF_RANGE', () => tl.checkpoint({ vtime: 11, regions: { ram: { data: ram, dirty: [99] } } }))
    ram[5] ^= 0xff
    const c = await tl.checkpoint({ vtime: 11, regions: { ram: { data: ram, dirty: [0] } } })
    expect(c.vtime).toBe(11n)
    const out = new Uint8Array(REGIONS.ram.size)
    await store.restore(c.cid, 'ram', out)
    expect(bytesEqual(out, ram)).toBe(true)
    expect((await collect(store.log('tl'))).map((e) => e.vtime)).toEqual([10n, 11n])
  })

  it('a second openStore from another process -> CKPT_LOCKED naming the holder', async () => {
    const script = `
      import { openStore } from ${JSON.stringify(DIST)}
      try {
        const s = await openStore(process.env.CKPT_TEST_DIR, { threads: 0 })
        await s.close()
        console.log(JSON.stringify({ opened: true }))
      } catch (e) {
        console.log(JSON.stringify({ name: e.name, code: e.code, details: e.details }))
      }`
    const out = await new Promise<string>((resolve, reject) =>
      execFile(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, CKPT_TEST_DIR: dir }, timeout: 30_000 }, (err, stdout) =>
        err ? reject(err) : resolve(stdout),
      ),
    )
    const r = JSON.parse(out.trim().split('\n').pop()!)
    expect(r.code).toBe('CKPT_LOCKED')
    expect(r.details.dir).toBe(dir)
    expect(r.details.holder.pid).toBe(process.pid)
    expect(r.details.holder.host).toBe(os.hostname())
    expect(typeof r.details.holder.since).toBe('string')
    // the failed open took nothing from the holder: its lock note and its store still work
    expect(JSON.parse(fs.readFileSync(path.join(dir, 'lock.json'), 'utf8')).pid).toBe(process.pid)
    const before = await snapshot(store)
    expect(before.checkpoints).toBeGreaterThan(0)
  })

  it('a second openStore in the same process -> CKPT_LOCKED', async () => {
    const err = await caught(() => openStore(dir))
    expect(err.code).toBe('CKPT_LOCKED')
    expect((err.details?.holder as { pid?: number })?.pid).toBe(process.pid)
    expect((await snapshot(store)).checkpoints).toBeGreaterThan(0)
  })

  it('a second openStore in the same process through a symlink (or a read-only one) -> CKPT_LOCKED, never a second writer', async () => {
    const link = path.join(path.dirname(dir), 'store-link')
    fs.symlinkSync(dir, link)
    try {
      for (const opts of [{}, { readOnly: true }]) {
        const err = await caught(() => openStore(link, { threads: 0, ...opts }))
        expect(err.code).toBe('CKPT_LOCKED')
      }
      expect((await snapshot(store)).checkpoints).toBeGreaterThan(0)
    } finally {
      fs.rmSync(link)
    }
  })

  it('checkpoint and reads after close -> CKPT_CLOSED', async () => {
    const d = tmpStorePath('ckpt-err-closed-')
    const s = await openStore(d, { threads: 0 })
    const t = await s.timeline('t', { regions: { ram: REGIONS.ram } })
    const c = await t.checkpoint({ vtime: 1, regions: { ram: { data: ram } } })
    await s.close()
    await s.close() // idempotent
    expect((await caught(() => t.checkpoint({ vtime: 2, regions: { ram: { data: ram } } }))).code).toBe('CKPT_CLOSED')
    expect((await caught(() => s.timeline('t'))).code).toBe('CKPT_CLOSED')
    expect((await caught(() => s.seek('t', 1))).code).toBe('CKPT_CLOSED')
    expect((await caught(() => s.resolve('t'))).code).toBe('CKPT_CLOSED')
    expect((await caught(() => s.restore(c.cid, 'ram', new Uint8Array(REGIONS.ram.size)))).code).toBe('CKPT_CLOSED')
    expect((await caught(() => collect(s.log()))).code).toBe('CKPT_CLOSED')
    expect((await caught(() => s.stats())).code).toBe('CKPT_CLOSED')
    // nothing was stored after close
    const again = await openStore(d, { threads: 0 })
    try {
      expect((await collect(again.log('t'))).map((e) => e.vtime)).toEqual([1n])
    } finally {
      await again.close()
    }
  })

  it('close waits for queued checkpoints, which then are stored', async () => {
    const d = tmpStorePath('ckpt-err-closing-')
    const s = await openStore(d)
    const t = await s.timeline('t', { regions: { ram: REGIONS.ram } })
    const data = makeRng(9).bytes(REGIONS.ram.size)
    const p = t.checkpoint({ vtime: 1, regions: { ram: { data } } })
    const closing = s.close()
    // once close() started, new checkpoints are refused
    expect((await caught(() => t.checkpoint({ vtime: 2, regions: { ram: { data } } }))).code).toBe('CKPT_CLOSED')
    const c = await p
    await closing
    const again = await openStore(d, { threads: 0 })
    try {
      expect((await collect(again.log('t'))).map((e) => e.cid.toString())).toEqual([c.cid.toString()])
    } finally {
      await again.close()
    }
  })
})

describe('opening things that are not stores', () => {
  it('a non-empty directory that is not a store -> CKPT_BAD_STORE, left untouched', async () => {
    const d = tmpDir('ckpt-err-notstore-')
    fs.writeFileSync(path.join(d, 'notes.txt'), 'mine')
    const err = await caught(() => openStore(d))
    expect(err.code).toBe('CKPT_BAD_STORE')
    expect(err.details?.dir).toBe(d)
    expect(fs.readdirSync(d)).toEqual(['notes.txt'])
  })

  it('a regular file -> CKPT_BAD_STORE', async () => {
    const f = path.join(tmpDir('ckpt-err-file-'), 'plain')
    fs.writeFileSync(f, 'not a directory')
    const err = await caught(() => openStore(f))
    expect(err.code).toBe('CKPT_BAD_STORE')
    expect(fs.readFileSync(f, 'utf8')).toBe('not a directory')
  })

  it('a store marker of another format -> CKPT_BAD_STORE; of another version -> CKPT_VERSION; unreadable -> CKPT_BAD_STORE', async () => {
    const a = tmpDir('ckpt-err-marker-')
    fs.writeFileSync(path.join(a, 'CKPT'), JSON.stringify({ format: 'other', version: 1 }))
    expect((await caught(() => openStore(a))).code).toBe('CKPT_BAD_STORE')
    const b = tmpDir('ckpt-err-marker-')
    fs.writeFileSync(path.join(b, 'CKPT'), JSON.stringify({ format: 'ckpt-store', version: 99 }))
    expect((await caught(() => openStore(b))).code).toBe('CKPT_VERSION')
    const c = tmpDir('ckpt-err-marker-')
    fs.writeFileSync(path.join(c, 'CKPT'), '{not json')
    expect((await caught(() => openStore(c))).code).toBe('CKPT_BAD_STORE')
  })

  it('mustExist on a missing store -> CKPT_BAD_STORE, creates nothing', async () => {
    const d = tmpStorePath('ckpt-err-missing-')
    expect((await caught(() => openStore(d, { mustExist: true }))).code).toBe('CKPT_BAD_STORE')
    expect(fs.existsSync(d)).toBe(false)
  })

  it('an empty directory becomes a store', async () => {
    const d = tmpDir('ckpt-err-empty-')
    const s = await openStore(d, { threads: 0 })
    await s.close()
    expect(fs.existsSync(path.join(d, 'CKPT'))).toBe(true)
  })
})

describe('failures inside the pipeline, and several handles on one timeline', () => {
  const G = { ram: { size: 64 * 1024, chunkSize: 4096 }, disk: { size: 256 * 1024, chunkSize: 65536 } }

  /**
   * Timeline `f` with checkpoint 10 stored; then A (vtime 20: ram chunk 1 changed, disk from a file)
   * whose file shrinks before A runs, so A fails in the pipeline; B (vtime 30: ram chunk 3 changed,
   * dirty hint [3]) is queued behind A before A's failure is known.
   */
  async function failedThenQueued() {
    const d = tmpStorePath('ckpt-err-pipe-')
    const s = await openStore(d)
    const rng = makeRng(99)
    const t = await s.timeline('f', { regions: G })
    const ram = rng.bytes(G.ram.size)
    const file = path.join(tmpDir('ckpt-err-pipe-f-'), 'disk.img')
    fs.writeFileSync(file, rng.bytes(G.disk.size))
    await t.checkpoint({ vtime: 10, regions: { ram: { data: ram }, disk: { data: file } } })
    // keep the one-at-a-time pipeline busy, so A cannot start before its file shrinks
    const busy = await s.timeline('busy', { regions: { big: { size: 8 << 20, chunkSize: 65536 } } })
    const pBusy = busy.checkpoint({ vtime: 1, regions: { big: { data: rng.bytes(8 << 20) } } })
    ram.set(rng.bytes(4096), 1 * 4096)
    const pA = t.checkpoint({ vtime: 20, regions: { ram: { data: ram, dirty: [1] }, disk: { data: file } } })
    await pA.copied
    fs.truncateSync(file, G.disk.size - 1000)
    ram.set(rng.bytes(4096), 3 * 4096)
    const pB = t.checkpoint({ vtime: 30, regions: { ram: { data: ram, dirty: [3] } } })
    await pB.copied
    const ramAtB = ram.slice()
    pB.catch(() => {})
    await pBusy
    const errA = await caught(() => pA)
    return { s, t, errA, pB, ramAtB }
  }

  it('a checkpoint that fails in the pipeline is reported with a code and stores nothing', async () => {
    const { s, errA, pB } = await failedThenQueued()
    try {
      expect(['CKPT_WRONG_SIZE', 'CKPT_IO']).toContain(errA.code)
      await pB.catch(() => {})
      expect((await collect(s.log('f'))).map((e) => e.vtime)).not.toContain(20n)
    } finally {
      await s.close()
    }
  })

  // Order is checked against every vtime checkpoint() accepted, including ones that failed later in
  // the pipeline: after A (20) fails and B (30) was queued, vtime 25 is refused whatever became of B.
  it('after a failed checkpoint, vtime order still holds against checkpoints queued behind it', async () => {
    const { s, t, pB } = await failedThenQueued()
    try {
      await pB.catch(() => undefined)
      const err = await caught(() => t.checkpoint({ vtime: 25, regions: {} }))
      expect(err.code).toBe('CKPT_VTIME_ORDER')
      expect(err.details?.last).toBe('30')
    } finally {
      await s.close()
    }
  })

  // B's dirty hint ([3]) is relative to A, the checkpoint issued just before it. When A fails, B must
  // not resolve with content missing A's changes: it is rejected (CKPT_PREVIOUS_FAILED) or complete.
  it('a dirty-hint checkpoint queued behind a failed one is either rejected or complete', async () => {
    const { s, pB, ramAtB } = await failedThenQueued()
    try {
      const b = await pB.catch((err: { code?: string }) => {
        expect(err.code).toMatch(/^CKPT_/)
        return undefined
      })
      if (b) {
        const out = new Uint8Array(G.ram.size)
        await s.restore(b.cid, 'ram', out)
        expect(bytesEqual(out, ramAtB)).toBe(true)
      }
    } finally {
      await s.close()
    }
  })

  // Two overlapping timeline() calls for one name get the same handle, so one order check.
  it('two overlapping timeline() calls for one name share the order check', async () => {
    const d = tmpStorePath('ckpt-err-dup-')
    const s = await openStore(d, { threads: 0 })
    try {
      const data = makeRng(3).bytes(G.ram.size)
      const [a, b] = await Promise.all([s.timeline('dup', { regions: { ram: G.ram } }), s.timeline('dup', { regions: { ram: G.ram } })])
      await a.checkpoint({ vtime: 10, regions: { ram: { data } } })
      const err = await caught(() => b.checkpoint({ vtime: 5, regions: { ram: { data } } }))
      expect(err.code).toBe('CKPT_VTIME_ORDER')
      expect((await collect(s.log('dup'))).map((e) => e.vtime)).toEqual([10n])
    } finally {
      await s.close()
    }
  })
})
