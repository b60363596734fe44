/**
 * Verify's proof of node deltas on a worker (SPEC.md §16.1, phase 3). Each chain starts at a tree node
 * stored whole; its deltas are applied in order and every node the chain gives is re-encoded and
 * hashed against its CID. The chains of a store's leaves are independent, so the workers prove them
 * while the main thread walks the DAG. A delta whose base was not proven here is left unresolved: the
 * main thread's data check (which also tries the read path) judges it.
 */
import { blake3Into } from '../../codecs/blake3.js'
import { decompressBlock } from '../../codecs/compress.js'
import { applyNodeDelta, readNodePatch } from '../../codecs/node-delta.js'
import { DIGEST_LENGTH } from '../../codecs/cid.js'
import { CBOR_NULL, decodeNode, encodeNode, LINK_BYTES, patchEncodedLink, slotOffsets, writeLink, type NodeEntries } from '../../codecs/tree-node.js'

/** the node the delta chain gives hashes to its CID */
export const DELTA_PROVEN = 1
/** its base was proven, the node it gives does not hash to its CID: the delta is damaged */
export const DELTA_MISMATCH = 2
/** not judged here (its base is not proven, or the delta does not apply) */
export const DELTA_UNRESOLVED = 0

export interface DeltaChainTask {
  op: 'deltas'
  /** the whole nodes the chains start from: at-rest payloads end to end */
  bases: Uint8Array
  baseStored: Uint32Array
  baseRaw: Uint32Array
  baseCodecs: Uint8Array
  /** the node deltas' payloads end to end, each after the delta it changes */
  deltas: Uint8Array
  deltaStored: Uint32Array
  /** per delta: k >= 0, the delta k of this list it changes; -1 - b, base b */
  parents: Int32Array
  /** 32-byte digests of the bases' CIDs, then of the deltas' */
  digests: Uint8Array
}

export interface DeltaChainResult {
  /** per delta: DELTA_PROVEN, DELTA_MISMATCH or DELTA_UNRESOLVED */
  status: Uint8Array
}

const digest = new Uint8Array(32)

/** A node a chain gave, with its dag-cbor encoding (and where each slot's starts, for patching it). */
interface Version {
  e: NodeEntries
  bytes: Uint8Array
  offsets: Int32Array
}

function version(e: NodeEntries): Version {
  return { e, bytes: encodeNode(e), offsets: slotOffsets(e) }
}

/** Whether the bytes hash to the digest at `at` in `digests`. */
function hashes(bytes: Uint8Array, digests: Uint8Array, at: number): boolean {
  blake3Into(bytes, digest, 0)
  for (let j = 0; j < 32; j++) if (digest[j] !== digests[at + j]) return false
  return true
}

/**
 * The version `delta` gives from `base`. `owned`: base is needed by nothing else, so its arrays,
 * encoding and slot offsets become the new version's: a link changed to another link rewrites its
 * codec and digest in the encoding; a hole turned link or back splices the encoding (the bytes
 * between the changed slots are copied as they are, the offsets after them moved).
 */
function next(base: Version, delta: Uint8Array, owned: boolean): Version {
  if (!owned) return version(applyNodeDelta(base.e, delta))
  const patch = readNodePatch(delta)
  if (patch.count !== base.e.count) return version(applyNodeDelta(base.e, delta))
  const { codecs, digests } = base.e
  const { slots } = patch
  // how the encoding's length changes, and whether any slot turns from a hole to a link or back
  let grow = 0
  let reshaped = false
  for (let i = 0; i < slots.length; i++) {
    if ((codecs[slots[i]!] === 0) === (patch.codecs[i] === 0)) continue
    reshaped = true
    grow += patch.codecs[i] === 0 ? 1 - LINK_BYTES : LINK_BYTES - 1
  }
  let bytes = base.bytes
  const offsets = base.offsets
  if (!reshaped) {
    for (let i = 0; i < slots.length; i++) if (patch.codecs[i] !== 0) patchEncodedLink(bytes, offsets[slots[i]!]!, patch.codecs[i]!, delta, patch.digestAt[i]!)
  } else {
    const old = bytes
    bytes = new Uint8Array(old.length + grow)
    let src = 0
    let dst = 0
    let moved = 0
    let prev = -1
    for (let i = 0; i < slots.length; i++) {
      const slot = slots[i]!
      const off = offsets[slot]!
      bytes.set(old.subarray(src, off), dst)
      dst += off - src
      if (moved !== 0) for (let j = prev + 1; j < slot; j++) offsets[j]! += moved
      offsets[slot] = dst
      const oldLen = codecs[slot] === 0 ? 1 : LINK_BYTES
      const codec = patch.codecs[i]!
      if (codec === 0) bytes[dst] = CBOR_NULL
      else writeLink(bytes, dst, codec, delta, patch.digestAt[i]!)
      const newLen = codec === 0 ? 1 : LINK_BYTES
      dst += newLen
      moved += newLen - oldLen
      src = off + oldLen
      prev = slot
    }
    bytes.set(old.subarray(src), dst)
    if (moved !== 0) for (let j = prev + 1; j < offsets.length; j++) offsets[j]! += moved
  }
  for (let i = 0; i < slots.length; i++) {
    const d = slots[i]! * DIGEST_LENGTH
    codecs[slots[i]!] = patch.codecs[i]!
    if (patch.codecs[i] === 0) digests.fill(0, d, d + DIGEST_LENGTH)
    else digests.set(delta.subarray(patch.digestAt[i]!, patch.digestAt[i]! + DIGEST_LENGTH), d)
  }
  return { e: base.e, bytes, offsets }
}

export function proveDeltaChains(t: DeltaChainTask): DeltaChainResult {
  const nb = t.baseStored.length
  const n = t.parents.length
  // the versions proven so far: the bases, then the deltas' (dropped once patched into a successor)
  const proven: (Version | null)[] = new Array(nb + n).fill(null)
  let at = 0
  for (let b = 0; b < nb; b++) {
    const stored = t.baseStored[b]!
    try {
      const v = version(decodeNode(decompressBlock(t.baseCodecs[b]!, t.bases.subarray(at, at + stored), t.baseRaw[b]!)))
      if (hashes(v.bytes, t.digests, b * 32)) proven[b] = v
    } catch {
      // undecodable: its deltas stay unresolved
    }
    at += stored
  }
  const status = new Uint8Array(n)
  // how many deltas change each version: one changed by a single delta is patched in place
  const children = new Uint16Array(nb + n)
  const from = (k: number) => (t.parents[k]! >= 0 ? nb + t.parents[k]! : -1 - t.parents[k]!)
  for (let k = 0; k < n; k++) if (children[from(k)]! < 0xffff) children[from(k)]!++
  at = 0
  for (let k = 0; k < n; k++) {
    const stored = t.deltaStored[k]!
    const p = from(k)
    const base = proven[p]
    if (base) {
      const owned = children[p] === 1
      // a version patched in place is the new one now: nothing else may use it
      if (owned) proven[p] = null
      let v: Version | undefined
      try {
        v = next(base, t.deltas.subarray(at, at + stored), owned)
      } catch {
        v = undefined
      }
      if (v) {
        const ok = hashes(v.bytes, t.digests, (nb + k) * 32)
        status[k] = ok ? DELTA_PROVEN : DELTA_MISMATCH
        if (ok) proven[nb + k] = v
      }
    }
    at += stored
  }
  return { status }
}
