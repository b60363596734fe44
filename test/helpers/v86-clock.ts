/**
 * Deterministic v86 runs (a host-side driver on v86 internals, not a v86 feature): a virtual clock
 * and seeded randomness, installed BEFORE v86 is imported, because libv86 binds performance.now when it
 * loads and its RTC reads Date.now().
 *
 *   virtual ms = instructions executed (exact, from cpu.instruction_counter deltas) / 50,000 + idle ms skipped
 *
 * One step is one wasm main_loop() call (~100k instructions, fewer if the guest halts; a halted guest
 * jumps to its next timer). The clock state {instr, idle} belongs with a checkpoint: bind it to the
 * restoring emulator BEFORE restore_state (its set_tsc() reads the clock). Use with disable_jit: true,
 * autostart: false, preserve_mac_from_state_image: true, and never call run().
 */
export interface ClockState {
  instr: number
  idle: number
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Emu = any

export interface VirtualClock {
  bind(emu: Emu, st?: ClockState): void
  state(): ClockState
  step(emu: Emu): void
  /** reseeds Math.random / crypto.getRandomValues (the seed is not part of a checkpoint) */
  reseed(seed: number): void
}

let installed: VirtualClock | undefined

export function installVirtualClock(): VirtualClock {
  if (installed) return installed
  const IPS_PER_MS = 50_000
  const EPOCH_MS = Date.UTC(2025, 0, 1)
  let cpu: Emu = null
  let last = 0
  let icount = 0
  let idle = 0
  const instr = () => {
    if (!cpu) return icount
    const c = cpu.instruction_counter[0] as number
    icount += (c - last) >>> 0
    last = c
    return icount
  }
  const vnow = () => instr() / IPS_PER_MS + idle
  Object.defineProperty(globalThis, 'performance', { value: { now: vnow, timeOrigin: 0, mark() {}, measure() {} }, configurable: true, writable: true })
  Date.now = () => EPOCH_MS + Math.floor(vnow())
  let seed = 0x12345678
  const xs = () => {
    seed ^= seed << 13
    seed ^= seed >>> 17
    seed ^= seed << 5
    return seed >>> 0
  }
  Math.random = () => xs() / 2 ** 32
  globalThis.crypto.getRandomValues = (<T extends ArrayBufferView | null>(a: T): T => {
    if (a) {
      const u = new Uint8Array(a.buffer, a.byteOffset, a.byteLength)
      for (let i = 0; i < u.length; i++) u[i] = xs() & 255
    }
    return a
  }) as typeof globalThis.crypto.getRandomValues
  installed = {
    bind(emu, st = { instr: 0, idle: 0 }) {
      cpu = emu.v86.cpu
      last = cpu.instruction_counter[0]
      icount = st.instr
      idle = st.idle
    },
    state: () => ({ instr: instr(), idle }),
    step(emu) {
      const t = emu.v86.cpu.main_loop() as number
      if (emu.v86.cpu.in_hlt[0]) idle += Math.max(t, 0.01)
    },
    reseed(s) {
      seed = s >>> 0 || 1
    },
  }
  return installed
}
