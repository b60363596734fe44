// The crash test's workload, a pure function of (seed, step), shared by the child that runs it
// (crash-child.mjs) and the test that recomputes what every checkpoint must contain.
import { makeRng } from './rng.mjs'

export const TIMELINE = 'vm'

/**
 * `big` is written once, by the initial full checkpoint (step 0), then carried over: it makes the
 * first checkpoint large (a window to be killed in) without making every later one slow to verify.
 * `disk`'s size is not a multiple of its chunk size (a short last chunk).
 */
export const GEO = {
  ram: { size: 1 << 20, chunkSize: 4096 },
  disk: { size: (512 << 10) + 1000, chunkSize: 65536 },
  big: { size: 24 << 20, chunkSize: 65536 },
}

export const PROBE_TIMELINE = 'probe'
export const PROBE_GEO = { ram: { size: 64 << 10, chunkSize: 4096 } }

/** Strictly increasing in step. */
export function vtimeOf(step) {
  return 1000n + BigInt(step) * 10n + BigInt(step % 7)
}

function chunks(g) {
  return Math.ceil(g.size / g.chunkSize)
}

function fillChunk(rng, buf, start, len, pool) {
  const kind = rng.int(0, 10)
  if (kind < 2) buf.fill(0, start, start + len)
  else if (kind < 4 && pool.length > 0) buf.set(rng.pick(pool).subarray(0, len), start)
  else if (kind < 6) {
    const pat = rng.bytes(rng.int(1, 16))
    for (let i = 0; i < len; i++) buf[start + i] = pat[i % pat.length]
  } else buf.set(rng.bytes(len), start)
}

/** The buffers before step 0. */
export function initialState(seed) {
  const rng = makeRng((seed ^ 0x5bd1e995) >>> 0)
  const state = {}
  for (const [name, g] of Object.entries(GEO)) {
    const buf = new Uint8Array(g.size)
    const pool = []
    for (let i = 0; i < chunks(g); i++) {
      const start = i * g.chunkSize
      const len = Math.min(g.chunkSize, g.size - start)
      fillChunk(rng, buf, start, len, pool)
      if (len === g.chunkSize && pool.length < 32 && rng.chance(0.2)) pool.push(buf.slice(start, start + len))
    }
    state[name] = buf
  }
  state.blob = rng.bytes(100)
  return state
}

/**
 * Step k >= 1: mutates state.ram / state.disk in place (and maybe replaces state.blob); returns the
 * checkpoint's dirty hints. Step 0 is the initial full checkpoint and changes nothing.
 */
export function applyStep(seed, step, state) {
  if (step === 0) return { ram: undefined, disk: undefined, blob: state.blob }
  const rng = makeRng((Math.imul(seed, 100003) + step) >>> 0)
  const dirty = { ram: new Set(), disk: new Set() }
  const pool = []
  for (let n = rng.int(1, 24); n > 0; n--) {
    const g = GEO.ram
    const i = rng.int(0, chunks(g))
    fillChunk(rng, state.ram, i * g.chunkSize, g.chunkSize, pool)
    if (rng.chance(0.3)) pool.push(state.ram.slice(i * g.chunkSize, (i + 1) * g.chunkSize))
    dirty.ram.add(i)
  }
  if (rng.chance(0.4)) {
    const g = GEO.disk
    const len = rng.int(1, 100_000)
    const off = rng.chance(0.3) ? g.size - len : rng.int(0, g.size - len + 1)
    state.disk.set(rng.bytes(len), off)
    for (let i = Math.floor(off / g.chunkSize); i <= Math.floor((off + len - 1) / g.chunkSize); i++) dirty.disk.add(i)
  }
  if (rng.chance(0.3)) state.blob = rng.bytes(rng.int(0, 5000))
  const hint = (name, set) => {
    const n = chunks(GEO[name])
    const mode = rng.int(0, 3)
    if (mode === 0) return [...set]
    if (mode === 1) {
      const bitmap = new Uint8Array(Math.ceil(n / 8))
      for (const i of set) bitmap[i >> 3] |= 1 << (i & 7)
      return { bitmap }
    }
    const sup = new Set(set)
    for (let k = rng.int(0, 5); k > 0; k--) sup.add(rng.int(0, n))
    return [...sup]
  }
  return { ram: hint('ram', dirty.ram), disk: hint('disk', dirty.disk), blob: state.blob }
}

/** The checkpoint() input for a step, after applyStep(seed, step, state). */
export function checkpointInput(step, state, hints) {
  if (step === 0) {
    return {
      vtime: vtimeOf(0),
      regions: { ram: { data: state.ram }, disk: { data: state.disk }, big: { data: state.big } },
      blobs: { cpu: state.blob },
    }
  }
  return {
    vtime: vtimeOf(step),
    regions: { ram: { data: state.ram, dirty: hints.ram }, disk: { data: state.disk, dirty: hints.disk } },
    blobs: { cpu: state.blob },
  }
}

/** What the probe process checkpoints. */
export function probeData() {
  return makeRng(4242).bytes(PROBE_GEO.ram.size)
}
