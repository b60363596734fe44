/**
 * Node deltas: the at-rest form of a tree node as the few slots that differ from an earlier node (its
 * base). Nodes change a few slots per checkpoint, so a 10 KB node usually stores in well under 100
 * bytes. The block's CID is still the BLAKE3 of the full dag-cbor encoding (tree-node.ts).
 *
 *   delta := baseCid(36 bytes) varint(newCount) varint(patchCount) patch*
 *   patch := varint(slot) u8(codec: 0 hole | 0x55 raw | 0x71 dag-cbor) [32-byte digest if codec != 0]
 *
 * - baseCid is a CIDv1 dag-cbor BLAKE3-256 (0x01 0x71 0x1e 0x20 + digest): the base node's id.
 * - varints are unsigned LEB128 in their shortest form; 1 <= newCount <= 65536, patchCount <= newCount.
 * - slots are strictly increasing and < newCount. Slot s of the result is the patch for s if any, else
 *   base slot s if s < base count, else a hole. Nothing may follow the last patch.
 */
import { copyOf } from './bytes.js'
import { BLAKE3, CID_LENGTH, DAG_CBOR, DIGEST_LENGTH, RAW } from './cid.js'
import { CkptError } from './errors.js'
import { MAX_NODE_COUNT, type NodeEntries } from './tree-node.js'

function bad(message: string, offset: number): CkptError {
  return new CkptError('CKPT_BAD_NODE', `node delta: ${message} at byte ${offset}`, { offset })
}

function isBaseCid(b: Uint8Array): boolean {
  return b.length >= CID_LENGTH && b[0] === 0x01 && b[1] === DAG_CBOR && b[2] === BLAKE3 && b[3] === DIGEST_LENGTH
}

function checkEntries(n: NodeEntries, what: string): void {
  if (
    typeof n !== 'object' ||
    n === null ||
    !Number.isInteger(n.count) ||
    n.count < 1 ||
    n.count > MAX_NODE_COUNT ||
    !(n.codecs instanceof Uint8Array) ||
    n.codecs.length !== n.count ||
    !(n.digests instanceof Uint8Array) ||
    n.digests.length !== n.count * DIGEST_LENGTH
  ) {
    throw new TypeError(`${what} is not valid NodeEntries`)
  }
}

function varintLength(n: number): number {
  return n < 0x80 ? 1 : n < 0x4000 ? 2 : 3 // every value here is <= 65536 < 2^21
}

function writeVarint(out: Uint8Array, p: number, n: number): number {
  while (n >= 0x80) {
    out[p++] = (n & 0x7f) | 0x80
    n >>>= 7
  }
  out[p++] = n
  return p
}

function sameDigest(a: DataView, b: DataView, at: number): boolean {
  for (let k = 0; k < DIGEST_LENGTH; k += 4) if (a.getInt32(at + k) !== b.getInt32(at + k)) return false
  return true
}

const view = (a: Uint8Array): DataView => new DataView(a.buffer, a.byteOffset, a.byteLength)

/** A delta taking base to next, or undefined when the delta would not be smaller than maxBytes. */
export function encodeNodeDelta(baseCid: Uint8Array, base: NodeEntries, next: NodeEntries, maxBytes: number): Uint8Array | undefined {
  if (!(baseCid instanceof Uint8Array) || baseCid.length !== CID_LENGTH || !isBaseCid(baseCid)) {
    throw new TypeError('encodeNodeDelta: baseCid must be a 36-byte dag-cbor BLAKE3 CID')
  }
  checkEntries(base, 'encodeNodeDelta: base')
  checkEntries(next, 'encodeNodeDelta: next')
  if (typeof maxBytes !== 'number' || Number.isNaN(maxBytes)) throw new TypeError('encodeNodeDelta: maxBytes must be a number')

  const count = next.count
  const bd = view(base.digests)
  const nd = view(next.digests)
  const slots = new Int32Array(count)
  let patches = 0
  // Size without the patchCount varint (at least 1 byte), checked as we go so a big diff stops early.
  let size = CID_LENGTH + varintLength(count)
  for (let s = 0; s < count; s++) {
    const c = next.codecs[s]!
    const b = s < base.count ? base.codecs[s]! : 0
    if (c === b && (c === 0 || sameDigest(bd, nd, s * DIGEST_LENGTH))) continue
    if (c !== 0 && c !== RAW && c !== DAG_CBOR) throw new TypeError(`encodeNodeDelta: next slot ${s} has codec ${c}`)
    slots[patches++] = s
    size += varintLength(s) + 1 + (c === 0 ? 0 : DIGEST_LENGTH)
    if (size + 1 >= maxBytes) return undefined
  }
  size += varintLength(patches)
  if (size >= maxBytes) return undefined
  return writeDelta(baseCid, next, slots.subarray(0, patches), size)
}

/** Writes a delta of `size` bytes patching `slots` (sorted, unique) with next's entries. */
function writeDelta(baseCid: Uint8Array, next: NodeEntries, slots: ArrayLike<number>, size: number): Uint8Array {
  const out = new Uint8Array(size)
  out.set(baseCid, 0)
  let p = writeVarint(out, CID_LENGTH, next.count)
  p = writeVarint(out, p, slots.length)
  for (let i = 0; i < slots.length; i++) {
    const s = slots[i]!
    p = writeVarint(out, p, s)
    const c = next.codecs[s]!
    out[p++] = c
    if (c !== 0) {
      out.set(next.digests.subarray(s * DIGEST_LENGTH, (s + 1) * DIGEST_LENGTH), p)
      p += DIGEST_LENGTH
    }
  }
  return out
}

/**
 * A delta from an explicit list of changed slots (sorted, unique, < next.count), for writers that
 * track their changes: O(changes) instead of comparing whole nodes. A listed slot equal to the base's
 * is written anyway (harmless: applying it sets the same value).
 */
export function encodeNodePatch(baseCid: Uint8Array, next: NodeEntries, slots: ArrayLike<number>, maxBytes: number): Uint8Array | undefined {
  if (!(baseCid instanceof Uint8Array) || baseCid.length !== CID_LENGTH || !isBaseCid(baseCid)) {
    throw new TypeError('encodeNodePatch: baseCid must be a 36-byte dag-cbor BLAKE3 CID')
  }
  let size = CID_LENGTH + varintLength(next.count) + varintLength(slots.length)
  for (let i = 0; i < slots.length; i++) {
    const s = slots[i]!
    if (!(s < next.count) || (i > 0 && !(s > slots[i - 1]!))) throw new TypeError('encodeNodePatch: slots must be sorted, unique and < count')
    size += varintLength(s) + 1 + (next.codecs[s] === 0 ? 0 : DIGEST_LENGTH)
    if (size >= maxBytes) return undefined
  }
  return writeDelta(baseCid, next, slots, size)
}

/** The base node's CID (a copy of the first 36 bytes), validated. */
export function deltaBaseCid(delta: Uint8Array): Uint8Array {
  if (!(delta instanceof Uint8Array)) throw new TypeError('deltaBaseCid: delta must be a Uint8Array')
  if (delta.length < CID_LENGTH) throw bad('truncated base CID', delta.length)
  if (!isBaseCid(delta)) throw bad('base is not a CIDv1 dag-cbor BLAKE3-256', 0)
  return copyOf(delta, 0, CID_LENGTH)
}

/** Rebuilds the node from its base and the delta; strict, anything malformed is CKPT_BAD_NODE. */
export function applyNodeDelta(base: NodeEntries, delta: Uint8Array): NodeEntries {
  checkEntries(base, 'applyNodeDelta: base')
  const patch = readNodePatch(delta)
  const count = patch.count
  const codecs = new Uint8Array(count)
  const digests = new Uint8Array(count * DIGEST_LENGTH)
  const keep = Math.min(base.count, count)
  codecs.set(base.codecs.subarray(0, keep))
  digests.set(base.digests.subarray(0, keep * DIGEST_LENGTH))
  for (let i = 0; i < patch.slots.length; i++) {
    const s = patch.slots[i]!
    const d = s * DIGEST_LENGTH
    codecs[s] = patch.codecs[i]!
    if (patch.codecs[i] === 0) digests.fill(0, d, d + DIGEST_LENGTH)
    else digests.set(delta.subarray(patch.digestAt[i]!, patch.digestAt[i]! + DIGEST_LENGTH), d)
  }
  return { count, codecs, digests }
}

/** A node delta read but not applied: its base, the new count and the patched slots. */
export interface NodePatch {
  baseCid: Uint8Array
  count: number
  slots: number[]
  /** per patch: 0 (a hole), 0x55 or 0x71 */
  codecs: number[]
  /** per patch: where its 32-byte digest starts in `delta` (-1 for a hole) */
  digestAt: number[]
  delta: Uint8Array
}

/**
 * The patches of a delta, validated as applyNodeDelta validates them (CKPT_BAD_NODE otherwise),
 * without building the node: a reader that knows the base can look at just what changed.
 */
export function readNodePatch(delta: Uint8Array): NodePatch {
  const baseCid = deltaBaseCid(delta)
  const len = delta.length
  let p = CID_LENGTH
  const varint = (what: string): number => {
    let n = 0
    for (let shift = 0; shift < 21; shift += 7) {
      if (p >= len) throw bad(`truncated ${what}`, p)
      const b = delta[p++]!
      n |= (b & 0x7f) << shift
      if (b < 0x80) {
        if (b === 0 && shift > 0) throw bad(`non-minimal varint for ${what}`, p - 1)
        return n
      }
    }
    throw bad(`${what} out of range`, p)
  }
  const count = varint('node count')
  if (count < 1 || count > MAX_NODE_COUNT) throw bad(`node count ${count} not in 1..${MAX_NODE_COUNT}`, CID_LENGTH)
  const patches = varint('patch count')
  if (patches > count) throw bad(`${patches} patches for ${count} slots`, p)
  const slots: number[] = []
  const codecs: number[] = []
  const digestAt: number[] = []
  let prev = -1
  for (let i = 0; i < patches; i++) {
    const at = p
    const s = varint('slot')
    if (s <= prev || s >= count) throw bad(`slot ${s} out of order or >= ${count}`, at)
    prev = s
    if (p >= len) throw bad('truncated patch', p)
    const c = delta[p++]!
    if (c === 0) digestAt.push(-1)
    else if (c === RAW || c === DAG_CBOR) {
      if (p + DIGEST_LENGTH > len) throw bad('truncated digest', p)
      digestAt.push(p)
      p += DIGEST_LENGTH
    } else throw bad(`slot ${s} has codec ${c}`, p - 1)
    slots.push(s)
    codecs.push(c)
  }
  if (p !== len) throw bad(`${len - p} trailing bytes`, p)
  return { baseCid, count, slots, codecs, digestAt, delta }
}
