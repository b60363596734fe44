import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { describe, expect, it } from 'vitest'
import { CkptError } from '../../codecs/errors.js'
import { decodeNode, emptyNode, encodedNodeLength, encodeNode, encodeNodeInto, nodeLinkCount, type NodeEntries } from '../../codecs/tree-node.js'
import { hex } from '../helpers/bytes.js'
import { mulberry32 } from '../helpers/rng.js'


/** A random node: holeShare of the slots are holes, links are raw or dag-cbor with random digests. */
function randomNode(next: () => number, count: number, holeShare: number): NodeEntries {
  const n = emptyNode(count)
  for (let i = 0; i < count; i++) {
    if (next() / 2 ** 32 < holeShare) continue
    n.codecs[i] = next() & 1 ? 0x55 : 0x71
    for (let k = 0; k < 32; k++) n.digests[i * 32 + k] = next() & 0xff
  }
  return n
}

function toCids(n: NodeEntries): (CID | null)[] {
  const out: (CID | null)[] = []
  for (let i = 0; i < n.count; i++) {
    const c = n.codecs[i]!
    out.push(c === 0 ? null : CID.create(1, c, Digest.create(0x1e, n.digests.slice(i * 32, i * 32 + 32))))
  }
  return out
}

const cidText = (c: CID | null): string => (c === null ? 'null' : hex(c.bytes))

function expectBadNode(bytes: Uint8Array): void {
  let caught: unknown
  try {
    decodeNode(bytes)
  } catch (err) {
    caught = err
  }
  expect(caught, hex(bytes.subarray(0, 64))).toBeInstanceOf(CkptError)
  expect((caught as CkptError).code).toBe('CKPT_BAD_NODE')
}

function sameEntries(a: NodeEntries, b: NodeEntries): void {
  expect(a.count).toBe(b.count)
  expect(hex(a.codecs)).toBe(hex(b.codecs))
  expect(hex(a.digests)).toBe(hex(b.digests))
}

describe('tree node encoding matches @ipld/dag-cbor', () => {
  it('for 560 random nodes, including 65,536-slot ones', () => {
    const next = mulberry32(0x5eed)
    const counts: number[] = [1, 2, 23, 24, 255, 256, 65535, 65536, 65536]
    while (counts.length < 560) counts.push(1 + (next() % 1024))
    for (const count of counts) {
      const shares = [0, 0.1, 0.5, 0.9, 1]
      const node = randomNode(next, count, shares[next() % shares.length]!)
      const ours = encodeNode(node)
      const cids = toCids(node)
      const theirs = dagCbor.encode(cids)
      expect(ours.length).toBe(theirs.length)
      expect(Buffer.from(ours).equals(Buffer.from(theirs))).toBe(true)
      expect(encodedNodeLength(node)).toBe(ours.length)
      expect(nodeLinkCount(node)).toBe(cids.filter((c) => c !== null).length)

      sameEntries(decodeNode(theirs), node)
      const back = dagCbor.decode<(CID | null)[]>(ours)
      expect(back.map(cidText)).toEqual(cids.map(cidText))
    }
  })

  it('encodeNodeInto writes the same bytes over a dirty buffer, or into a new array when it is too small', () => {
    const next = mulberry32(0x1470)
    const scratch = new Uint8Array(12 << 10)
    for (const count of [1, 23, 24, 256, 300, 65536]) {
      for (const share of [0, 0.4, 1]) {
        const node = randomNode(next, count, share)
        scratch.fill(0xee)
        const bytes = encodeNodeInto(node, scratch)
        expect(hex(bytes)).toBe(hex(encodeNode(node)))
        expect(bytes.buffer === scratch.buffer).toBe(encodedNodeLength(node) <= scratch.length)
      }
    }
    expect(() => encodeNodeInto({ count: 2, codecs: new Uint8Array(2), digests: new Uint8Array(63) }, scratch)).toThrow(TypeError)
  })

  it('emptyNode is all holes', () => {
    const n = emptyNode(300)
    expect(nodeLinkCount(n)).toBe(0)
    expect(hex(encodeNode(n))).toBe(hex(dagCbor.encode(new Array(300).fill(null))))
  })
})

describe('decodeNode rejects everything but the canonical form', () => {
  const link = (codec = 0x55): number[] => [0xd8, 0x2a, 0x58, 0x25, 0x00, 0x01, codec, 0x1e, 0x20, ...new Array(32).fill(7)]
  const one = (entry: number[]): Uint8Array => Uint8Array.from([0x81, ...entry])

  it('accepts the reference shapes', () => {
    expect(decodeNode(one(link())).codecs[0]).toBe(0x55)
    expect(decodeNode(one(link(0x71))).codecs[0]).toBe(0x71)
    expect(decodeNode(one([0xf6])).codecs[0]).toBe(0)
  })

  const cases: [string, number[]][] = [
    ['empty input', []],
    ['a map', [0xa1, 0xf6, 0xf6]],
    ['a byte string', [0x41, 0x00]],
    ['an indefinite array', [0x9f, 0xf6, 0xff]],
    ['count 0', [0x80]],
    ['count 0 in long form', [0x98, 0x00]],
    ['non-minimal 1-byte count', [0x98, 0x01, 0xf6]],
    ['non-minimal 2-byte count', [0x99, 0x00, 0x01, 0xf6]],
    ['non-minimal 4-byte count', [0x9a, 0x00, 0x00, 0x00, 0x01, 0xf6]],
    ['8-byte count', [0x9b, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xf6]],
    ['count 65537', [0x9a, 0x00, 0x01, 0x00, 0x01]],
    ['truncated header', [0x99, 0x01]],
    ['truncated slots', [0x82, 0xf6]],
    ['trailing bytes', [0x81, 0xf6, 0xf6]],
    ['undefined instead of null', [0x81, 0xf7]],
    ['false instead of null', [0x81, 0xf4]],
    ['tag other than 42', [0x81, 0xd8, 0x2b, ...link().slice(2)]],
    ['tag 42 in a longer form', [0x81, 0xd9, 0x00, 0x2a, ...link().slice(2)]],
    ['untagged byte string', [0x81, ...link().slice(2)]],
    ['byte string of 36 bytes', [0x81, 0xd8, 0x2a, 0x58, 0x24, ...link().slice(5)]],
    ['byte string of 38 bytes', [0x81, 0xd8, 0x2a, 0x58, 0x26, ...link().slice(4), 0]],
    ['byte string length in short form', [0x81, 0xd8, 0x2a, 0x57, ...link().slice(4, 27)]],
    ['missing 0x00 prefix', [0x81, ...link().slice(0, 4), 0x01, ...link().slice(5)]],
    ['CIDv0-like version', [0x81, ...link().slice(0, 5), 0x00, ...link().slice(6)]],
    ['dag-pb codec', [0x81, ...link(0x70)]],
    ['sha2-256 hash', [0x81, ...link().slice(0, 7), 0x12, ...link().slice(8)]],
    ['digest length 31', [0x81, ...link().slice(0, 8), 0x1f, ...link().slice(9)]],
    ['truncated link', [0x81, ...link().slice(0, 40)]],
  ]
  for (const [name, bytes] of cases) {
    it(name, () => expectBadNode(Uint8Array.from(bytes)))
  }

  it('a 65,536-slot node with one slot too few', () => {
    const full = encodeNode(emptyNode(65536))
    expectBadNode(full.subarray(0, full.length - 1))
  })

  it('misuse is a TypeError', () => {
    expect(() => decodeNode([0x81, 0xf6] as unknown as Uint8Array)).toThrow(TypeError)
    expect(() => emptyNode(0)).toThrow(TypeError)
    expect(() => emptyNode(65537)).toThrow(TypeError)
    const n = emptyNode(2)
    n.codecs[1] = 0x70
    expect(() => encodeNode(n)).toThrow(TypeError)
    expect(() => encodeNode({ count: 2, codecs: new Uint8Array(2), digests: new Uint8Array(63) })).toThrow(TypeError)
  })
})

describe('decodeNode fuzz', () => {
  it('2,000 mutations give CKPT_BAD_NODE or a canonical node', () => {
    const next = mulberry32(42)
    const seeds = [1, 3, 24, 200, 300].map((count) => encodeNode(randomNode(next, count, 0.4)))
    let accepted = 0
    for (let i = 0; i < 2000; i++) {
      const base = seeds[i % seeds.length]!
      let bytes: Uint8Array
      switch (next() % 4) {
        case 0: {
          bytes = Uint8Array.from(base)
          const flips = 1 + (next() % 3)
          for (let f = 0; f < flips; f++) bytes[next() % bytes.length]! ^= 1 << next() % 8
          break
        }
        case 1: {
          bytes = Uint8Array.from(base)
          bytes[next() % bytes.length] = next() & 0xff
          break
        }
        case 2:
          bytes = base.subarray(0, next() % base.length)
          break
        default: {
          const extra = 1 + (next() % 50)
          bytes = new Uint8Array(base.length + extra)
          bytes.set(base)
          for (let k = base.length; k < bytes.length; k++) bytes[k] = next() & 0xff
        }
      }
      try {
        const n = decodeNode(bytes)
        expect(hex(encodeNode(n))).toBe(hex(bytes))
        accepted++
      } catch (err) {
        expect(err).toBeInstanceOf(CkptError)
        expect((err as CkptError).code).toBe('CKPT_BAD_NODE')
      }
    }
    // flips inside digests stay valid, so some mutations must decode
    expect(accepted).toBeGreaterThan(0)
  })
})
