/**
 * Time travel: restore by difference (store.restore with from/dirty/check, `ckpt restore --from`) and
 * the cursor (goto/dirty/current), against a model that keeps a copy of every checkpoint's regions and
 * blobs. Every jump must leave the buffers byte-identical to the target checkpoint, writing only the
 * chunks that differ plus the dirty ones.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openStore, type CkptStore, type JumpResult } from '../../src/index.js'
import { makeRng } from '../helpers/rng.js'
import { bytesEqual, caught, removeTmpDirs, tmpDir, tmpStorePath } from '../helpers/tmp.js'

const CLI = path.resolve('dist/cli/ckpt.js')
/** 1,200 chunks of 512 B: a tree of height 2; 64 chunks of 4 KiB: height 1 */
const REGIONS = { ram: { size: 600 * 1024, chunkSize: 512 }, disk: { size: 256 * 1024, chunkSize: 4096 } } as const
type Name = keyof typeof REGIONS
const NAMES = Object.keys(REGIONS) as Name[]
const COUNT = 30

interface Snap {
  cid: string
  vtime: bigint
  regions: Record<Name, Uint8Array>
  blobs: Record<string, Uint8Array>
}

let store: CkptStore
const snaps: Snap[] = []
const seeded = makeRng(1313)
/** integers in [0, n), bytes */
const rng = { int: (n: number) => seeded.int(0, n), bytes: (n: number) => seeded.bytes(n) }

/** chunk indexes where a and b differ */
function differing(a: Uint8Array, b: Uint8Array, cs: number): number[] {
  const out: number[] = []
  for (let i = 0; i * cs < a.length; i++) if (!bytesEqual(a.subarray(i * cs, (i + 1) * cs), b.subarray(i * cs, (i + 1) * cs))) out.push(i)
  return out
}

function expectAt(regions: Readonly<Record<string, Uint8Array>>, s: Snap, what: string) {
  for (const n of NAMES) {
    const bad = differing(regions[n]!, s.regions[n], REGIONS[n].chunkSize)
    expect(bad, `${what}: region ${n} differs at chunks ${bad.slice(0, 5).join(',')}`).toEqual([])
  }
}

beforeAll(async () => {
  store = await openStore(tmpStorePath('ckpt-travel-'), { threads: 2 })
  const tl = await store.timeline('t', { regions: REGIONS })
  const live: Record<Name, Uint8Array> = { ram: new Uint8Array(REGIONS.ram.size), disk: new Uint8Array(REGIONS.disk.size) }
  const history: Uint8Array[] = []
  for (let k = 0; k < COUNT; k++) {
    for (const n of NAMES) {
      const cs = REGIONS[n].chunkSize
      const chunks = REGIONS[n].size / cs
      const writes = k === 0 ? chunks / 2 : 1 + rng.int(n === 'ram' ? 40 : 4)
      for (let w = 0; w < writes; w++) {
        const i = rng.int(chunks)
        const r = rng.int(10)
        // new content, a hole again, or an earlier chunk's content back (A -> B -> A)
        const bytes = r < 6 ? rng.bytes(cs) : r < 8 ? new Uint8Array(cs) : (history[rng.int(history.length || 1)] ?? rng.bytes(cs)).subarray(0, cs)
        if (bytes.length === cs) {
          live[n].set(bytes, i * cs)
          if (r < 6 && history.length < 200) history.push(bytes)
        }
      }
    }
    const blobs: Record<string, Uint8Array> = { cpu: new TextEncoder().encode(`cpu at ${k}`) }
    if (k % 3 === 0) blobs.dev = rng.bytes(1000 + k)
    const c = await tl.checkpoint({ vtime: BigInt(k) * 10n, regions: { ram: { data: live.ram }, disk: { data: live.disk } }, blobs })
    snaps.push({ cid: c.cid.toString(), vtime: BigInt(k) * 10n, regions: { ram: live.ram.slice(), disk: live.disk.slice() }, blobs: { ...(k % 3 === 0 ? {} : snaps[k - 1]?.blobs), ...blobs } })
  }
  // blobs carry over when a checkpoint omits them: the model's copy says what the manifest holds
  for (const s of snaps) {
    const m = await store.manifest(s.cid)
    s.blobs = {}
    for (const b of Object.keys(m.blobs)) s.blobs[b] = await store.readBlob(s.cid, b)
  }
}, 60_000)

afterAll(async () => {
  await store?.close()
  removeTmpDirs()
})

describe('restore by difference', () => {
  it('into a buffer: B exactly, writing only the diff plus the dirty chunks', async () => {
    for (let trial = 0; trial < 20; trial++) {
      const a = snaps[rng.int(COUNT)]!
      const b = snaps[rng.int(COUNT)]!
      for (const n of NAMES) {
        const cs = REGIONS[n].chunkSize
        const buf = a.regions[n].slice()
        const dirty = Array.from({ length: rng.int(5) }, () => rng.int(REGIONS[n].size / cs))
        for (const i of dirty) buf.set(rng.bytes(cs), i * cs)
        const r = await store.restore(b.cid, n, buf, { from: a.cid, dirty })
        expect(bytesEqual(buf, b.regions[n]), `${n} ${a.vtime} -> ${b.vtime}`).toBe(true)
        const wrote = r.written.flatMap((w) => Array.from({ length: w.end - w.start }, (_, k) => w.start + k))
        const must = new Set([...differing(a.regions[n], b.regions[n], cs), ...dirty])
        // every chunk whose content differs is written; nothing beyond the CID diff and the dirty set
        for (const i of must) expect(wrote).toContain(i)
        expect(wrote.length).toBeLessThanOrEqual(must.size + 0)
        expect(r.mode).toBe('difference')
        expect(r.chunksWritten + r.holes).toBe(wrote.length)
      }
    }
  })

  it('into shared memory (the workers write in place) and into a file in place', async () => {
    const a = snaps[3]!
    const b = snaps[20]!
    const shared = new Uint8Array(new SharedArrayBuffer(REGIONS.ram.size))
    shared.set(a.regions.ram)
    await store.restore(b.cid, 'ram', shared, { from: a.cid })
    expect(bytesEqual(shared, b.regions.ram)).toBe(true)
    const file = path.join(tmpDir('ckpt-travel-file-'), 'ram.bin')
    fs.writeFileSync(file, a.regions.ram)
    const r = await store.restore(b.cid, 'ram', file, { from: a.cid })
    expect(bytesEqual(fs.readFileSync(file), b.regions.ram)).toBe(true)
    expect(r.chunksWritten + r.holes).toBeLessThan(REGIONS.ram.size / 512)
  })

  it('an untruthful dirty set leaves the unlisted writes; check mode finds and repairs them', async () => {
    const a = snaps[10]!
    const b = snaps[11]!
    const buf = a.regions.ram.slice()
    const same = differing(a.regions.ram, b.regions.ram, 512)
    // a chunk equal in a and b, overwritten without saying so
    const untouched = Array.from({ length: 1200 }, (_, i) => i).find((i) => !same.includes(i))!
    buf.set(rng.bytes(512), untouched * 512)
    await store.restore(b.cid, 'ram', buf, { from: a.cid })
    expect(differing(buf, b.regions.ram, 512)).toEqual([untouched])
    buf.set(rng.bytes(512), untouched * 512)
    const r = await store.restore(b.cid, 'ram', buf, { from: a.cid, check: true })
    expect(bytesEqual(buf, b.regions.ram)).toBe(true)
    expect(r.mode).toBe('checked')
    expect(r.mismatched).toBe(1)
    // check without from: whatever the buffer holds
    const junk = rng.bytes(REGIONS.ram.size)
    const r2 = await store.restore(b.cid, 'ram', junk, { check: true })
    expect(bytesEqual(junk, b.regions.ram)).toBe(true)
    expect(r2.mismatched).toBe(1200)
  })

  it('bad arguments are CKPT_* errors and write nothing', async () => {
    const a = snaps[1]!
    const b = snaps[2]!
    const buf = a.regions.ram.slice()
    expect((await caught(() => store.restore(b.cid, 'ram', buf, { from: a.cid, dirty: [1200] }))).code).toBe('CKPT_OUT_OF_RANGE')
    expect((await caught(() => store.restore(b.cid, 'ram', buf, { from: a.cid, dirty: [1.5] }))).code).toBe('CKPT_OUT_OF_RANGE')
    expect((await caught(() => store.restore(b.cid, 'ram', buf, { dirty: [1] }))).code).toBe('CKPT_BAD_ARGUMENT')
    expect((await caught(() => store.restore(b.cid, 'ram', buf.subarray(1), { from: a.cid }))).code).toBe('CKPT_WRONG_SIZE')
    expect((await caught(() => store.restore(b.cid, 'nope', buf, { from: a.cid }))).code).toBe('CKPT_UNKNOWN_REGION')
    expect((await caught(() => store.restore(b.cid, 'ram', { write: async () => {} } as never, { from: a.cid }))).code).toBe('CKPT_BAD_ARGUMENT')
    const missing = path.join(tmpDir('ckpt-travel-missing-'), 'none.bin')
    expect((await caught(() => store.restore(b.cid, 'ram', missing, { from: a.cid }))).code).toBe('CKPT_NOT_FOUND')
    expect(fs.existsSync(missing)).toBe(false)
    expect(bytesEqual(buf, a.regions.ram)).toBe(true)
  })
})

describe('cursor', () => {
  it('goto by CID, TIMELINE@VTIME and vtime, with writes between jumps: always the checkpoint exactly', async () => {
    const cur = await store.cursor('t')
    expect(cur.current).toBeUndefined()
    let at = COUNT - 1
    let r: JumpResult = await cur.goto(snaps[at]!.cid)
    expectAt(cur.regions, snaps[at]!, 'first goto')
    expect(r.from).toBeUndefined()
    for (let j = 0; j < 60; j++) {
      // the debugger replays: it writes some chunks and says so
      for (const n of NAMES) {
        const cs = REGIONS[n].chunkSize
        const pages = Array.from({ length: rng.int(6) }, () => rng.int(REGIONS[n].size / cs))
        for (const i of pages) cur.regions[n]!.set(rng.bytes(cs), i * cs)
        cur.dirty(n, pages)
      }
      const to = rng.int(4) === 0 ? rng.int(COUNT) : Math.max(0, at - 1 - rng.int(5))
      const how = rng.int(3)
      r = await cur.goto(how === 0 ? snaps[to]!.cid : how === 1 ? `t@${snaps[to]!.vtime}` : snaps[to]!.vtime + BigInt(rng.int(10)))
      expectAt(cur.regions, snaps[to]!, `jump ${j} to ${to}`)
      expect(cur.current!.cid.toString()).toBe(snaps[to]!.cid)
      expect(cur.current!.vtime).toBe(snaps[to]!.vtime)
      expect(r.to.cid.toString()).toBe(snaps[to]!.cid)
      expect(r.from!.cid.toString()).toBe(snaps[at]!.cid)
      for (const [b, bytes] of Object.entries(snaps[to]!.blobs)) expect(bytesEqual(cur.blobs[b]!, bytes), `blob ${b}`).toBe(true)
      expect(Object.keys(cur.blobs).sort()).toEqual(Object.keys(snaps[to]!.blobs).sort())
      at = to
    }
  })

  it('a jump to a neighbour writes a fraction of the regions; a jump to itself writes only the dirty chunks', async () => {
    const cur = await store.cursor('t')
    await cur.goto(snaps[15]!.cid)
    const r = await cur.goto(snaps[14]!.cid)
    const diff = differing(snaps[15]!.regions.ram, snaps[14]!.regions.ram, 512).length
    expect(r.regions.ram!.chunksWritten).toBeGreaterThanOrEqual(diff)
    expect(r.regions.ram!.chunksWritten).toBeLessThan(200)
    // several calls, out of order and repeating: one sorted set
    cur.dirty('ram', [9])
    cur.dirty('ram', [7, 7, 9])
    cur.regions.ram!.fill(0xee, 7 * 512, 8 * 512)
    cur.regions.ram!.fill(0xee, 9 * 512, 10 * 512)
    const again = await cur.goto(snaps[14]!.cid)
    expect(again.regions.ram!.chunksWritten).toBe(2)
    expect(again.regions.disk!.chunksWritten).toBe(0)
    expect(again.blobsChanged).toEqual([])
    expectAt(cur.regions, snaps[14]!, 'same checkpoint')
  })

  it('caller buffers: with `at` trusted, without it checked on the first jump', async () => {
    const ram = new Uint8Array(REGIONS.ram.size)
    const disk = new Uint8Array(REGIONS.disk.size)
    ram.set(snaps[5]!.regions.ram)
    disk.set(snaps[5]!.regions.disk)
    const cur = await store.cursor('t', { buffers: { ram, disk }, at: snaps[5]!.cid })
    expect(cur.current!.cid.toString()).toBe(snaps[5]!.cid)
    expect(cur.regions.ram).toBe(ram)
    await cur.goto(snaps[8]!.cid)
    expectAt({ ram, disk }, snaps[8]!, 'caller buffers')
    const junk = { ram: rng.bytes(REGIONS.ram.size), disk: rng.bytes(REGIONS.disk.size) }
    const c2 = await store.cursor('t', { buffers: junk })
    const r = await c2.goto(snaps[2]!.cid)
    expectAt(junk, snaps[2]!, 'checked first jump')
    expect(r.regions.ram!.mismatched).toBeGreaterThan(1000)
  })

  it('a cursor over some regions only', async () => {
    const cur = await store.cursor('t', { regions: ['disk'] })
    expect(Object.keys(cur.regions)).toEqual(['disk'])
    await cur.goto(snaps[9]!.cid)
    const r = await cur.goto(snaps[7]!.cid)
    expect(Object.keys(r.regions)).toEqual(['disk'])
    expect(bytesEqual(cur.regions.disk!, snaps[7]!.regions.disk)).toBe(true)
    expect((await caught(() => store.cursor('t', { regions: ['vram'] }))).code).toBe('CKPT_UNKNOWN_REGION')
    expect((await caught(() => store.cursor('t', { regions: 'ram' as never }))).code).toBe('CKPT_BAD_ARGUMENT')
  })

  it('errors: unknown timeline, no checkpoint at a vtime, wrong buffers, unknown region, bad dirty chunks: refused before anything is written', async () => {
    expect((await caught(() => store.cursor('nope'))).code).toBe('CKPT_NOT_FOUND')
    expect((await caught(() => store.cursor('t', { buffers: { ram: new Uint8Array(10) } }))).code).toBe('CKPT_WRONG_SIZE')
    expect((await caught(() => store.cursor('t', { buffers: { vram: new Uint8Array(10) } }))).code).toBe('CKPT_UNKNOWN_REGION')
    const cur = await store.cursor('t')
    await cur.goto(snaps[4]!.cid)
    expect((await caught(() => cur.goto(-1))).code).toBe('CKPT_BAD_ARGUMENT')
    expect((await caught(() => cur.goto('t@nope'))).code).toMatch(/^CKPT_/)
    expect((await caught(() => cur.dirty('vram', [1]))).code).toBe('CKPT_UNKNOWN_REGION')
    expect((await caught(() => cur.dirty('ram', [5000]))).code).toBe('CKPT_OUT_OF_RANGE')
    // refused before anything is written: still at checkpoint 4
    expect(cur.current!.cid.toString()).toBe(snaps[4]!.cid)
    expectAt(cur.regions, snaps[4]!, 'after refusals')
  })
})

describe('ckpt restore --from', () => {
  const dir = () => store.dir
  it('rewrites the file in place and reports the chunks it wrote (--json)', async () => {
    await store.close()
    const out = path.join(tmpDir('ckpt-travel-cli-'), 'ram.bin')
    execFileSync('node', [CLI, 'restore', '--store', dir(), snaps[25]!.cid, '--region', 'ram', '--out', out])
    expect(bytesEqual(fs.readFileSync(out), snaps[25]!.regions.ram)).toBe(true)
    const fd = fs.openSync(out, 'r+')
    fs.writeSync(fd, rng.bytes(512), 0, 512, 3 * 512)
    fs.closeSync(fd)
    const j = JSON.parse(execFileSync('node', [CLI, 'restore', '--store', dir(), 't@200', '--region', 'ram', '--out', out, '--from', snaps[25]!.cid, '--dirty', '3', '--json']).toString())
    expect(bytesEqual(fs.readFileSync(out), snaps[20]!.regions.ram)).toBe(true)
    expect(j).toMatchObject({ cid: snaps[20]!.cid, from: snaps[25]!.cid, mode: 'difference', region: 'ram' })
    const wrote = (j.written as { start: number; end: number }[]).reduce((n, w) => n + w.end - w.start, 0)
    expect(wrote).toBe(j.chunksWritten + j.holesWritten)
    expect(wrote).toBeGreaterThanOrEqual(differing(snaps[25]!.regions.ram, snaps[20]!.regions.ram, 512).length)
    expect(wrote).toBeLessThan(1200)
    // --check repairs an unlisted write
    const fd2 = fs.openSync(out, 'r+')
    fs.writeSync(fd2, rng.bytes(512), 0, 512, 100 * 512)
    fs.closeSync(fd2)
    const k = JSON.parse(execFileSync('node', [CLI, 'restore', '--store', dir(), 't@200', '--region', 'ram', '--out', out, '--check', '--json']).toString())
    expect(k).toMatchObject({ mode: 'checked', mismatched: 1, chunksWritten: 1 })
    expect(bytesEqual(fs.readFileSync(out), snaps[20]!.regions.ram)).toBe(true)
    // usage errors: --dirty without --from, --from with a blob or stdout
    const bad = (args: string[]) => spawnSync('node', [CLI, 'restore', '--store', dir(), 't', ...args])
    expect(bad(['--region', 'ram', '--out', out, '--dirty', '1']).status).toBe(2)
    expect(bad(['--blob', 'cpu', '--out', out, '--from', 't@0']).status).toBe(2)
    expect(bad(['--region', 'ram', '--out', '-', '--from', 't@0']).status).toBe(2)
    expect(bad(['--region', 'ram', '--out', out, '--from', 't@0', '--dirty', 'x']).status).toBe(2)
    // a file of another size: CKPT_WRONG_SIZE, untouched
    fs.truncateSync(out, 1000)
    const r = bad(['--region', 'ram', '--out', out, '--from', 't@0', '--json'])
    expect(JSON.parse(r.stdout.toString()).error.code).toBe('CKPT_WRONG_SIZE')
    expect(fs.statSync(out).size).toBe(1000)
    store = await openStore(dir())
  })
})
