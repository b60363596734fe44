/**
 * Deterministic v86 runs, for replay (reverse debugging: go to the checkpoint before a step, run
 * forward to it, and get exactly the state the first run had). A host-side driver on v86 0.5.462
 * internals (`emulator.v86.cpu`: main_loop, instruction_counter, in_hlt), not a v86 feature:
 *
 *   virtual ms = instructions executed (exact, from instruction_counter deltas) / 50,000 + idle ms skipped
 *
 * One step is one main_loop() call (~100k instructions with the JIT off, fewer when the guest halts; a
 * halted guest jumps to its next timer). The clock's state {steps, instr, idle, seed} belongs with a
 * checkpoint (saveV86 stores it as blob `v86.clock` when given `clock`) and is bound to the restoring
 * emulator BEFORE restore_state (v86's set_tsc() reads the clock): restoreV86 and gotoV86 do both.
 *
 * Globals: v86 binds performance.now when its module loads, its RTC reads Date.now() and RDRAND reads
 * crypto.getRandomValues() while it runs. So from v86Clock() until the first bind(), performance.now,
 * Date.now, Math.random and crypto.getRandomValues are virtual (import v86 and construct the emulator
 * in that window); after it, v86 keeps its bound virtual performance.now and the other three are
 * virtual only during step() (and the host's timers read real time again). Use with disable_jit: true,
 * autostart: false, preserve_mac_from_state_image: true, and never call run().
 */

/** What a checkpoint needs to replay from it: steps taken, instructions, idle ms skipped, the random state. */
export interface V86ClockState {
  steps: number
  instr: number
  idle: number
  /** xorshift32 state of the virtual random source (RDRAND, Math.random) */
  seed: number
}

/** The parts of a v86 emulator the driver uses (v86 0.5.462's `V86` fits). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Emu = any

export interface V86Clock {
  /** drives `emulator` from now on, its clock at `st` (default: all zero); before restore_state when restoring */
  bind(emulator: Emu, st?: Partial<V86ClockState>): void
  state(): V86ClockState
  /** one main_loop() call of the bound emulator; returns the new state's step count */
  step(): number
  /** the clock state as the JSON bytes saveV86 stores */
  bytes(): Uint8Array
}

const IPS_PER_MS = 50_000
const EPOCH_MS = Date.UTC(2025, 0, 1)
const SEED = 0x12345678

let installed: V86Clock | undefined

/** Parses a `v86.clock` blob. */
export function parseV86Clock(bytes: Uint8Array): V86ClockState {
  const st = JSON.parse(new TextDecoder().decode(bytes)) as Partial<V86ClockState>
  for (const k of ['steps', 'instr', 'idle', 'seed'] as const) {
    if (typeof st[k] !== 'number' || !Number.isFinite(st[k])) throw new TypeError(`v86 clock state lacks ${k}`)
  }
  return st as V86ClockState
}

/**
 * The process's v86 clock (one per process: it owns the globals described above). Call it before v86
 * is imported; later calls return the same clock.
 */
export function v86Clock(): V86Clock {
  if (installed) return installed
  const real = { performance: globalThis.performance, dateNow: Date.now, random: Math.random, getRandomValues: globalThis.crypto.getRandomValues }
  let cpu: Emu = null
  let last = 0
  let icount = 0
  let idle = 0
  let steps = 0
  let seed = SEED
  const instr = () => {
    if (!cpu) return icount
    const c = cpu.instruction_counter[0] as number
    icount += (c - last) >>> 0
    last = c
    return icount
  }
  const vnow = () => instr() / IPS_PER_MS + idle
  const xs = () => {
    seed ^= seed << 13
    seed ^= seed >>> 17
    seed ^= seed << 5
    return seed >>> 0
  }
  const vperf = { now: vnow, timeOrigin: 0, mark() {}, measure() {} }
  const vdate = () => EPOCH_MS + Math.floor(vnow())
  const vrandom = () => xs() / 2 ** 32
  const vbytes = (<T extends ArrayBufferView | null>(a: T): T => {
    if (a) {
      const u = new Uint8Array(a.buffer, a.byteOffset, a.byteLength)
      for (let i = 0; i < u.length; i++) u[i] = xs() & 255
    }
    return a
  }) as typeof globalThis.crypto.getRandomValues
  const virtual = (on: boolean) => {
    Date.now = on ? vdate : real.dateNow
    Math.random = on ? vrandom : real.random
    globalThis.crypto.getRandomValues = on ? vbytes : real.getRandomValues
  }
  Object.defineProperty(globalThis, 'performance', { value: vperf, configurable: true, writable: true })
  virtual(true)
  let early = true
  installed = {
    bind(e, st = {}) {
      if (!e?.v86?.cpu?.instruction_counter) throw new TypeError('v86Clock: bind() takes a v86 emulator (V86) whose wasm is loaded (after emulator-ready)')
      if (early) {
        // v86 is loaded and holds its own virtual performance.now: the host gets real time back
        Object.defineProperty(globalThis, 'performance', { value: real.performance, configurable: true, writable: true })
        virtual(false)
        early = false
      }
      cpu = e.v86.cpu
      last = cpu.instruction_counter[0]
      icount = st.instr ?? 0
      idle = st.idle ?? 0
      steps = st.steps ?? 0
      seed = st.seed ?? SEED
    },
    state: () => ({ steps, instr: instr(), idle, seed }),
    step() {
      if (!cpu) throw new TypeError('v86Clock: bind() an emulator first')
      virtual(true)
      try {
        const t = cpu.main_loop() as number
        if (cpu.in_hlt[0]) idle += Math.max(t, 0.01)
      } finally {
        if (!early) virtual(false)
      }
      return ++steps
    },
    bytes() {
      return new TextEncoder().encode(JSON.stringify(installed!.state()))
    },
  }
  return installed
}
