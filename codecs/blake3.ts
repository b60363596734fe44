/**
 * BLAKE3-256, the hash behind every block id. Three interchangeable backends; the fastest one that
 * loads serves the hot path, and all must produce identical digests (noble is the reference).
 */
import { createRequire } from 'node:module'
import { blake3 as nobleBlake3 } from '@noble/hashes/blake3.js'
import { CkptError } from './errors.js'

export interface Blake3Backend {
  readonly name: 'napi' | 'hash-wasm' | 'noble'
  /** 32-byte BLAKE3 digest of data */
  hash(data: Uint8Array): Uint8Array
  /** the digest as 64 lowercase hex digits, where the backend has a cheaper way to it than hash() */
  hex?(data: Uint8Array): string
  /** the digest written into out[at, at + 32), where the backend has a cheaper way than hash() and a copy */
  hashInto?(data: Uint8Array, out: Uint8Array, at: number): void
}

type BackendName = Blake3Backend['name']

// Measured on this machine at 4 KiB per call: napi 1,088 MB/s, hash-wasm 569 MB/s, noble 32 MB/s.
const PREFERENCE: readonly BackendName[] = ['napi', 'hash-wasm', 'noble']

const noble: Blake3Backend = Object.freeze({ name: 'noble', hash: (data: Uint8Array) => nobleBlake3(data) })

// A backend that loads but computes wrong digests would silently corrupt the id space, so each
// non-reference backend must agree with noble on a multi-chunk probe before it is used.
const PROBE = Uint8Array.from({ length: 2049 }, (_, i) => i % 251)
const PROBE_DIGEST = nobleBlake3(PROBE)

function verified(backend: Blake3Backend): Blake3Backend | undefined {
  const got = backend.hash(PROBE)
  if (got.length !== 32) return undefined
  for (let i = 0; i < 32; i++) if (got[i] !== PROBE_DIGEST[i]) return undefined
  if (backend.hex && !hexEquals(backend.hex(PROBE), PROBE_DIGEST, 0)) return undefined
  if (backend.hashInto) {
    const out = new Uint8Array(34)
    backend.hashInto(PROBE, out, 1)
    for (let i = 0; i < 32; i++) if (out[1 + i] !== PROBE_DIGEST[i]) return undefined
    if (out[0] !== 0 || out[33] !== 0) return undefined
  }
  return backend
}

const HEX = '0123456789abcdef'

/** whether `hex` (64 lowercase hex digits) spells the 32 bytes of `digest` at `at` */
function hexEquals(hex: string, digest: Uint8Array, at: number): boolean {
  if (hex.length !== 64) return false
  for (let j = 0; j < 32; j++) {
    const b = digest[at + j]!
    if (hex.charCodeAt(2 * j) !== HEX.charCodeAt(b >> 4) || hex.charCodeAt(2 * j + 1) !== HEX.charCodeAt(b & 15)) return false
  }
  return true
}

const B64 = new Uint8Array(128)
for (let i = 0; i < 64; i++) B64['ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'.charCodeAt(i)] = i

/** 32 bytes from their standard base64 form (44 characters, one '=' of padding) into out[at, at + 32). */
function fromBase64(s: string, out: Uint8Array, at: number): void {
  let o = at
  for (let i = 0; i < 40; i += 4) {
    const n = (B64[s.charCodeAt(i)]! << 18) | (B64[s.charCodeAt(i + 1)]! << 12) | (B64[s.charCodeAt(i + 2)]! << 6) | B64[s.charCodeAt(i + 3)]!
    out[o] = n >> 16
    out[o + 1] = (n >> 8) & 255
    out[o + 2] = n & 255
    o += 3
  }
  const n = (B64[s.charCodeAt(40)]! << 18) | (B64[s.charCodeAt(41)]! << 12) | (B64[s.charCodeAt(42)]! << 6)
  out[o] = n >> 16
  out[o + 1] = (n >> 8) & 255
}

function checkName(name: unknown): asserts name is BackendName {
  if (!PREFERENCE.includes(name as BackendName)) throw new TypeError(`unknown BLAKE3 backend: ${String(name)}`)
}

/**
 * @napi-rs/blake-hash's own loader asks process.report.getReport() whether the C library is musl,
 * which costs 20-40 ms in every thread that loads it (a third of a small `ckpt add`). npm installs
 * only the platform package that fits this machine, so that package is tried first, directly; the
 * loader is the fallback (a platform package that does not load, e.g. glibc's on musl, throws).
 */
function loadNapiModule(): unknown {
  const require = createRequire(import.meta.url)
  if (process.platform === 'linux' && (process.arch === 'x64' || process.arch === 'arm64')) {
    for (const libc of ['gnu', 'musl']) {
      try {
        return require(`@napi-rs/blake-hash-linux-${process.arch}-${libc}`)
      } catch {
        // not installed here, or not loadable: try the next
      }
    }
  }
  return require('@napi-rs/blake-hash')
}

export function loadBackendSync(name: 'napi' | 'noble'): Blake3Backend | undefined {
  checkName(name)
  if (name === 'noble') return noble
  if (name !== 'napi') throw new TypeError(`BLAKE3 backend ${name} cannot load synchronously`)
  try {
    // createRequire so a missing or broken native binary is a catchable error, not an import failure.
    const mod = loadNapiModule() as {
      blake3?: (input: Uint8Array) => Uint8Array
      Blake3Hasher?: new () => { reset(): void; update(input: Uint8Array): unknown; digest(format: string): string }
    }
    const fn = mod.blake3
    if (typeof fn !== 'function') return undefined
    // blake3() returns a new Buffer per call (~1.7 us of a 4 KiB page's ~3.2 us here); a reused
    // hasher giving hex skips that allocation: the read path checks digests with it (blake3Equals)
    const hasher = typeof mod.Blake3Hasher === 'function' ? new mod.Blake3Hasher() : undefined
    const hex = hasher
      ? (data: Uint8Array) => {
          hasher.reset()
          hasher.update(data)
          return hasher.digest('hex')
        }
      : undefined
    // the same hasher's base64 digest decoded in place: no Buffer per call (the hashing hot paths
    // write digests into one array: ~0.5 us of a 4 KiB page's ~3.4 us here)
    const hashInto = hasher
      ? (data: Uint8Array, out: Uint8Array, at: number) => {
          hasher.reset()
          hasher.update(data)
          fromBase64(hasher.digest('base64'), out, at)
        }
      : undefined
    return verified(Object.freeze({ name: 'napi', hash: (data: Uint8Array) => fn(data), ...(hex ? { hex } : {}), ...(hashInto ? { hashInto } : {}) }))
  } catch {
    return undefined
  }
}

export async function loadBackend(name: BackendName): Promise<Blake3Backend | undefined> {
  checkName(name)
  if (name !== 'hash-wasm') return loadBackendSync(name)
  try {
    const { createBLAKE3 } = await import('hash-wasm')
    // One reusable wasm instance; safe because hash() is synchronous and never interleaves.
    const hasher = await createBLAKE3()
    return verified(Object.freeze({ name: 'hash-wasm', hash: (data: Uint8Array) => hasher.init().update(data).digest('binary') }))
  } catch {
    return undefined
  }
}

/** The backend named by CKPT_BLAKE3, or undefined when unset. */
function forcedName(): BackendName | undefined {
  const value = process.env.CKPT_BLAKE3
  if (value === undefined || value === '') return undefined
  if (!PREFERENCE.includes(value as BackendName)) {
    throw new CkptError('CKPT_CODEC_UNAVAILABLE', `CKPT_BLAKE3=${value} is not a BLAKE3 backend`, { backend: value })
  }
  return value as BackendName
}

function unavailable(name: BackendName): CkptError {
  return new CkptError('CKPT_CODEC_UNAVAILABLE', `BLAKE3 backend ${name} (forced by CKPT_BLAKE3) cannot load`, { backend: name })
}

let active: Blake3Backend | undefined

/** Before initBlake3(): a forced noble/napi is honoured; otherwise napi, else noble (hash-wasm needs async init). */
function syncBackend(): Blake3Backend {
  const forced = forcedName()
  if (forced === 'noble') return noble
  const napi = loadBackendSync('napi')
  if (forced === 'napi' && napi === undefined) throw unavailable('napi')
  return napi ?? noble
}

export async function initBlake3(): Promise<Blake3Backend> {
  const forced = forcedName()
  if (forced !== undefined) {
    const backend = await loadBackend(forced)
    if (backend === undefined) throw unavailable(forced)
    return (active = backend)
  }
  for (const name of PREFERENCE) {
    const backend = await loadBackend(name)
    if (backend !== undefined) return (active = backend)
  }
  return (active = noble)
}

export function blake3(data: Uint8Array): Uint8Array {
  if (!(data instanceof Uint8Array)) throw new TypeError('blake3: data must be a Uint8Array')
  return (active ??= syncBackend()).hash(data)
}

/** BLAKE3(data) written into out[at, at + 32): the hashing hot paths' form, without a digest buffer per call where the backend allows. */
export function blake3Into(data: Uint8Array, out: Uint8Array, at: number): void {
  if (!(data instanceof Uint8Array)) throw new TypeError('blake3: data must be a Uint8Array')
  const b = (active ??= syncBackend())
  if (b.hashInto) b.hashInto(data, out, at)
  else out.set(b.hash(data), at)
}

/**
 * Whether BLAKE3(data) is the 32 bytes of `digest` at `at`: the read path's check of a block against
 * its CID, without a digest buffer per call where the backend allows.
 */
export function blake3Equals(data: Uint8Array, digest: Uint8Array, at = 0): boolean {
  if (!(data instanceof Uint8Array)) throw new TypeError('blake3: data must be a Uint8Array')
  const b = (active ??= syncBackend())
  if (b.hex) return hexEquals(b.hex(data), digest, at)
  const d = b.hash(data)
  for (let j = 0; j < 32; j++) if (d[j] !== digest[at + j]) return false
  return true
}

export function blake3BackendName(): string {
  return (active ??= syncBackend()).name
}
