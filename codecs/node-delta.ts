/**
 * Node deltas: the at-rest form of a tree node as the few slots that differ from an earlier node (its
 * base). Nodes change a few slots per checkpoint, so a 10 KB node usually stores in well under 100
 * bytes. The block's CID is still the BLAKE3 of the full dag-cbor encoding (tree-node.ts).
 *
 * Form 1 (every build writes and reads it):
 *
 *   delta := baseCid(36 bytes) varint(newCount) varint(patchCount) patch*
 *   patch := varint(slot) u8(codec: 0 hole | 0x55 raw | 0x71 dag-cbor) [32-byte digest if codec != 0]
 *
 * Form 2 (written where it is smaller; read by this build on): a zero byte after the base CID (form 1
 * can never have one there: newCount >= 1 in its shortest varint), slots as gaps, and a link equal to
 * an earlier patch's as a back-reference instead of its 32 bytes (a guest's page written with the same
 * content in many places, the same subtree repeated):
 *
 *   delta2 := baseCid(36 bytes) 00 varint(newCount) varint(patchCount) patch2*
 *   patch2 := varint(gap) u8(op) [32-byte digest if op is 0x55 or 0x71] [varint(back) if op is 0x01]
 *
 * - slot = previous patch's slot + 1 + gap (the first patch: gap = slot); op 0 is a hole, 0x55/0x71 a
 *   link with its digest, 0x01 the same link (codec and digest) as the patch back + 1 places earlier,
 *   which must be a link (0x55, 0x71 or 0x01 itself).
 *
 * Both forms:
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

/** Which form an encoder writes: 1, or 2 where it is smaller than form 1 (form 1 otherwise). */
export type DeltaForm = 1 | 2

/** A delta taking base to next, or undefined when the delta would not be smaller than maxBytes. */
export function encodeNodeDelta(baseCid: Uint8Array, base: NodeEntries, next: NodeEntries, maxBytes: number, form: DeltaForm = 1): Uint8Array | undefined {
  if (!(baseCid instanceof Uint8Array) || baseCid.length !== CID_LENGTH || !isBaseCid(baseCid)) {
    throw new TypeError('encodeNodeDelta: baseCid must be a 36-byte dag-cbor BLAKE3 CID')
  }
  checkEntries(base, 'encodeNodeDelta: base')
  checkEntries(next, 'encodeNodeDelta: next')
  if (typeof maxBytes !== 'number' || Number.isNaN(maxBytes)) throw new TypeError('encodeNodeDelta: maxBytes must be a number')
  checkForm(form, 'encodeNodeDelta')

  const count = next.count
  const bd = view(base.digests)
  const nd = view(next.digests)
  const slots = new Int32Array(count)
  let patches = 0
  // Form-1 size without the patchCount varint (at least 1 byte), checked as we go so a big diff stops
  // early in form 1 (form 2 may still fit where form 1 does not: it compares every slot).
  let size = CID_LENGTH + varintLength(count)
  for (let s = 0; s < count; s++) {
    const c = next.codecs[s]!
    const b = s < base.count ? base.codecs[s]! : 0
    if (c === b && (c === 0 || sameDigest(bd, nd, s * DIGEST_LENGTH))) continue
    if (c !== 0 && c !== RAW && c !== DAG_CBOR) throw new TypeError(`encodeNodeDelta: next slot ${s} has codec ${c}`)
    slots[patches++] = s
    size += varintLength(s) + 1 + (c === 0 ? 0 : DIGEST_LENGTH)
    if (form === 1 && size + 1 >= maxBytes) return undefined
  }
  size += varintLength(patches)
  return finish(baseCid, next, slots.subarray(0, patches), size, maxBytes, form)
}

function checkForm(form: unknown, fn: string): void {
  if (form !== 1 && form !== 2) throw new TypeError(`${fn}: form must be 1 or 2`)
}

/** The delta in the form asked for (form 2 only where smaller than form 1, whose size is size1), or undefined when not under maxBytes. */
function finish(baseCid: Uint8Array, next: NodeEntries, slots: ArrayLike<number>, size1: number, maxBytes: number, form: DeltaForm): Uint8Array | undefined {
  if (form === 2) {
    const plan = planForm2(next, slots)
    if (plan.size < size1) return plan.size < maxBytes ? writeForm2(baseCid, next, slots, plan) : undefined
  }
  return size1 < maxBytes ? writeDelta(baseCid, next, slots, size1) : undefined
}

interface Form2Plan {
  size: number
  /** per patch: -1, or the back value of its reference to an earlier patch */
  back: Int32Array
}

/**
 * Form 2's size and back-references: a link equal to an earlier patch's refers to the latest such
 * patch. Candidates are found by the digest's first 4 bytes and confirmed on all 32 (on a clash of
 * the 4 bytes the later patch is written out, which is valid, only not the smallest).
 */
function planForm2(next: NodeEntries, slots: ArrayLike<number>): Form2Plan {
  const n = slots.length
  const back = new Int32Array(n).fill(-1)
  const last = new Map<number, number>()
  const heads = new Int32Array(n <= SCAN_PATCHES ? n : 0)
  const dv = view(next.digests)
  let size = CID_LENGTH + 1 + varintLength(next.count) + varintLength(n)
  let prev = -1
  for (let i = 0; i < n; i++) {
    const s = slots[i]!
    const c = next.codecs[s]!
    size += varintLength(s - prev - 1) + 1
    prev = s
    if (c === 0) continue
    const at = s * DIGEST_LENGTH
    const key = dv.getInt32(at) ^ c
    let j: number | undefined
    if (n <= SCAN_PATCHES) {
      // few patches: a backward scan is cheaper than a map
      for (let k = i - 1; k >= 0 && j === undefined; k--) if (heads[k] === key) j = k
      heads[i] = key
    } else {
      j = last.get(key)
      last.set(key, i)
    }
    if (j !== undefined && next.codecs[slots[j]!] === c && sameAt(dv, slots[j]! * DIGEST_LENGTH, at)) {
      back[i] = i - j - 1
      size += varintLength(back[i]!)
    } else size += DIGEST_LENGTH
  }
  return { size, back }
}

const SCAN_PATCHES = 16

function sameAt(d: DataView, a: number, b: number): boolean {
  for (let k = 0; k < DIGEST_LENGTH; k += 4) if (d.getInt32(a + k) !== d.getInt32(b + k)) return false
  return true
}

function writeForm2(baseCid: Uint8Array, next: NodeEntries, slots: ArrayLike<number>, plan: Form2Plan): Uint8Array {
  const out = new Uint8Array(plan.size)
  out.set(baseCid, 0)
  // out[CID_LENGTH] = 0: the form-2 marker
  let p = writeVarint(out, CID_LENGTH + 1, next.count)
  p = writeVarint(out, p, slots.length)
  let prev = -1
  for (let i = 0; i < slots.length; i++) {
    const s = slots[i]!
    p = writeVarint(out, p, s - prev - 1)
    prev = s
    const c = next.codecs[s]!
    const b = plan.back[i]!
    if (b >= 0) {
      out[p++] = BACK_REF
      p = writeVarint(out, p, b)
    } else {
      out[p++] = c
      if (c !== 0) {
        out.set(next.digests.subarray(s * DIGEST_LENGTH, (s + 1) * DIGEST_LENGTH), p)
        p += DIGEST_LENGTH
      }
    }
  }
  if (p !== out.length) throw new Error(`node delta: form 2 wrote ${p} bytes, planned ${out.length}`)
  return out
}

/** Form 2's op for a link equal to an earlier patch's. */
const BACK_REF = 0x01

/** Writes a form-1 delta of `size` bytes patching `slots` (sorted, unique) with next's entries. */
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
export function encodeNodePatch(baseCid: Uint8Array, next: NodeEntries, slots: ArrayLike<number>, maxBytes: number, form: DeltaForm = 1): Uint8Array | undefined {
  if (!(baseCid instanceof Uint8Array) || baseCid.length !== CID_LENGTH || !isBaseCid(baseCid)) {
    throw new TypeError('encodeNodePatch: baseCid must be a 36-byte dag-cbor BLAKE3 CID')
  }
  checkForm(form, 'encodeNodePatch')
  let size = CID_LENGTH + varintLength(next.count) + varintLength(slots.length)
  for (let i = 0; i < slots.length; i++) {
    const s = slots[i]!
    if (!(s < next.count) || (i > 0 && !(s > slots[i - 1]!))) throw new TypeError('encodeNodePatch: slots must be sorted, unique and < count')
    size += varintLength(s) + 1 + (next.codecs[s] === 0 ? 0 : DIGEST_LENGTH)
    if (form === 1 && size >= maxBytes) return undefined
  }
  return finish(baseCid, next, slots, size, maxBytes, form)
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
  return patchInto({ count, codecs, digests }, patch)
}

/** Writes a read patch's slots into a node of its count. */
function patchInto(n: NodeEntries, patch: NodePatch): NodeEntries {
  const { codecs, digests } = n
  for (let i = 0; i < patch.slots.length; i++) {
    const s = patch.slots[i]!
    const d = s * DIGEST_LENGTH
    codecs[s] = patch.codecs[i]!
    if (patch.codecs[i] === 0) digests.fill(0, d, d + DIGEST_LENGTH)
    else digests.set(patch.delta.subarray(patch.digestAt[i]!, patch.digestAt[i]! + DIGEST_LENGTH), d)
  }
  return n
}

/**
 * applyNodeDelta into the base's own arrays when the delta keeps its slot count (the base is changed
 * and returned): for a reader that rebuilds a chain in a private copy and needs none of the versions
 * between. A delta that resizes the node gets new arrays, as applyNodeDelta gives. The result is
 * the same node either way.
 */
export function applyNodeDeltaInPlace(base: NodeEntries, delta: Uint8Array): NodeEntries {
  checkEntries(base, 'applyNodeDeltaInPlace: base')
  const patch = readNodePatch(delta)
  return patch.count === base.count ? patchInto(base, patch) : applyNodeDelta(base, delta)
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
  const form2 = p < len && delta[p] === 0
  if (form2) p++
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
    const v = varint(form2 ? 'slot gap' : 'slot')
    const s = form2 ? prev + 1 + v : v
    if (s <= prev || s >= count) throw bad(`slot ${s} out of order or >= ${count}`, at)
    prev = s
    if (p >= len) throw bad('truncated patch', p)
    const c = delta[p++]!
    if (c === 0) {
      codecs.push(0)
      digestAt.push(-1)
    } else if (c === RAW || c === DAG_CBOR) {
      if (p + DIGEST_LENGTH > len) throw bad('truncated digest', p)
      codecs.push(c)
      digestAt.push(p)
      p += DIGEST_LENGTH
    } else if (form2 && c === BACK_REF) {
      const refAt = p
      const j = i - 1 - varint('back-reference')
      if (j < 0 || codecs[j] === 0) throw bad(`slot ${s} refers to ${j < 0 ? 'no earlier patch' : 'a hole'}`, refAt)
      codecs.push(codecs[j]!)
      digestAt.push(digestAt[j]!)
    } else throw bad(`slot ${s} has codec ${c}`, p - 1)
    slots.push(s)
  }
  if (p !== len) throw bad(`${len - p} trailing bytes`, p)
  return { baseCid, count, slots, codecs, digestAt, delta }
}
