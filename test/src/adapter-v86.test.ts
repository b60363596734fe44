/**
 * The v86 adapter: split/join and save/restore byte-identical on synthetic states (always) and on real
 * states of v86 running SeaBIOS and a 512-byte boot sector (test/fixtures/v86-boot.S) under a
 * deterministic driver; a restored checkpoint continues exactly like the uninterrupted run.
 *
 * The emulator part needs Debian's SeaBIOS (bios.bin, vgabios-stdvga.bin) in .guest/ (or
 * $V86_GUEST_DIR): fetched with `node scripts/fetch-guest.mjs --bios-only` when missing; without apt
 * those tests are skipped with a message.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { gotoV86, v86Clock, type V86Clock } from '../../src/adapters/v86.js'
import { openStore, restoreV86, saveV86, saveV86State, splitV86State, joinV86State, v86Regions, type CkptStore, type V86Checkpoint } from '../../src/index.js'
import { bytesEqual, caught, removeTmpDirs, tmpStorePath } from '../helpers/tmp.js'
import { bootBiosGuest, noBios as biosMissing } from '../helpers/v86-guest.js'

// ------------------------------------------------------------------------------------------------
// synthetic states, laid out exactly as v86's save_state() does (STATE_VERSION 6)

type Tree = unknown
const MAGIC = 0x86768676

/** v86's save_object + save_state: typed arrays become {__state_type__, buffer_id} in depth-first order. */
function v86State(tree: Tree, opts: { version?: number } = {}): Uint8Array {
  const buffers: Uint8Array[] = []
  const conv = (x: unknown): unknown => {
    if (Array.isArray(x)) return x.map(conv)
    if (ArrayBuffer.isView(x)) {
      const v = x as Uint8Array
      buffers.push(new Uint8Array(v.buffer, v.byteOffset, v.byteLength))
      return { __state_type__: v.constructor.name, buffer_id: buffers.length - 1 }
    }
    return x === undefined ? null : x
  }
  const state = conv(tree)
  const infos: { offset: number; length: number }[] = []
  let total = 0
  for (const b of buffers) {
    infos.push({ offset: total, length: b.length })
    total = (total + b.length + 3) & ~3
  }
  const info = new TextEncoder().encode(JSON.stringify({ buffer_infos: infos, state }))
  const start = (16 + info.length + 3) & ~3
  const out = new Uint8Array(start + total)
  const dv = new DataView(out.buffer)
  dv.setUint32(0, MAGIC, true)
  dv.setInt32(4, opts.version ?? 6, true)
  dv.setInt32(8, out.length, true)
  dv.setInt32(12, info.length, true)
  out.set(info, 16)
  buffers.forEach((b, i) => out.set(b, start + infos[i]!.offset))
  return out
}

/** A guest: RAM (pages filled by their index+salt where `pages` says), VGA, odd-sized device buffers. */
function synthState(memPages: number, pages: Iterable<[number, number]>, salt = 0, opts: { vram?: number; disk?: Uint8Array } = {}): Uint8Array {
  const ram = new Uint8Array(memPages * 4096)
  for (const [p, v] of pages) ram.fill(v, p * 4096, p * 4096 + 4096)
  const bitmap = new Uint8Array((memPages + 7) >> 3)
  const present: Uint8Array[] = []
  for (let p = 0; p < memPages; p++) {
    const pg = ram.subarray(p * 4096, p * 4096 + 4096)
    if (pg.some((x) => x !== 0)) {
      bitmap[p >> 3]! |= 1 << (p & 7)
      present.push(pg)
    }
  }
  const packed = new Uint8Array(present.length * 4096)
  present.forEach((pg, i) => packed.set(pg, i * 4096))
  const vga: unknown[] = []
  vga[0] = opts.vram ?? 65536
  vga[6] = new Uint8Array(8192).fill(7)
  vga[39] = new Uint8Array(opts.vram ?? 65536).fill(salt & 1, 0, 4096 * (1 + (salt % 3)))
  vga[61] = new Uint8Array(4096 * 3)
  const s: unknown[] = []
  s[0] = ram.length
  s[1] = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, salt & 255])
  s[2] = new Int32Array([salt, -1, 2, -3, 4, -5, 6, -7])
  s[43] = new Uint32Array([salt * 1000, 0])
  s[47] = [1, new Uint8Array(5).fill(salt & 255), 'rtc', null, true, 1.5]
  s[52] = vga
  s[58] = [new Float64Array([salt / 3, 0.25, -1e300])]
  if (opts.disk) {
    const fdc: unknown[] = []
    fdc[44] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, [opts.disk.length, opts.disk]]
    s[55] = fdc
  }
  s[59] = [{ __state_type__: 'Map', args: [[1, 'a']] }, new Uint16Array(3).fill(salt)]
  s[77] = packed
  s[78] = bitmap
  s[86] = new Int32Array([salt])
  return v86State(s)
}

const pagesOf = (list: number[], v = 1) => list.map((p): [number, number] => [p, (v + p) & 255 || 1])

describe('v86 states: split and join', () => {
  it('split then join gives the state back byte for byte (odd buffer lengths, zero pages, VGA, a disk)', () => {
    const disk = new Uint8Array(3 * 4096 + 5).fill(9, 100, 5000)
    for (const st of [synthState(64, pagesOf([0, 1, 5, 63]), 1), synthState(64, [], 2), synthState(33, pagesOf([32, 7]), 3, { disk })]) {
      const parts = splitV86State(st)
      expect(Object.keys(parts.blobs).sort()).toEqual(['v86', 'v86.bufs', 'v86.head'])
      expect(bytesEqual(joinV86State(parts), st)).toBe(true)
      // regions the caller does not want stay in v86.bufs
      expect(bytesEqual(joinV86State(splitV86State(st, { regions: [] })), st)).toBe(true)
      expect(bytesEqual(joinV86State(splitV86State(st.buffer as ArrayBuffer)), st)).toBe(true)
    }
    const withDisk = splitV86State(synthState(33, pagesOf([1]), 3, { disk }))
    expect(bytesEqual(withDisk.regions.fda!, disk)).toBe(true)
  })

  it('RAM lands at each page\'s guest address; absent pages are zero', () => {
    const st = synthState(16, pagesOf([3, 9], 40))
    const { regions } = splitV86State(st)
    const ram = regions.ram!
    expect(ram.length).toBe(16 * 4096)
    expect(ram[3 * 4096]).toBe(43)
    expect(ram[9 * 4096 + 4095]).toBe(49)
    expect(ram.subarray(0, 3 * 4096).every((b) => b === 0)).toBe(true)
    expect(v86Regions(st)).toEqual({
      ram: { size: 16 * 4096, chunkSize: 4096 },
      vram: { size: 65536, chunkSize: 4096 },
      'vga-planes': { size: 8192, chunkSize: 4096 },
      'vga-pixels': { size: 12288, chunkSize: 4096 },
    })
  })

  it('malformed states are CKPT_BAD_STATE', async () => {
    const st = synthState(16, pagesOf([1, 2]))
    const dv = (u: Uint8Array) => new DataView(u.buffer, u.byteOffset, u.byteLength)
    const bad: [string, Uint8Array][] = []
    bad.push(['truncated', st.slice(0, st.length - 4)])
    bad.push(['empty', new Uint8Array(0)])
    bad.push(['header only', st.slice(0, 16)])
    const magic = st.slice()
    magic[0] = 0
    bad.push(['magic', magic])
    bad.push(['version 5', v86State([4096, null], { version: 5 })])
    const zstd = new Uint8Array(64)
    dv(zstd).setUint32(0, 0xfd2fb528, true)
    bad.push(['zstd', zstd])
    const json = st.slice()
    json[20] = 0xff
    bad.push(['info not JSON', json])
    bad.push(['packed/bitmap mismatch', v86State([16 * 4096, null, ...new Array(75).fill(null), new Uint8Array(4096), new Uint8Array(2)])])
    bad.push(['bitmap past memory', v86State([4096, ...new Array(76).fill(null), new Uint8Array(8192), new Uint8Array([3])])])
    bad.push(['no memory', v86State([4096])])
    for (const [what, b] of bad) {
      const e = await caught(() => splitV86State(b))
      expect(e.code, what).toBe('CKPT_BAD_STATE')
    }
    // a byte between two buffers (alignment padding) that is not zero cannot be rebuilt: refused
    const odd = v86State([4096, new Uint8Array(1), ...new Array(75).fill(null), new Uint8Array(0), new Uint8Array(1)])
    const B = (16 + dv(odd).getInt32(12, true) + 3) & ~3
    const poked = odd.slice()
    poked[B + 1] = 5
    expect((await caught(() => splitV86State(poked))).code).toBe('CKPT_BAD_STATE')
    expect(bytesEqual(joinV86State(splitV86State(odd)), odd)).toBe(true)
    // parts that do not fit together
    const parts = splitV86State(st)
    expect((await caught(() => joinV86State({ ...parts, blobs: { ...parts.blobs, 'v86.bufs': parts.blobs['v86.bufs']!.subarray(1) } }))).code).toBe('CKPT_BAD_STATE')
    expect((await caught(() => joinV86State({ ...parts, blobs: { ...parts.blobs, v86: new TextEncoder().encode('{"format":2}') } }))).code).toBe('CKPT_VERSION')
    expect((await caught(() => joinV86State({ ...parts, regions: { ...parts.regions, vram: new Uint8Array(5) } }))).code).toBe('CKPT_WRONG_SIZE')
    expect((await caught(() => joinV86State({ ...parts, regions: {} }))).code).toBe('CKPT_BAD_STATE')
  })
})

describe('v86 states in a store', () => {
  let store: CkptStore
  beforeAll(async () => {
    store = await openStore(tmpStorePath(), { threads: 1 })
  })
  afterAll(async () => {
    await store.close()
    removeTmpDirs()
  })

  it('saveV86State -> restoreV86 is byte-identical; dirty hints count exactly the changed pages', async () => {
    const s0 = synthState(64, pagesOf([0, 1, 2, 10, 20]), 0)
    const tl = await store.timeline('synth', { regions: v86Regions(s0) })
    const states = [
      s0,
      synthState(64, pagesOf([0, 1, 2, 10, 20]), 0), // same RAM, same devices
      synthState(64, [...pagesOf([0, 1, 2, 20]), [10, 99]], 1), // page 10 changed, vram changed
      synthState(64, pagesOf([0, 1, 2, 20, 30, 31]), 1), // page 10 zero again, 30 and 31 new
      synthState(64, [], 2), // all RAM zero
    ]
    const done: V86Checkpoint[] = []
    for (let i = 0; i < states.length; i++) done.push(await saveV86State(tl, states[i]!, i + 1))
    expect(done[0]!.v86.dirty).toBeNull()
    expect(done[1]!.v86.dirty!.ram).toBe(0)
    expect(done[2]!.v86.dirty!.ram).toBe(1)
    expect(done[3]!.v86.dirty!.ram).toBe(3)
    expect(done[4]!.v86.dirty!.ram).toBe(6)
    expect(done[2]!.v86.dirty!.vram).toBeGreaterThan(0)
    expect(done[1]!.stats.newChunks).toBe(0)
    for (let i = 0; i < states.length; i++) {
      expect(bytesEqual(await restoreV86(store, done[i]!.cid), states[i]!), `checkpoint ${i}`).toBe(true)
      expect(bytesEqual(await restoreV86(store, `synth@${i + 1}`), states[i]!)).toBe(true)
    }
    // an emulator gets the exact ArrayBuffer
    let got: ArrayBuffer | undefined
    const out = await restoreV86(store, 'synth@3', { save_state: async () => new ArrayBuffer(0), restore_state: (b) => void (got = b) })
    expect(got).toBe(out.buffer)
    expect(got!.byteLength).toBe(states[2]!.length)
  })

  it('when the timeline moved behind the adapter, it scans in full; a failed checkpoint leaves no stale hints', async () => {
    const s = (salt: number, pages: number[]) => synthState(32, pagesOf(pages, salt), salt)
    const tl = await store.timeline('moved', { regions: v86Regions(s(0, [1])) })
    await saveV86State(tl, s(1, [1, 2]), 1)
    // another writer stores different RAM under the same timeline
    const parts = splitV86State(s(2, [3]))
    await tl.checkpoint({ vtime: 2, regions: { ram: { data: parts.regions.ram! } } })
    const c = await saveV86State(tl, s(3, [1, 2, 4]), 3)
    expect(c.v86.dirty).toBeNull()
    expect(bytesEqual(await restoreV86(store, c.cid), s(3, [1, 2, 4]))).toBe(true)
    // a vtime out of order fails; the next checkpoint still restores exactly
    expect((await caught(() => saveV86State(tl, s(4, [5]), 3))).code).toBe('CKPT_VTIME_ORDER')
    const d = await saveV86State(tl, s(5, [1, 6]), 4)
    expect(bytesEqual(await restoreV86(store, d.cid), s(5, [1, 6]))).toBe(true)
    const e = await saveV86State(tl, s(6, [6]), 5, { dirtyHints: false })
    expect(e.v86.dirty).toBeNull()
    expect(bytesEqual(await restoreV86(store, e.cid), s(6, [6]))).toBe(true)
  })

  it('gotoV86 moves a cursor and loads the joined state; a clock needs the checkpoint\'s v86.clock blob', async () => {
    const s = (salt: number, pages: number[]) => synthState(32, pagesOf(pages, salt), salt)
    const states = [s(1, [1, 2]), s(2, [1, 3]), s(3, [4])]
    const tl = await store.timeline('goto', { regions: v86Regions(states[0]!) })
    for (let i = 0; i < states.length; i++) await saveV86State(tl, states[i]!, (i + 1) * 10)
    const cur = await store.cursor('goto')
    let got: ArrayBuffer | undefined
    const emu = { save_state: async () => new ArrayBuffer(0), restore_state: (b: ArrayBuffer) => void (got = b) }
    for (const [target, k] of [[25, 1], [30, 2], [10, 0], [`goto@20`, 1]] as const) {
      const j = await gotoV86(cur, target, emu)
      expect(bytesEqual(j.state, states[k]!), `goto ${target}`).toBe(true)
      expect(got).toBe(j.state.buffer)
      expect(j.to.vtime).toBe(BigInt((k + 1) * 10))
    }
    // the same checkpoint again: nothing written
    const again = await gotoV86(cur, 20)
    expect(Object.values(again.regions).every((r) => r.chunksWritten === 0)).toBe(true)
    expect(again.blobsChanged).toEqual([])
    // saved without a clock: a clock cannot be bound
    const fakeClock = { bind() {}, state: () => ({ steps: 0, instr: 0, idle: 0, seed: 1 }), step: () => 0, bytes: () => new Uint8Array() }
    expect((await caught(() => gotoV86(cur, 10, emu, { clock: fakeClock }))).code).toBe('CKPT_NOT_FOUND')
    // a clock's state is stored as blob v86.clock and bound before restore_state
    const bound: unknown[] = []
    const clock = { ...fakeClock, bind: (_e: unknown, st: unknown) => void bound.push(st), bytes: () => new TextEncoder().encode('{"steps":7,"instr":8,"idle":0.5,"seed":9}') }
    await saveV86State(tl, states[0]!, 40, { clock })
    const j = await gotoV86(cur, 40, emu, { clock })
    expect(j.clock).toEqual({ steps: 7, instr: 8, idle: 0.5, seed: 9 })
    expect(bound).toEqual([j.clock])
    expect(bytesEqual(await restoreV86(store, 'goto@40', emu, { clock }), states[0]!)).toBe(true)
    expect(bound.length).toBe(2)
  })

  it('errors: a corrupt or truncated state stores nothing; wrong timeline; not a v86 checkpoint; damaged blobs', async () => {
    const s0 = synthState(16, pagesOf([1]))
    const tl = await store.timeline('errs', { regions: v86Regions(s0) })
    await saveV86State(tl, s0, 1)
    expect((await caught(() => saveV86State(tl, s0.slice(0, 100), 2))).code).toBe('CKPT_BAD_STATE')
    const flipped = s0.slice()
    flipped[9] ^= 1 // the header's total length
    expect((await caught(() => saveV86State(tl, flipped, 2))).code).toBe('CKPT_BAD_STATE')
    expect(tl.lastVtime).toBe(1n)
    // a timeline without a RAM region of the guest's size
    const other = await store.timeline('errs-small', { regions: { ram: { size: 4096 } } })
    expect((await caught(() => saveV86State(other, s0, 1))).code).toBe('CKPT_TIMELINE_CONFIG')
    expect((await caught(() => saveV86State(tl, s0, 2, { blobs: { 'v86.head': new Uint8Array(1) } }))).code).toBe('CKPT_BAD_ARGUMENT')
    // a checkpoint that is not the adapter's
    const plain = await other.checkpoint({ vtime: 5, regions: { ram: { data: new Uint8Array(4096) } } })
    expect((await caught(() => restoreV86(store, plain.cid))).code).toBe('CKPT_NOT_FOUND')
    // adapter blobs that disagree
    const good = splitV86State(s0)
    const tl2 = await store.timeline('errs-blobs', { regions: v86Regions(s0) })
    const c = await tl2.checkpoint({ vtime: 1, regions: { ram: { data: good.regions.ram! } }, blobs: { ...good.blobs, 'v86.bufs': good.blobs['v86.bufs']!.subarray(3) } })
    expect((await caught(() => restoreV86(store, c.cid))).code).toBe('CKPT_BAD_STATE')
  })
})

// ------------------------------------------------------------------------------------------------
// real states: v86 running SeaBIOS, booting the boot sector from a floppy

const noBios = biosMissing()
if (noBios) console.warn(`SKIPPING the v86 emulator tests: ${noBios}`)

const WARMUP = 150
const EVERY = 30
const CHECKPOINTS = 8
const MID = 4 // restore checkpoint #MID (0-based) and run to the last one

/** The text screen (80x25) from a state's VGA planes: characters at even offsets. */
function vgaText(state: Uint8Array): string {
  const planes = splitV86State(state).regions['vga-planes']!
  let t = ''
  for (let i = 0; i < 80 * 25; i++) t += String.fromCharCode(planes[2 * i]! || 32)
  return t
}

describe.skipIf(!!noBios)('v86 emulator: SeaBIOS + a boot sector, deterministic', () => {
  let clock: V86Clock
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  let V86: any
  let store: CkptStore
  const raw: Uint8Array[] = []
  const cks: V86Checkpoint[] = []
  const serialAt: number[] = []
  let serialA = ''
  let packGrowth: number[] = []
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const boot = (): Promise<any> => bootBiosGuest(V86)

  beforeAll(async () => {
    clock = v86Clock() // before v86 loads: it binds performance.now at import
    V86 = (await import('v86')).V86
    store = await openStore(tmpStorePath('ckpt-v86-'), { threads: 1 })
    const A = await boot()
    clock.bind(A)
    A.add_listener('serial0-output-byte', (b: number) => (serialA += String.fromCharCode(b)))
    for (let i = 0; i < WARMUP; i++) clock.step()
    // saveV86 with the emulator, through a wrapper that keeps a copy of each state for the checks
    const spy = { save_state: async () => { const s = await A.save_state(); raw.push(new Uint8Array(s.slice(0))); return s }, restore_state: () => {} }
    const first = new Uint8Array(await A.save_state())
    const tl = await store.timeline('bios', { regions: v86Regions(first) })
    for (let k = 0; k < CHECKPOINTS; k++) {
      if (k > 0) for (let i = 0; i < EVERY; i++) clock.step()
      const before = (await store.stats()).packBytes
      serialAt.push(serialA.length)
      cks.push(await saveV86(tl, spy, clock.state().instr, { clock }))
      packGrowth.push((await store.stats()).packBytes - before)
    }
    await A.destroy()
  }, 60_000)

  afterAll(async () => {
    await store?.close()
    removeTmpDirs()
  })

  it('the guest ran: ticks on serial and on screen, a few MB of state', () => {
    expect(serialA).toMatch(/tick 0001\r\ntick 0002\r\n/)
    expect(serialA.slice(serialAt[MID]!).length).toBeGreaterThan(100)
    expect(vgaText(raw.at(-1)!)).toContain('tick ')
    expect(raw[0]!.length).toBeGreaterThan(2 << 20)
  })

  it('split/join is byte-identical on real states', () => {
    for (const s of raw) expect(bytesEqual(joinV86State(splitV86State(s)), s)).toBe(true)
  })

  it('saveV86 -> restoreV86 is byte-identical for every checkpoint', async () => {
    expect(raw.length).toBe(CHECKPOINTS)
    for (let k = 0; k < CHECKPOINTS; k++) expect(bytesEqual(await restoreV86(store, cks[k]!.cid), raw[k]!), `checkpoint ${k}`).toBe(true)
    expect(cks[0]!.v86.dirty).toBeNull()
    for (const c of cks.slice(1)) expect(c.v86.dirty).not.toBeNull()
  })

  it('consecutive checkpoints share most blocks: each stores a small fraction of the state', () => {
    const rawBytes = raw[0]!.length
    const later = packGrowth.slice(1)
    // first: the RAM and devices once; later ones: the pages the guest wrote, the JSON, a few device chunks
    for (const g of later) expect(g).toBeLessThan(rawBytes * 0.05)
    for (const c of cks.slice(1)) expect(c.v86.dirty!.ram).toBeLessThan(200)
    console.log(`v86 BIOS guest: state ${rawBytes} B; stored ${packGrowth[0]} B first, then ${later.join(', ')} B per checkpoint`)
  })

  it('a restored checkpoint continues exactly like the uninterrupted run (state, serial, screen)', async () => {
    const B = await boot()
    let serialB = ''
    B.add_listener('serial0-output-byte', (b: number) => (serialB += String.fromCharCode(b)))
    const back = await restoreV86(store, cks[MID]!.cid, B, { clock }) // binds the clock at the checkpoint's state, then restore_state
    expect(clock.state().steps).toBe(WARMUP + MID * EVERY)
    expect(bytesEqual(back, raw[MID]!)).toBe(true)
    for (let i = 0; i < (CHECKPOINTS - 1 - MID) * EVERY; i++) clock.step()
    expect(clock.state().instr).toBe(Number(cks.at(-1)!.vtime))
    const end = new Uint8Array(await B.save_state())
    await B.destroy()
    expect(serialB).toBe(serialA.slice(serialAt[MID]!, serialAt.at(-1)!))
    expect(vgaText(end)).toBe(vgaText(raw.at(-1)!))
    expect(bytesEqual(end, raw.at(-1)!)).toBe(true)
  })

  it('a truncated or corrupt real state is CKPT_BAD_STATE', async () => {
    const s = raw[0]!
    expect((await caught(() => splitV86State(s.subarray(0, s.length - 4096)))).code).toBe('CKPT_BAD_STATE')
    const c = s.slice()
    c[16] = 0x20 // '{' of the info JSON
    c[17] = 0x5d
    expect((await caught(() => splitV86State(c))).code).toBe('CKPT_BAD_STATE')
    const tl = await store.timeline('bios')
    expect((await caught(() => saveV86State(tl, s.subarray(0, 1000), Number(cks.at(-1)!.vtime) + 1))).code).toBe('CKPT_BAD_STATE')
  })
})
