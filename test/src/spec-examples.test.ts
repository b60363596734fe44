// SPEC.md's worked hex examples: SPEC.md holds exactly what scripts/spec-examples.mjs makes with the
// built codecs, and the bytes decode as SPEC.md describes them, read here with generic tools only
// (@ipld/dag-cbor, noble's BLAKE3, zlib's CRC-32) and the layouts SPEC.md states.
import fs from 'node:fs'
import { crc32 } from 'node:zlib'
import * as dagCbor from '@ipld/dag-cbor'
import { blake3 } from '@noble/hashes/blake3.js'
import { CID } from 'multiformats/cid'
import { describe, expect, it } from 'vitest'
// @ts-expect-error: a plain ES module script (it loads the codecs from dist/, which `npm test` builds first)
import { examples, parseHex, render, specBlocks } from '../../scripts/spec-examples.mjs'

const spec = fs.readFileSync(new URL('../../SPEC.md', import.meta.url), 'utf8')
const blocks: Record<string, string> = specBlocks(spec)
const bytes = (name: string): Uint8Array => {
  expect(blocks[name], `SPEC.md has the example ${name}`).toBeDefined()
  return parseHex(blocks[name]!)
}
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex')
const chunk = (byte: number) => new Uint8Array(4096).fill(byte)
/** CIDv1 BLAKE3-256 of these bytes, binary: 01 codec 1e 20 digest (SPEC.md, "CIDs") */
const cidOf = (codec: number, content: Uint8Array) => Uint8Array.of(0x01, codec, 0x1e, 0x20, ...blake3(content))

/** unsigned LEB128 at b[p]: [value, next position] */
function varint(b: Uint8Array, p: number): [number, number] {
  let v = 0
  for (let shift = 0; ; shift += 7) {
    const x = b[p++]!
    v += (x & 0x7f) * 2 ** shift
    if (x < 0x80) return [v, p]
  }
}

describe('SPEC.md worked examples', () => {
  it('are what scripts/spec-examples.mjs makes with the built codecs', () => {
    const made: Record<string, [Uint8Array, string][]> = examples()
    expect(Object.keys(blocks).sort()).toEqual(Object.keys(made).sort())
    for (const [name, rows] of Object.entries(made)) expect(blocks[name], name).toBe(render(rows))
  })

  it('tree node: a dag-cbor array of links and nulls, byte-identical to @ipld/dag-cbor', () => {
    const node = bytes('tree-node')
    const slots = dagCbor.decode(node) as (CID | null)[]
    expect(slots.length).toBe(4)
    expect(slots[1]).toBeNull()
    expect(slots[3]).toBeNull()
    expect(slots[0]!.bytes).toEqual(cidOf(0x55, chunk(0x61)))
    expect(slots[2]!.bytes).toEqual(cidOf(0x55, chunk(0x62)))
    expect(hex(dagCbor.encode(slots))).toBe(hex(node))
  })

  it('node delta: applied to the tree node it names, gives the node the pack entry holds', () => {
    const base = bytes('tree-node')
    const delta = bytes('node-delta')
    expect(delta.subarray(0, 36)).toEqual(cidOf(0x71, base))
    let p = 36
    let count: number, patches: number
    ;[count, p] = varint(delta, p)
    ;[patches, p] = varint(delta, p)
    const slots = dagCbor.decode(base) as (CID | null)[]
    const out: (CID | null)[] = Array.from({ length: count }, (_, s) => (s < slots.length ? slots[s]! : null))
    let last = -1
    for (let i = 0; i < patches; i++) {
      let slot: number
      ;[slot, p] = varint(delta, p)
      expect(slot).toBeGreaterThan(last)
      expect(slot).toBeLessThan(count)
      last = slot
      const codec = delta[p++]!
      if (codec === 0) out[slot] = null
      else {
        out[slot] = CID.decode(Uint8Array.of(0x01, codec, 0x1e, 0x20, ...delta.subarray(p, p + 32)))
        p += 32
      }
    }
    expect(p).toBe(delta.length)
    expect(out.map((c) => c?.toString() ?? null)).toEqual([CID.decode(cidOf(0x55, chunk(0x61))).toString(), CID.decode(cidOf(0x55, chunk(0x63))).toString(), null, null])
    const node = dagCbor.encode(out)
    const entry = bytes('pack-entry')
    expect(entry.subarray(12, 48)).toEqual(cidOf(0x71, node))
    expect(Buffer.from(entry.buffer, entry.byteOffset).readUInt32LE(4)).toBe(node.length)
  })

  it('pack entry: the 52-byte header (lengths, codec 3, depth, kind, CID, CRC-32) and its payload', () => {
    const e = Buffer.from(bytes('pack-entry'))
    const delta = bytes('node-delta')
    expect(e.length).toBe(52 + delta.length)
    expect(e.readUInt32LE(0)).toBe(delta.length) // storedLength
    expect([e[8], e[9], e[10], e[11]]).toEqual([3, 1, 0, 0]) // codec node-delta, depth 1, kind block, zero
    expect(hex(e.subarray(12, 16))).toBe('01711e20')
    expect(e.readUInt32LE(48)).toBe(crc32(e.subarray(52), crc32(e.subarray(0, 48))) >>> 0)
    expect(hex(e.subarray(52))).toBe(hex(delta))
    // a footer can never be taken for an entry: "CKPT" read as storedLength is far over 16 MiB
    expect(Buffer.from('CKPTSEAL').readUInt32LE(0)).toBeGreaterThan(16 << 20)
  })

  it('manifest: the dag-cbor map of SPEC.md, the region root being the pack entry node', () => {
    const m = bytes('manifest')
    const v = dagCbor.decode(m) as Record<string, unknown>
    expect(Object.keys(v).sort()).toEqual(['blobs', 'lineage', 'meta', 'parentCid', 'regions', 'timeline', 'v', 'vtime', 'wall'])
    expect(v).toMatchObject({ v: 2, timeline: 'run', vtime: 10_000_000, meta: { label: 'boot' }, blobs: {} })
    // the parent: a byte string (not a tag-42 link) holding the CID of the timeline's first manifest
    expect(v.parentCid).toBeInstanceOf(Uint8Array)
    expect(CID.asCID(v.parentCid)).toBeNull()
    const first = dagCbor.encode({ ...v, vtime: 0, wall: 1767225590000, meta: {}, parentCid: null, regions: { ram: { ...(v.regions as { ram: object }).ram, root: CID.decode(cidOf(0x71, bytes('tree-node'))) } } })
    expect(hex(v.parentCid as Uint8Array)).toBe(hex(cidOf(0x71, first)))
    const ram = (v.regions as Record<string, { size: number; chunk: number; fanout: number; root: CID }>).ram!
    expect([ram.size, ram.chunk, ram.fanout]).toEqual([16384, 4096, 256])
    expect(ram.root.bytes).toEqual(bytes('pack-entry').subarray(12, 48))
    expect(hex(dagCbor.encode(v))).toBe(hex(m))
  })

  it('bundle header: varint length, then dag-cbor {roots, version: 1} naming the manifest', () => {
    const h = bytes('bundle-header')
    const [n, p] = varint(h, 0)
    expect(p + n).toBe(h.length)
    const header = dagCbor.decode(h.subarray(p)) as { roots: CID[]; version: number }
    expect(header.version).toBe(1)
    expect(header.roots.map((r) => hex(r.bytes))).toEqual([hex(cidOf(0x71, bytes('manifest')))])
    expect(header.roots[0]!.toString()).toMatch(/^bafyr[a-z2-7]+$/)
  })
})
