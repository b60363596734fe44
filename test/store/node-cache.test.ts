/**
 * The node cache's bound is in units of 256 slots, so a larger fan-out does not multiply its memory:
 * a 1,024-slot node weighs 4, intermediate versions take at most half, the oldest go first.
 */
import { describe, expect, it } from 'vitest'
import { blake3 } from '../../codecs/blake3.js'
import { cidBytes, cidKey, DAG_CBOR, RAW } from '../../codecs/cid.js'
import { encodeNode, type NodeEntries } from '../../codecs/tree-node.js'
import { NodeCache } from '../../store/node-cache.js'

function node(count: number, seed: number): NodeEntries {
  const codecs = new Uint8Array(count).fill(RAW)
  const digests = new Uint8Array(count * 32)
  for (let i = 0; i < count; i++) digests.set(blake3(Uint8Array.of(seed, i & 255, i >> 8)), i * 32)
  return { count, codecs, digests }
}
const cidOf = (e: NodeEntries) => cidBytes(DAG_CBOR, blake3(encodeNode(e)))
const keyOf = (e: NodeEntries) => cidKey(cidOf(e))

describe('node cache', () => {
  it('holds 16 units: four 1,024-slot nodes or sixteen 256-slot ones; the least recently used goes first', () => {
    const c = new NodeCache(16)
    const big = [1, 2, 3, 4, 5].map((s) => node(1024, s))
    for (const e of big.slice(0, 4)) c.set(keyOf(e), e)
    for (const e of big.slice(0, 4)) expect(c.get(keyOf(e), cidOf(e))).toBe(e)
    c.base(keyOf(big[0]!)) // used again: big[1] is now the oldest
    c.set(keyOf(big[4]!), big[4]!)
    expect(c.base(keyOf(big[1]!))).toBeUndefined()
    for (const e of [big[0]!, big[2]!, big[3]!, big[4]!]) expect(c.base(keyOf(e))).toBe(e)
    // one 256-slot node more evicts one 1,024-slot node (the oldest), not four small ones
    const small = node(256, 9)
    c.set(keyOf(small), small)
    expect(c.base(keyOf(big[0]!))).toBeUndefined()
    expect(c.base(keyOf(small))).toBe(small)
    const kept = [big[2]!, big[3]!, big[4]!].filter((e) => c.base(keyOf(e)) === e)
    expect(kept).toHaveLength(3)
  })

  it('keeps intermediate versions in at most half its units, hashes one before returning it, and drops one that does not hash', () => {
    const c = new NodeCache(16)
    const versions = [11, 12, 13].map((s) => node(1024, s))
    for (const e of versions) c.keep(keyOf(e), e)
    // 3 × 4 units > 8: the oldest went
    expect(c.base(keyOf(versions[0]!))).toBeUndefined()
    expect(c.base(keyOf(versions[1]!))).toBe(versions[1])
    // a proven node fits beside them
    const p = node(1024, 20)
    c.set(keyOf(p), p)
    expect(c.base(keyOf(p))).toBe(p)
    // get() hashes an unverified version: right CID, returned; under a wrong key, dropped
    expect(c.get(keyOf(versions[2]!), cidOf(versions[2]!))).toBe(versions[2])
    const liar = node(1024, 30)
    c.keep(keyOf(p) + 'x', liar)
    expect(c.get(keyOf(p) + 'x', cidOf(p))).toBeUndefined()
    expect(c.base(keyOf(p) + 'x')).toBeUndefined()
    // dropping frees what a node weighed: 4 new 256-slot nodes fit without evicting p
    c.drop(keyOf(versions[1]!))
    for (let s = 40; s < 44; s++) c.set(`k${s}`, node(256, s))
    expect(c.base(keyOf(p))).toBe(p)
  })

  it('resize() evicts down to the new size in units', () => {
    const c = new NodeCache(64)
    const nodes = Array.from({ length: 16 }, (_, s) => node(1024, 50 + s))
    for (const e of nodes) c.set(keyOf(e), e)
    expect(nodes.every((e) => c.base(keyOf(e)) === e)).toBe(true)
    expect(c.resize(16)).toBe(64)
    expect(nodes.filter((e) => c.base(keyOf(e)) === e)).toHaveLength(4)
  })
})
