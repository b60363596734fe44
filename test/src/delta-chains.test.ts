/**
 * verify --deep proves node deltas on the workers, chain by chain (src/pipeline/delta-chains.ts): a
 * version changed by one delta only is patched in place, its encoding rewritten or spliced. Every
 * version it proves must be the node applyNodeDelta gives, hashed against its CID; a delta that does
 * not give its CID is a mismatch, and nothing built on a version not proven is judged.
 */
import { blake3 } from '@noble/hashes/blake3.js'
import { describe, expect, it } from 'vitest'
import { AT_REST, compressBlock, zstdCompressor, deflateCompressor } from '../../codecs/compress.js'
import { cidBytes, DAG_CBOR } from '../../codecs/cid.js'
import { applyNodeDelta, encodeNodeDelta } from '../../codecs/node-delta.js'
import { encodeNode, type NodeEntries } from '../../codecs/tree-node.js'
import { DELTA_MISMATCH, DELTA_PROVEN, DELTA_UNRESOLVED, proveDeltaChains, type DeltaChainTask } from '../../src/pipeline/delta-chains.js'
import { makeRng, type Rng } from '../helpers/rng.js'

function randomNode(rng: Rng, count: number): NodeEntries {
  const codecs = new Uint8Array(count)
  const digests = new Uint8Array(count * 32)
  for (let i = 0; i < count; i++) {
    if (rng.chance(0.3)) continue
    codecs[i] = rng.chance(0.8) ? 0x55 : 0x71
    digests.set(rng.bytes(32), i * 32)
  }
  return { count, codecs, digests }
}

/** The next version: a few slots changed (a link to another, a hole to a link and back), sometimes a new count. */
function changed(rng: Rng, n: NodeEntries): NodeEntries {
  const count = rng.chance(0.1) ? Math.max(1, n.count + rng.int(-5, 6)) : n.count
  const codecs = new Uint8Array(count)
  const digests = new Uint8Array(count * 32)
  const keep = Math.min(count, n.count)
  codecs.set(n.codecs.subarray(0, keep))
  digests.set(n.digests.subarray(0, keep * 32))
  for (let k = rng.int(1, 6); k > 0; k--) {
    const i = rng.int(0, count)
    const r = rng.int(0, 3)
    codecs[i] = r === 0 ? 0 : r === 1 ? 0x55 : 0x71
    digests.fill(0, i * 32, i * 32 + 32)
    if (codecs[i]) digests.set(rng.bytes(32), i * 32)
  }
  return { count, codecs, digests }
}

const digestOf = (n: NodeEntries) => blake3(encodeNode(n))

interface Chain {
  base: NodeEntries
  /** per delta: its node, its payload, the delta it changes (-1: the base) */
  versions: { node: NodeEntries; delta: Uint8Array; parent: number }[]
}

/** A chain from a base, branching now and then (a version changed by two deltas, as forks do). */
function makeChain(rng: Rng, length: number): Chain {
  const base = randomNode(rng, rng.int(1, 300))
  const versions: Chain['versions'] = []
  for (let k = 0; k < length; k++) {
    const parent = k === 0 ? -1 : rng.chance(0.15) ? rng.int(-1, k) : k - 1
    const from = parent < 0 ? base : versions[parent]!.node
    const node = changed(rng, from)
    const delta = encodeNodeDelta(cidBytes(DAG_CBOR, digestOf(from)), from, node, 1 << 30, rng.chance(0.5) ? 2 : 1)!
    expect(delta).toBeDefined()
    // the codec's own answer
    expect(applyNodeDelta(from, delta)).toEqual(node)
    versions.push({ node, delta, parent })
  }
  return { base, versions }
}

function taskOf(chains: Chain[], codec: number): DeltaChainTask {
  const c = codec === AT_REST.zstd ? zstdCompressor() ?? deflateCompressor() : deflateCompressor()
  const bases = chains.map((ch) => compressBlock(c, encodeNode(ch.base)))
  const deltas = chains.flatMap((ch) => ch.versions.map((v) => v.delta))
  const parents: number[] = []
  let first = 0
  chains.forEach((ch, b) => {
    for (const v of ch.versions) parents.push(v.parent < 0 ? -1 - b : first + v.parent)
    first += ch.versions.length
  })
  const cat = (list: Uint8Array[]) => {
    const out = new Uint8Array(list.reduce((n, x) => n + x.length, 0))
    let at = 0
    for (const x of list) {
      out.set(x, at)
      at += x.length
    }
    return out
  }
  return {
    op: 'deltas',
    bases: cat(bases.map((b) => b.bytes)),
    baseStored: Uint32Array.from(bases, (b) => b.bytes.length),
    baseRaw: Uint32Array.from(chains, (ch) => encodeNode(ch.base).length),
    baseCodecs: Uint8Array.from(bases, (b) => b.code),
    deltas: cat(deltas),
    deltaStored: Uint32Array.from(deltas, (d) => d.length),
    parents: Int32Array.from(parents),
    digests: cat([...chains.map((ch) => digestOf(ch.base)), ...chains.flatMap((ch) => ch.versions.map((v) => digestOf(v.node)))]),
  }
}

describe('node delta chains proven on a worker', () => {
  it('prove every version of intact chains, linear and branching, whatever changed', () => {
    const rng = makeRng(99)
    const chains = Array.from({ length: 12 }, () => makeChain(rng, rng.int(1, 40)))
    for (const codec of [AT_REST.zstd, AT_REST.deflate]) {
      const r = proveDeltaChains(taskOf(chains, codec))
      expect([...r.status].every((s) => s === DELTA_PROVEN)).toBe(true)
      expect(r.status.length).toBe(chains.reduce((n, ch) => n + ch.versions.length, 0))
    }
  })

  it('judge a delta that does not give its CID a mismatch, and leave what is built on it unresolved', () => {
    const rng = makeRng(7)
    const chain = makeChain(rng, 12)
    const task = taskOf([chain], AT_REST.deflate)
    // delta 5 gives a node, but another one than its CID names: one slot's digest changed in the delta
    const bad = 5
    let at = task.deltaStored.subarray(0, bad).reduce((n, x) => n + x, 0)
    at += task.deltaStored[bad]! - 1
    task.deltas[at]! ^= 0x01
    const r = proveDeltaChains(task)
    const below = new Set<number>([bad])
    chain.versions.forEach((v, k) => {
      if (below.has(v.parent)) below.add(k)
    })
    chain.versions.forEach((_, k) => {
      const want = k === bad ? DELTA_MISMATCH : below.has(k) ? DELTA_UNRESOLVED : DELTA_PROVEN
      expect(r.status[k], `delta ${k}`).toBe(want)
    })
  })

  it('leave every delta of a chain unresolved when its base is not the node its CID names, or does not decode', () => {
    const rng = makeRng(8)
    const chains = [makeChain(rng, 6), makeChain(rng, 6), makeChain(rng, 6)]
    const task = taskOf(chains, AT_REST.deflate)
    task.digests[0]! ^= 0xff
    // the third base's bytes cut short: it does not decompress
    task.baseRaw[2]! += 1
    const r = proveDeltaChains(task)
    expect([...r.status.subarray(0, 6)]).toEqual(Array(6).fill(DELTA_UNRESOLVED))
    expect([...r.status.subarray(6, 12)]).toEqual(Array(6).fill(DELTA_PROVEN))
    expect([...r.status.subarray(12)]).toEqual(Array(6).fill(DELTA_UNRESOLVED))
  })

  it('leave a delta that does not apply unresolved, and what is built on it', () => {
    const rng = makeRng(9)
    const chain = makeChain(rng, 5)
    const task = taskOf([chain], AT_REST.deflate)
    // delta 2's base CID prefix broken: it does not decode as a delta
    const at = task.deltaStored.subarray(0, 2).reduce((n, x) => n + x, 0)
    task.deltas[at + 1] = 0x55
    const r = proveDeltaChains(task)
    const below = new Set<number>([2])
    chain.versions.forEach((v, k) => {
      if (below.has(v.parent)) below.add(k)
    })
    chain.versions.forEach((_, k) => expect(r.status[k], `delta ${k}`).toBe(below.has(k) ? DELTA_UNRESOLVED : DELTA_PROVEN))
  })
})
