/**
 * A reverse-debugging loop on a real guest (issue 13, item 4): v86 running SeaBIOS and the boot sector
 * of test/fixtures/v86-boot.S under the deterministic driver (v86Clock), recorded with a checkpoint
 * every N steps; then, with one emulator and one store.cursor():
 *
 * - reverse-step: from the end, step back K steps again and again: gotoV86 to the checkpoint at or
 *   before the target, replay forward to it, and the state is byte-identical to the recorded run's;
 * - reverse-watch: the step at which a guest address last changed before a position: store.history over
 *   the checkpoints finds the interval, a step-by-step replay inside it the exact step, which is the
 *   recorded run's.
 *
 * vtime is the driver's step count (the clock state's `steps`): a checkpoint's vtime says how many steps
 * to replay from it. Inputs: the run feeds bytes to COM1 at fixed steps (the boot sector never reads
 * them; the first one sets the UART's data-ready bit); a replay feeds the same bytes at the same
 * steps, and one that leaves them out ends in another state.
 */
import crypto from 'node:crypto'
import type { CID } from 'multiformats/cid'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { gotoV86, saveV86, v86Clock, v86Regions, type V86Clock, type V86Cursor } from '../../src/adapters/v86.js'
import { openStore, type CkptStore, type HistoryEntry } from '../../src/index.js'
import { bytesEqual, removeTmpDirs, tmpStorePath } from '../helpers/tmp.js'
import { BOOT_ADDR, bootBiosGuest, noBios as biosMissing } from '../helpers/v86-guest.js'

const noBios = biosMissing()
if (noBios) console.warn(`SKIPPING the v86 reverse-debugging tests: ${noBios}`)

const WARMUP = 150 // steps to boot into the boot sector
const N = 16 // a checkpoint every N steps
const STEPS = 320 // steps recorded after the warm-up
const END = WARMUP + STEPS
const K = 7 // a reverse step
const TL = 'rd'
/** bytes fed to COM1 before the step taken at these positions */
const INPUTS = new Map<number, string>([
  [WARMUP + 5, 'a'],
  [WARMUP + 40, 'bc'],
  [WARMUP + 101, 'd'],
  [WARMUP + 190, 'ef'],
  [WARMUP + 275, 'g'],
  [WARMUP + 309, 'h'],
])

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Emu = any
const sha = (b: ArrayBuffer) => crypto.createHash('sha256').update(new Uint8Array(b)).digest('hex')
/** a watched range of guest memory: its bytes as a number */
interface Watch {
  addr: number
  len: 1 | 2
}
const peek = (emu: Emu, w: Watch) => {
  const m = emu.v86.cpu.mem8 as Uint8Array
  return w.len === 1 ? m[w.addr]! : m[w.addr]! | (m[w.addr + 1]! << 8)
}
const hex = (w: Watch) => `0x${w.addr.toString(16)}/${w.len}`

describe.skipIf(!!noBios)('reverse debugging v86 (SeaBIOS + a boot sector) with a cursor', () => {
  let clock: V86Clock
  let store: CkptStore
  let emu: Emu
  let cur: V86Cursor & { current?: { vtime: bigint } }
  /** the recorded run: sha256 of the state at every step in [WARMUP, END] */
  const hashes = new Map<number, string>()
  /** watched values at every step */
  const watched = new Map<Watch, Map<number, number>>()
  // the cursor cell (every character); a tick page's first word (every 16 ticks); its high byte (every 256 ticks: far back)
  const WATCH: Watch[] = [
    { addr: BOOT_ADDR.cursor, len: 2 },
    ...[0, 5, 11].map((k): Watch => ({ addr: BOOT_ADDR.tickPage(k), len: 2 })),
    ...[0, 3, 7, 12, 15].map((k): Watch => ({ addr: BOOT_ADDR.tickPage(k) + 1, len: 1 })),
    { addr: 0x7c00, len: 2 }, // the boot sector's code: never written
  ]
  let serial = ''

  /** replays from the clock's position to step `to`, feeding the recorded inputs; calls see(step) after each step */
  const replay = (to: number, opts: { inputs?: boolean; see?: (step: number) => void } = {}) => {
    let s = clock.state().steps
    expect(s).toBeLessThanOrEqual(to)
    while (s < to) {
      const inp = opts.inputs === false ? undefined : INPUTS.get(s)
      if (inp) emu.serial0_send(inp)
      s = clock.step()
      opts.see?.(s)
    }
    return s
  }

  beforeAll(async () => {
    clock = v86Clock() // before v86 loads
    const { V86 } = await import('v86')
    store = await openStore(tmpStorePath('ckpt-rd-'), { threads: 2 })
    emu = await bootBiosGuest(V86)
    emu.add_listener('serial0-output-byte', (b: number) => (serial += String.fromCharCode(b)))
    clock.bind(emu)
    for (let i = 0; i < WARMUP; i++) clock.step()
    const tl = await store.timeline(TL, { regions: v86Regions(new Uint8Array(await emu.save_state())) })
    for (const a of WATCH) watched.set(a, new Map())
    for (let s = WARMUP; ; ) {
      const state = await emu.save_state()
      hashes.set(s, sha(state))
      for (const w of WATCH) watched.get(w)!.set(s, peek(emu, w))
      if ((s - WARMUP) % N === 0) await saveV86(tl, { save_state: async () => state, restore_state: () => {} }, s, { clock })
      if (s === END) break
      s = replay(s + 1)
    }
    cur = (await store.cursor(TL)) as unknown as typeof cur
  }, 60_000)

  afterAll(async () => {
    await emu?.destroy()
    await store?.close()
    removeTmpDirs()
  })

  it('the run: ticks printed, a checkpoint every N steps, vtime = steps', async () => {
    expect(serial).toMatch(/tick 0001\r\ntick 0002\r\n/)
    const log = []
    for await (const e of store.log(TL)) log.push(Number(e.vtime))
    expect(log).toEqual(Array.from({ length: STEPS / N + 1 }, (_, k) => WARMUP + k * N))
    // the state changes at every step (the replay checks below are not vacuous)
    expect(new Set(hashes.values()).size).toBe(hashes.size)
  })

  it('reverse-step: from the end, K steps back at a time, every state byte-identical to the run', async () => {
    const seen: string[] = []
    let jumps = 0
    for (let pos = END; pos - K >= WARMUP; pos -= K) {
      const target = pos - K
      const j = await gotoV86(cur, target, emu, { clock })
      const ck = Number(j.to.vtime)
      expect(ck).toBe(target - ((target - WARMUP) % N))
      expect(clock.state().steps).toBe(ck)
      expect(sha(j.state.buffer as ArrayBuffer)).toBe(hashes.get(ck))
      replay(target)
      const h = sha(await emu.save_state())
      if (h !== hashes.get(target)) seen.push(`step ${target} (from checkpoint ${ck})`)
      jumps++
    }
    expect(seen).toEqual([])
    expect(jumps).toBe(Math.floor(STEPS / K))
  })

  it('the inputs matter: a replay without them ends elsewhere', async () => {
    // the first byte sets the UART's data-ready bit, which the boot sector never clears (the queued
    // bytes themselves are not in a v86 state): a replay over it without it ends in another state
    const target = WARMUP + 10
    await gotoV86(cur, target, emu, { clock })
    replay(target, { inputs: false })
    expect(sha(await emu.save_state())).not.toBe(hashes.get(target))
    await gotoV86(cur, target, emu, { clock })
    replay(target)
    expect(sha(await emu.save_state())).toBe(hashes.get(target))
  })

  /** the recorded run's answer: the last step <= pos at which the watched bytes changed */
  const lastChangeRecorded = (w: Watch, pos: number): number | undefined => {
    const v = watched.get(w)!
    for (let s = pos; s > WARMUP; s--) if (v.get(s) !== v.get(s - 1)) return s
    return undefined
  }

  /**
   * The debugger's reverse-watch: the last step <= pos at which the watched bytes changed. The tail
   * (checkpoint at or before pos .. pos) by replay; before it, the newest change among the checkpoints
   * (store.history, newest first), then a replay of that interval step by step.
   */
  const reverseWatch = async (w: Watch, pos: number): Promise<{ step?: number; interval?: [number, number]; replayed: number; skipped?: number }> => {
    const lastIn = (from: number, to: number) => {
      let before = peek(emu, w)
      let found: number | undefined
      replay(to, {
        see: (s) => {
          const v = peek(emu, w)
          if (v !== before) found = s
          before = v
        },
      })
      return { found, replayed: to - from }
    }
    const j = await gotoV86(cur, pos, emu, { clock })
    const ck = Number(j.to.vtime)
    const tail = lastIn(ck, pos)
    if (tail.found !== undefined) return { step: tail.found, interval: [ck, pos], replayed: tail.replayed }
    // history works in chunks (4 KiB pages): a change elsewhere in the page is an entry too, so the
    // watched bytes are compared at both ends of each interval, newest first
    const sel = { offset: w.addr, length: w.len }
    let e: HistoryEntry | undefined
    let skipped = 0
    for await (const x of store.history(TL, 'ram', sel, { until: ck, reverse: true })) {
      if (!x.previous) break // the baseline: unchanged since the first checkpoint
      if (bytesEqual(await bytesAt(x.previous.cid, w), await bytesAt(x.cid, w))) {
        skipped++
        continue
      }
      e = x
      break
    }
    if (!e?.previous) return { replayed: tail.replayed, skipped }
    // firstChange from the interval's start finds the same checkpoint
    const fc = await store.firstChange(TL, 'ram', { offset: w.addr, length: w.len }, { after: e.previous.vtime, until: ck })
    expect(fc?.cid.toString()).toBe(e.cid.toString())
    const from = Number(e.previous.vtime)
    const to = Number(e.vtime)
    await gotoV86(cur, e.previous.cid, emu, { clock })
    const inside = lastIn(from, to)
    expect(inside.found).toBeDefined() // the checkpoints differ there, so some step changed the bytes
    return { step: inside.found, interval: [from, to], replayed: tail.replayed + inside.replayed, skipped }
  }

  /** the watched bytes at a checkpoint, from the store */
  const bytesAt = async (cid: CID, w: Watch) => {
    const at = w.addr % 4096
    return (await store.readChunk(cid, 'ram', Math.floor(w.addr / 4096))).subarray(at, at + w.len)
  }

  it('reverse-watch: the step at which an address last changed, by history over checkpoints then replay', async () => {
    const results: string[] = []
    let farBack = 0
    for (const pos of [END, END - 3, END - 40, WARMUP + 7 * N + 5]) {
      for (const w of WATCH) {
        const want = lastChangeRecorded(w, pos)
        const got = await reverseWatch(w, pos)
        expect(got.step, `${hex(w)} before step ${pos}`).toBe(want)
        if (got.step !== undefined && pos - got.step > 2 * N) farBack++
        results.push(`${hex(w)} before ${pos}: step ${got.step ?? 'never'} in ${got.interval?.join('..') ?? '-'}, ${got.replayed} steps replayed, ${got.skipped ?? 0} page changes skipped`)
        // the state there is the run's
        if (got.step !== undefined) {
          await gotoV86(cur, got.step, emu, { clock })
          replay(got.step)
          expect(sha(await emu.save_state())).toBe(hashes.get(got.step))
        }
      }
    }
    // some changes lie many checkpoints back (history did the search, not a long replay)
    console.log(`reverse-watch:\n  ${results.join('\n  ')}`)
    expect(farBack).toBeGreaterThanOrEqual(5)
  })
})
