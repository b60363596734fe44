/**
 * Dirty hints as the library takes them (RegionInput.dirty, RegionInput.previous): normalised and
 * checked against the region's geometry.
 */
import { CkptError } from '../codecs/errors.js'
import type { Geometry } from './region-tree.js'
import type { DirtySpec } from './timeline.js'

/** A region's `previous` checked against its dirty list: one chunk's bytes per dirty chunk, k × chunkSize apart. */
export function previousOf(name: string, p: Uint8Array, indexes: Uint32Array, geo: Geometry): Uint8Array {
  if (!(p instanceof Uint8Array)) throw new TypeError(`previous of region ${name} must be a Uint8Array`)
  const n = indexes.length
  const exact = n === 0 ? 0 : (n - 1) * geo.chunkSize + geo.chunkLength(indexes[n - 1]!)
  if (p.length !== exact && p.length !== n * geo.chunkSize) {
    throw new CkptError('CKPT_WRONG_SIZE', `previous of region ${name} has ${p.length} bytes; its ${n} dirty chunks take ${exact}`, { region: name })
  }
  return p
}

/**
 * A region's dirty chunks, sorted and without duplicates. `dirty` is any iterable (or array-like) of
 * chunk indexes, or `{ bitmap }`: chunk i is dirty when bit (i & 7) of byte (i >> 3) is set, the
 * least significant bit first (the byte order of a little-endian 64-bit dirty log such as KVM's). The
 * bitmap has ceil(chunks / 8) bytes, or more up to a multiple of 8 bytes (ceil(chunks / 64) × 8); bits
 * past the last chunk are ignored.
 */
export function dirtyIndexes(name: string, d: DirtySpec, geo: Geometry): Uint32Array {
  let list: number[]
  if (typeof d === 'object' && d !== null && 'bitmap' in d && d.bitmap instanceof Uint8Array) {
    const min = Math.ceil(geo.chunks / 8)
    const max = Math.ceil(geo.chunks / 64) * 8
    if (d.bitmap.length < min || d.bitmap.length > max) {
      const want = min === max ? `${min}` : `${min} to ${max}`
      throw new CkptError('CKPT_WRONG_SIZE', `dirty bitmap of region ${name} has ${d.bitmap.length} bytes, must have ${want}`, { region: name })
    }
    list = []
    for (let i = 0; i < geo.chunks; i++) if (d.bitmap[i >> 3]! & (1 << (i & 7))) list.push(i)
  } else if (typeof d === 'object' && d !== null && (Symbol.iterator in d || typeof (d as ArrayLike<number>).length === 'number')) {
    list = Array.from(d as Iterable<number> | ArrayLike<number>)
  } else {
    throw new TypeError(`dirty of region ${name} must be an iterable of chunk indexes or { bitmap: Uint8Array }`)
  }
  const out = new Uint32Array(list.length)
  for (let k = 0; k < list.length; k++) {
    const i = list[k]!
    if (!Number.isInteger(i) || i < 0 || i >= geo.chunks) {
      throw new CkptError('CKPT_OUT_OF_RANGE', `dirty chunk ${i} is outside region ${name} (0..${geo.chunks - 1})`, { region: name, index: i })
    }
    out[k] = i
  }
  out.sort()
  // duplicates would be hashed twice for nothing
  let w = 0
  for (let k = 0; k < out.length; k++) if (k === 0 || out[k] !== out[k - 1]) out[w++] = out[k]!
  return out.subarray(0, w)
}
