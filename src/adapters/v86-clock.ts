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
 * The TSC made a function of the virtual clock alone. v86's rdtsc keeps statics outside the state:
 * (1) a workaround for coarse browser clocks gives a reading equal to the last one an "extra" of up
 * to tsc_resolution - 1 ticks (the smallest step it ever saw): two readings one tick apart set the
 * resolution to 1, and the extra is 0 from then on; (2) set_tsc() (restore_state) computes the new
 * offset from a reading that has the old offset already subtracted, so a restored TSC is the saved
 * one plus the old offset: set_tsc() to the current reading makes the offset 0. `pin` fixes the
 * virtual clock at a value (undefined: runs again).
 */
function resetTsc(c: Emu, pin: (ms: number | undefined) => void): void {
  const read = () => {
    c.store_current_tsc()
    return [c.current_tsc[0] as number, c.current_tsc[1] as number] as const
  }
  try {
    pin(0.5 / 1e6)
    read()
    pin(1.5 / 1e6)
    const [lo, hi] = read()
    c.set_tsc(lo, hi) // reads the same value again: extra 0, offset 0
  } finally {
    pin(undefined)
  }
}

/**
 * The process's v86 clock (one per process: it owns the globals described above). Call it before v86
 * is imported; later calls return the same clock. The guest's wall clock (Date.now, which v86's RTC
 * reads) is `epochMs` (default 2025-01-01) plus the virtual ms.
 */
export function v86Clock(opts: { epochMs?: number } = {}): V86Clock {
  if (installed) return installed
  const epoch = opts.epochMs ?? EPOCH_MS
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
  let pinned: number | undefined
  const vnow = () => pinned ?? instr() / IPS_PER_MS + idle
  const xs = () => {
    seed ^= seed << 13
    seed ^= seed >>> 17
    seed ^= seed << 5
    return seed >>> 0
  }
  const vperf = { now: vnow, timeOrigin: 0, mark() {}, measure() {} }
  const vdate = () => epoch + Math.floor(vnow())
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
      resetTsc(cpu, (v) => (pinned = v))
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

/** CPU fields v86 0.5.462's set_state() assigns instead of copying into wasm memory (state[86..88]) */
const DETACHED = ['last_result', 'fpu_status_word', 'mxcsr'] as const
const LAST_VIRT_EIP = 18

/**
 * emulator.restore_state(state), then what v86 0.5.462 leaves out: set_state() replaces the views
 * `last_result`, `fpu_status_word` and `mxcsr` with the state's arrays instead of copying them into
 * wasm memory (the CPU would run on with the old values, and every later save_state() would report
 * the restored ones); and the restore's TLB flush drops the cached page of the instruction pointer
 * (`last_virt_eip`, state[18]), which the state holds valid. Both are put right, so a state saved
 * right after is the state restored. Emulators without `v86.cpu` just get restore_state().
 */
export async function restoreV86Emulator(emulator: Emu, state: Uint8Array): Promise<void> {
  const cpu = emulator?.v86?.cpu
  const views = cpu ? DETACHED.map((k) => [k, cpu[k]] as const) : []
  await emulator.restore_state(state.buffer)
  if (!cpu) return
  for (const [k, view] of views) {
    const now = cpu[k]
    if (now === view || !ArrayBuffer.isView(now)) continue
    // v86's views are proxies that make a typed array over wasm memory at each access
    for (let i = 0; i < (now as Int32Array).length; i++) view[i] = (now as Int32Array)[i]
    cpu[k] = view
  }
  const dv = new DataView(state.buffer, state.byteOffset, state.byteLength)
  const info = JSON.parse(new TextDecoder().decode(state.subarray(16, 16 + dv.getInt32(12, true)))) as { state: unknown[] }
  const eip = info.state[LAST_VIRT_EIP]
  if (typeof eip === 'number' && cpu.last_virt_eip) cpu.last_virt_eip[0] = eip
}
