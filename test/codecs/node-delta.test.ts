import { describe, expect, it } from 'vitest'
import { cidBytes, DAG_CBOR, RAW } from '../../codecs/cid.js'
import { CkptError } from '../../codecs/errors.js'
import { applyNodeDelta, applyNodeDeltaInPlace, deltaBaseCid, encodeNodeDelta, encodeNodePatch, readNodePatch } from '../../codecs/node-delta.js'
import { emptyNode, encodedNodeLength, encodeNode, type NodeEntries } from '../../codecs/tree-node.js'
import { hex } from '../helpers/bytes.js'
import { mulberry32 } from '../helpers/rng.js'


type Rng = () => number

function setSlot(n: NodeEntries, i: number, next: Rng): void {
  const r = next() % 3
  n.codecs[i] = r === 0 ? 0 : r === 1 ? RAW : DAG_CBOR
  for (let k = 0; k < 32; k++) n.digests[i * 32 + k] = n.codecs[i] === 0 ? 0 : next() & 0xff
}

function randomNode(next: Rng, count: number): NodeEntries {
  const n = emptyNode(count)
  for (let i = 0; i < count; i++) setSlot(n, i, next)
  return n
}

/** next = base resized to newCount (new slots are holes) with k random slots rewritten. */
function mutate(next: Rng, base: NodeEntries, newCount: number, k: number): NodeEntries {
  const n = emptyNode(newCount)
  const keep = Math.min(base.count, newCount)
  n.codecs.set(base.codecs.subarray(0, keep))
  n.digests.set(base.digests.subarray(0, keep * 32))
  for (let j = 0; j < k; j++) setSlot(n, next() % newCount, next)
  return n
}

function randomDigest(next: Rng): Uint8Array {
  return Uint8Array.from({ length: 32 }, () => next() & 0xff)
}


function expectBadNode(f: () => unknown): void {
  let caught: unknown
  try {
    f()
  } catch (err) {
    caught = err
  }
  expect(caught).toBeInstanceOf(CkptError)
  expect((caught as CkptError).code).toBe('CKPT_BAD_NODE')
}

describe('node deltas', () => {
  it('rebuild the next node exactly (seeded property test)', () => {
    const next = mulberry32(0xde17a)
    for (let t = 0; t < 600; t++) {
      const count = t < 5 ? [1, 2, 127, 128, 65536][t]! : 1 + (next() % 600)
      const base = randomNode(next, count)
      const baseCid = cidBytes(DAG_CBOR, randomDigest(next))
      let newCount = count
      if (next() % 4 === 0) newCount = Math.max(1, Math.min(65536, count + (next() % 400) - 200))
      const kinds = [0, 1, 3, next() % (newCount + 1)]
      const k = kinds[next() % kinds.length]!
      const target = mutate(next, base, newCount, k)
      const delta = encodeNodeDelta(baseCid, base, target, Infinity)!
      expect(delta).toBeDefined()
      expect(hex(deltaBaseCid(delta))).toBe(hex(baseCid))
      expect(hex(encodeNode(applyNodeDelta(base, delta)))).toBe(hex(encodeNode(target)))

      // maxBytes: undefined exactly when the delta is not smaller
      expect(encodeNodeDelta(baseCid, base, target, delta.length)).toBeUndefined()
      expect(hex(encodeNodeDelta(baseCid, base, target, delta.length + 1)!)).toBe(hex(delta))
      const limit = encodedNodeLength(target)
      const capped = encodeNodeDelta(baseCid, base, target, limit)
      if (delta.length < limit) expect(capped).toBeDefined()
      else expect(capped).toBeUndefined()
    }
  })

  it('applied in place give the node applyNodeDelta gives, in the arrays of the base unless the count changes', () => {
    const next = mulberry32(0x1a9ce)
    for (let t = 0; t < 300; t++) {
      const count = 1 + (next() % 1100)
      // a chain of 1-6 versions, rebuilt hop by hop in one copy of the first
      const versions = [randomNode(next, count)]
      for (let h = 1 + (next() % 6); h > 0; h--) {
        const prev = versions.at(-1)!
        const newCount = next() % 8 === 0 ? Math.max(1, prev.count + (next() % 50) - 25) : prev.count
        versions.push(mutate(next, prev, newCount, next() % 20))
      }
      const first = versions[0]!
      const firstBytes = hex(encodeNode(first))
      let copy: NodeEntries = { count: first.count, codecs: first.codecs.slice(), digests: first.digests.slice() }
      for (let i = 1; i < versions.length; i++) {
        const delta = encodeNodeDelta(cidBytes(DAG_CBOR, randomDigest(next)), versions[i - 1]!, versions[i]!, Infinity)!
        const before = copy
        copy = applyNodeDeltaInPlace(copy, delta)
        expect(hex(encodeNode(copy))).toBe(hex(encodeNode(versions[i]!)))
        expect(hex(encodeNode(copy))).toBe(hex(encodeNode(applyNodeDelta(versions[i - 1]!, delta))))
        // the same arrays when the count stays, new ones (the base left as it was) when it changes
        if (versions[i]!.count === versions[i - 1]!.count) expect(copy.digests).toBe(before.digests)
        else {
          expect(copy.digests).not.toBe(before.digests)
          expect(hex(encodeNode(before))).toBe(hex(encodeNode(versions[i - 1]!)))
        }
      }
      // the node the copy was made of is untouched
      expect(hex(encodeNode(first))).toBe(firstBytes)
    }
  })

  it('are small for a few changed slots', () => {
    const next = mulberry32(7)
    const base = randomNode(next, 256)
    base.codecs[200] = DAG_CBOR // so that punching a hole there is a change
    const target = mutate(next, base, 256, 0)
    target.codecs[10] = RAW
    target.digests.set(randomDigest(next), 10 * 32)
    target.codecs[200] = 0
    target.digests.fill(0, 200 * 32, 201 * 32)
    const delta = encodeNodeDelta(cidBytes(DAG_CBOR, randomDigest(next)), base, target, Infinity)!
    // 36 CID + 2 count + 1 patch count + (1 slot + 1 codec + 32) + (2 slot + 1 codec)
    expect(delta.length).toBe(36 + 2 + 1 + 34 + 3)
  })

  it('of an unchanged node is only the header', () => {
    const next = mulberry32(8)
    const base = randomNode(next, 5)
    const delta = encodeNodeDelta(cidBytes(DAG_CBOR, randomDigest(next)), base, base, Infinity)!
    expect(delta.length).toBe(36 + 1 + 1)
    expect(hex(encodeNode(applyNodeDelta(base, delta)))).toBe(hex(encodeNode(base)))
  })
})

describe('applyNodeDelta rejects malformed deltas', () => {
  const base = emptyNode(4)
  const cid = [...cidBytes(DAG_CBOR, new Uint8Array(32).fill(9))]
  const digest = new Array(32).fill(5)
  const ok = (rest: number[]): Uint8Array => Uint8Array.from([...cid, ...rest])

  it('accepts a well-formed one', () => {
    const n = applyNodeDelta(base, ok([6, 2, 1, RAW, ...digest, 5, 0]))
    expect(n.count).toBe(6)
    expect([...n.codecs]).toEqual([0, RAW, 0, 0, 0, 0])
  })

  const cases: [string, Uint8Array][] = [
    ['empty', new Uint8Array(0)],
    ['truncated base CID', Uint8Array.from(cid.slice(0, 20))],
    ['raw base CID', Uint8Array.from([...cidBytes(RAW, new Uint8Array(32)), 1, 0])],
    ['CIDv0-like base', Uint8Array.from([0x12, 0x20, ...new Array(34).fill(0), 1, 0])],
    ['missing counts', ok([])],
    ['missing patch count', ok([4])],
    ['count 0', ok([0, 0])],
    ['count 65537', ok([0x81, 0x80, 0x04, 0])],
    ['non-minimal count varint', ok([0x84, 0x00, 0])],
    ['4-byte varint', ok([0x80, 0x80, 0x80, 0x01, 0])],
    ['more patches than slots', ok([2, 3, 0, 0, 1, 0, 2, 0])],
    ['truncated patch list', ok([4, 2, 1, 0])],
    ['truncated digest', ok([4, 1, 1, RAW, ...digest.slice(1)])],
    ['missing codec', ok([4, 1, 1])],
    ['unknown codec', ok([4, 1, 1, 0x70, ...digest])],
    ['slot out of range', ok([4, 1, 4, 0])],
    ['slots out of order', ok([4, 2, 2, 0, 1, 0])],
    ['repeated slot', ok([4, 2, 1, 0, 1, 0])],
    ['trailing bytes', ok([4, 1, 1, 0, 0])],
    ['trailing bytes without patches', ok([4, 0, 7])],
  ]
  for (const [name, delta] of cases) {
    it(name, () => expectBadNode(() => applyNodeDelta(base, delta)))
  }

  it('deltaBaseCid validates', () => {
    expectBadNode(() => deltaBaseCid(new Uint8Array(10)))
    expectBadNode(() => deltaBaseCid(Uint8Array.from([...cidBytes(RAW, new Uint8Array(32)), 1, 0])))
    expect(hex(deltaBaseCid(ok([1, 0])))).toBe(hex(Uint8Array.from(cid)))
  })

  it('misuse is a TypeError', () => {
    const n = emptyNode(1)
    expect(() => encodeNodeDelta(cidBytes(RAW, new Uint8Array(32)), n, n, 100)).toThrow(TypeError)
    expect(() => encodeNodeDelta(new Uint8Array(36), n, n, 100)).toThrow(TypeError)
    expect(() => encodeNodeDelta(Uint8Array.from(cid), { count: 2, codecs: new Uint8Array(1), digests: new Uint8Array(32) }, n, 100)).toThrow(TypeError)
    expect(() => applyNodeDelta({ count: 0, codecs: new Uint8Array(0), digests: new Uint8Array(0) }, ok([1, 0]))).toThrow(TypeError)
  })
})

describe('applyNodeDelta fuzz', () => {
  it('mutated deltas give CKPT_BAD_NODE or a valid node', () => {
    const next = mulberry32(99)
    const bases: NodeEntries[] = []
    const deltas: Uint8Array[] = []
    for (const count of [3, 40, 200, 300]) {
      const base = randomNode(next, count)
      bases.push(base)
      deltas.push(encodeNodeDelta(cidBytes(DAG_CBOR, randomDigest(next)), base, mutate(next, base, count + 10, 6), Infinity)!)
    }
    let accepted = 0
    for (let i = 0; i < 2000; i++) {
      const j = i % deltas.length
      const good = deltas[j]!
      let bytes: Uint8Array
      switch (next() % 4) {
        case 0:
          bytes = Uint8Array.from(good)
          bytes[next() % bytes.length]! ^= 1 << next() % 8
          break
        case 1:
          bytes = Uint8Array.from(good)
          bytes[36 + (next() % (bytes.length - 36))] = next() & 0xff
          break
        case 2:
          bytes = good.subarray(0, next() % good.length)
          break
        default:
          bytes = Uint8Array.from([...good, ...Array.from({ length: 1 + (next() % 8) }, () => next() & 0xff)])
      }
      try {
        const n = applyNodeDelta(bases[j]!, bytes)
        encodeNode(n) // a result must be a valid node
        accepted++
      } catch (err) {
        expect(err).toBeInstanceOf(CkptError)
        expect((err as CkptError).code).toBe('CKPT_BAD_NODE')
      }
    }
    expect(accepted).toBeGreaterThan(0)
  })
})

describe('node deltas, form 2 (gaps and back-references)', () => {
  /** next = base with `slots` set to links of a few repeated digests (as a guest writing one page content in many places). */
  function repeated(next: Rng, base: NodeEntries, slots: number[], distinct: number): NodeEntries {
    const n = mutate(next, base, base.count, 0)
    const pool = Array.from({ length: distinct }, () => randomDigest(next))
    for (const s of slots) {
      n.codecs[s] = RAW
      n.digests.set(pool[next() % distinct]!, s * 32)
    }
    return n
  }

  it('rebuild the next node exactly and are never larger than form 1 (seeded property test)', () => {
    const next = mulberry32(0xf02)
    for (let t = 0; t < 600; t++) {
      const count = t < 5 ? [1, 2, 127, 128, 65536][t]! : 1 + (next() % 600)
      const base = randomNode(next, count)
      const baseCid = cidBytes(DAG_CBOR, randomDigest(next))
      let newCount = count
      if (next() % 4 === 0) newCount = Math.max(1, Math.min(65536, count + (next() % 400) - 200))
      const k = [0, 1, 3, next() % (newCount + 1)][next() % 4]!
      let target = mutate(next, base, newCount, k)
      if (t % 2 === 1) target = repeated(next, target, Array.from({ length: k }, () => next() % newCount), 1 + (next() % 4))
      const d1 = encodeNodeDelta(baseCid, base, target, Infinity)!
      const d2 = encodeNodeDelta(baseCid, base, target, Infinity, 2)!
      expect(d2.length).toBeLessThanOrEqual(d1.length)
      expect(hex(deltaBaseCid(d2))).toBe(hex(baseCid))
      expect(hex(encodeNode(applyNodeDelta(base, d2)))).toBe(hex(encodeNode(target)))
      // maxBytes: undefined exactly when the chosen delta is not smaller
      expect(encodeNodeDelta(baseCid, base, target, d2.length, 2)).toBeUndefined()
      expect(hex(encodeNodeDelta(baseCid, base, target, d2.length + 1, 2)!)).toBe(hex(d2))
      // a patch listing the changed slots gives the same bytes
      const changed: number[] = []
      for (let s = 0; s < newCount; s++) {
        const b = s < base.count ? base.codecs[s]! : 0
        if (target.codecs[s] !== b || (b !== 0 && hex(target.digests.subarray(s * 32, s * 32 + 32)) !== hex(base.digests.subarray(s * 32, s * 32 + 32)))) changed.push(s)
      }
      expect(hex(encodeNodePatch(baseCid, target, changed, Infinity, 2)!)).toBe(hex(d2))
      // readNodePatch resolves back-references to the earlier patch's digest
      const p = readNodePatch(d2)
      expect(p.slots).toEqual(changed)
      p.slots.forEach((s, i) => {
        expect(p.codecs[i]).toBe(target.codecs[s])
        if (p.codecs[i] !== 0) expect(hex(d2.subarray(p.digestAt[i]!, p.digestAt[i]! + 32))).toBe(hex(target.digests.subarray(s * 32, s * 32 + 32)))
      })
    }
  })

  it('store a repeated link in a byte or two', () => {
    const next = mulberry32(11)
    const base = randomNode(next, 256)
    const d = randomDigest(next)
    const target = mutate(next, base, 256, 0)
    for (const s of [130, 131, 140, 200]) {
      target.codecs[s] = RAW
      target.digests.set(d, s * 32)
    }
    const delta = encodeNodeDelta(cidBytes(DAG_CBOR, randomDigest(next)), base, target, Infinity, 2)!
    // 36 CID + marker + 2 count + 1 patch count + (2 gap + op + 32) + 3 × (1 gap + op + 1 back)
    expect(delta.length).toBe(36 + 1 + 2 + 1 + 35 + 9)
    expect(delta[36]).toBe(0)
    expect(hex(encodeNode(applyNodeDelta(base, delta)))).toBe(hex(encodeNode(target)))
  })

  it('fall back to form 1 where form 2 saves nothing', () => {
    const next = mulberry32(12)
    const base = randomNode(next, 5)
    const target = mutate(next, base, 5, 0)
    target.codecs[1] = RAW
    target.digests.set(randomDigest(next), 32)
    const cid = cidBytes(DAG_CBOR, randomDigest(next))
    expect(hex(encodeNodeDelta(cid, base, target, Infinity, 2)!)).toBe(hex(encodeNodeDelta(cid, base, target, Infinity)!))
  })

  it('form 1 deltas (what existing stores hold) still read: the worked example of SPEC.md', () => {
    // SPEC.md §3.2: slot 1 becomes a raw link, slot 2 a hole, as written by builds before form 2
    const digest = Array.from({ length: 32 }, (_, i) => i + 1)
    const old = Uint8Array.from([...cidBytes(DAG_CBOR, new Uint8Array(32).fill(9)), 4, 2, 1, RAW, ...digest, 2, 0])
    const base = emptyNode(4)
    base.codecs[2] = RAW
    base.digests.fill(7, 64, 96)
    const n = applyNodeDelta(base, old)
    expect([...n.codecs]).toEqual([0, RAW, 0, 0])
    expect([...n.digests.subarray(32, 64)]).toEqual(digest)
    expect(n.digests.subarray(64, 96).every((b) => b === 0)).toBe(true)
  })

  const base = emptyNode(4)
  const cid = [...cidBytes(DAG_CBOR, new Uint8Array(32).fill(9))]
  const digest = new Array(32).fill(5)
  const ok2 = (rest: number[]): Uint8Array => Uint8Array.from([...cid, 0, ...rest])

  it('accepts a well-formed one', () => {
    // slots 1 (a link), 2 (the same link, back 0), 3 (a hole): gaps 1, 0, 0
    const n = applyNodeDelta(base, ok2([6, 3, 1, RAW, ...digest, 0, 1, 0, 0, 0]))
    expect(n.count).toBe(6)
    expect([...n.codecs]).toEqual([0, RAW, RAW, 0, 0, 0])
    expect([...n.digests.subarray(64, 96)]).toEqual(digest)
  })

  const cases: [string, Uint8Array][] = [
    ['marker only', ok2([])],
    ['count 0', ok2([0, 0])],
    ['back-reference with no earlier patch', ok2([4, 1, 0, 1, 0])],
    ['back-reference to a hole', ok2([4, 2, 0, 0, 0, 1, 0])],
    ['back-reference too far', ok2([4, 2, 0, RAW, ...digest, 0, 1, 1])],
    ['truncated back-reference', ok2([4, 2, 0, RAW, ...digest, 0, 1])],
    ['non-minimal back-reference', ok2([4, 2, 0, RAW, ...digest, 0, 1, 0x80, 0])],
    ['gap past the count', ok2([4, 1, 4, 0])],
    ['second gap past the count', ok2([4, 2, 2, 0, 1, 0])],
    ['unknown op', ok2([4, 1, 0, 2])],
    ['trailing bytes', ok2([4, 1, 1, 0, 0])],
  ]
  for (const [name, delta] of cases) {
    it(`rejects: ${name}`, () => expectBadNode(() => applyNodeDelta(base, delta)))
  }

  it('a form-1 encoder rejects a bad form', () => {
    const n = emptyNode(1)
    expect(() => encodeNodeDelta(Uint8Array.from(cid), n, n, 100, 3 as 1)).toThrow(TypeError)
    expect(() => encodeNodePatch(Uint8Array.from(cid), n, [], 100, 0 as 1)).toThrow(TypeError)
  })

  it('mutated form-2 deltas give CKPT_BAD_NODE or a valid node', () => {
    const next = mulberry32(199)
    let accepted = 0
    for (let i = 0; i < 1500; i++) {
      const b = randomNode(next, 40 + (i % 200))
      const target = repeated(next, b, Array.from({ length: 8 }, () => next() % b.count), 2)
      const good = encodeNodeDelta(cidBytes(DAG_CBOR, randomDigest(next)), b, target, Infinity, 2)!
      const bytes = Uint8Array.from(good)
      bytes[37 + (next() % (bytes.length - 37))]! ^= 1 << next() % 8
      try {
        encodeNode(applyNodeDelta(b, bytes))
        accepted++
      } catch (err) {
        expect(err).toBeInstanceOf(CkptError)
        expect((err as CkptError).code).toBe('CKPT_BAD_NODE')
      }
    }
    expect(accepted).toBeGreaterThan(0)
  })
})
