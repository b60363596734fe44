/**
 * Comparing two versions of a tree node slot by slot, fast: digests compared as 32-bit words where
 * both are 4-byte aligned (decoded nodes always are). Exports, imports and verify walk a checkpoint
 * against the previous one and look only at what changed.
 */
import { cidBytes, cidEquals, type CidBytes } from '../codecs/cid.js'
import type { NodeEntries } from '../codecs/tree-node.js'

/** The CID linked in slot s of a node, or null (a hole, a slot past the node's end, or no node). */
export function slotCid(e: NodeEntries | null, s: number): CidBytes | null {
  if (!e || s >= e.count || !e.codecs[s]) return null
  return cidBytes(e.codecs[s]!, e.digests.subarray(s * 32, s * 32 + 32))
}

/** Two links (or holes) are the same. */
export function sameCid(a: CidBytes | null, b: CidBytes | null): boolean {
  return a === null ? b === null : b !== null && cidEquals(a, b)
}

/** Slots where `a` differs from `b` (all of a's slots without a comparable b), increasing. */
export function changedSlots(a: NodeEntries, b: NodeEntries | undefined): number[] {
  const out: number[] = []
  if (!b || b.count !== a.count) {
    for (let s = 0; s < a.count; s++) out.push(s)
    return out
  }
  const wa = words(a.digests)
  const wb = words(b.digests)
  for (let s = 0; s < a.count; s++) {
    if (a.codecs[s] !== b.codecs[s]) {
      out.push(s)
      continue
    }
    if (!a.codecs[s]) continue
    if (wa && wb) {
      const o = s * 8
      if (wa[o] !== wb[o] || wa[o + 1] !== wb[o + 1] || wa[o + 2] !== wb[o + 2] || wa[o + 3] !== wb[o + 3] || wa[o + 4] !== wb[o + 4] || wa[o + 5] !== wb[o + 5] || wa[o + 6] !== wb[o + 6] || wa[o + 7] !== wb[o + 7]) out.push(s)
    } else if (!sameDigest(a.digests, b.digests, s)) out.push(s)
  }
  return out
}

const u32Views = new WeakMap<Uint8Array, Uint32Array>()

/** digests as 32-bit words where they are 4-byte aligned (decoded nodes always are), else undefined */
function words(d: Uint8Array): Uint32Array | undefined {
  let v = u32Views.get(d)
  if (v === undefined && d.byteOffset % 4 === 0 && d.length % 4 === 0) {
    v = new Uint32Array(d.buffer, d.byteOffset, d.length / 4)
    u32Views.set(d, v)
  }
  return v
}

export function sameDigest(a: Uint8Array, b: Uint8Array, slot: number): boolean {
  const wa = words(a)
  const wb = words(b)
  if (wa && wb) {
    const at = slot * 8
    for (let i = 0; i < 8; i++) if (wa[at + i] !== wb[at + i]) return false
    return true
  }
  const at = slot * 32
  for (let i = 0; i < 32; i++) if (a[at + i] !== b[at + i]) return false
  return true
}


/** The CID linked in slot s (which must not be a hole). */
export function childCid(e: NodeEntries, s: number): Uint8Array {
  const c = new Uint8Array(36)
  c[0] = 0x01
  c[1] = e.codecs[s]!
  c[2] = 0x1e
  c[3] = 0x20
  c.set(e.digests.subarray(s * 32, s * 32 + 32), 4)
  return c
}
