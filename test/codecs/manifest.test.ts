/**
 * Manifest versions (SPEC.md §3.3): version 2, what ckpt writes, holds the parent as `parentCid`, the
 * CID's 36 bytes in a byte string, so generic IPLD walkers (a block's links()) see only the
 * checkpoint's content; version 1, the parent a tag-42 link, still decodes to the same Manifest. The
 * two encodings of one checkpoint differ in `v` and that field alone.
 */
import * as dagCbor from '@ipld/dag-cbor'
import { blake3 } from '@noble/hashes/blake3.js'
import { createUnsafe } from 'multiformats/block'
import { CID } from 'multiformats/cid'
import { describe, expect, it } from 'vitest'
import { decodeManifest, encodeManifest, MANIFEST_VERSION, type Manifest } from '../../codecs/manifest.js'

const cid = (codec: number, seed: number) => Uint8Array.of(0x01, codec, 0x1e, 0x20, ...blake3(Uint8Array.of(seed)))
const PARENT = cid(0x71, 1)
const ROOT = cid(0x71, 2)
const CHUNK = cid(0x55, 3)

function manifest(parent: Uint8Array | null): Manifest {
  return {
    timeline: 'vm/run',
    lineage: '0123456789abcdef0123456789abcdef',
    vtime: 42n,
    wall: 1767225600000,
    parent,
    meta: { label: 'boot' },
    regions: { ram: { size: 65536, chunkSize: 4096, fanout: 16, root: ROOT } },
    blobs: { cpu: { size: 100, chunks: [{ cid: CHUNK, length: 100 }] } },
  }
}

/** the CIDs a generic IPLD walker follows from these dag-cbor bytes */
function links(bytes: Uint8Array): string[] {
  const block = createUnsafe({ bytes, cid: CID.decode(cid(0x71, 9)), codec: dagCbor })
  return [...block.links()].map(([, c]) => c.toString())
}

const generic = (bytes: Uint8Array) => dagCbor.decode<Record<string, unknown>>(bytes)
const reencode = (o: Record<string, unknown>) => dagCbor.encode(o)

function code(f: () => unknown): string | undefined {
  try {
    f()
  } catch (err) {
    return (err as { code?: string }).code + ': ' + (err as Error).message
  }
  return undefined
}

describe('manifest version 2: the parent is history, not a link', () => {
  it('writes v 2 with parentCid the CID bytes (a byte string, no tag 42) and no parent key', () => {
    expect(MANIFEST_VERSION).toBe(2)
    const bytes = encodeManifest(manifest(PARENT))
    const o = generic(bytes)
    expect(o.v).toBe(2)
    expect(Object.keys(o).sort()).toEqual(['blobs', 'lineage', 'meta', 'parentCid', 'regions', 'timeline', 'v', 'vtime', 'wall'])
    expect(o.parentCid).toBeInstanceOf(Uint8Array)
    expect(CID.asCID(o.parentCid)).toBeNull()
    expect(Buffer.from(o.parentCid as Uint8Array).equals(Buffer.from(PARENT))).toBe(true)
    // in the bytes: "parentCid", then 58 24 (a 36-byte string), then the CID; never d8 2a before it
    const at = Buffer.from(bytes).indexOf(Buffer.from([0x69, ...Buffer.from('parentCid'), 0x58, 0x24, ...PARENT]))
    expect(at).toBeGreaterThan(0)
    expect(encodeManifest(manifest(null))).toEqual(reencode({ ...generic(encodeManifest(manifest(PARENT))), parentCid: null }))
  })

  it('a generic walker follows only the content: region roots and blob chunks, not the parent', () => {
    const want = [CID.decode(ROOT).toString(), CID.decode(CHUNK).toString()].sort()
    expect(links(encodeManifest(manifest(PARENT))).sort()).toEqual(want)
    // version 1's parent is a link: the walker goes into the history
    expect(links(encodeManifest(manifest(PARENT), 1)).sort()).toEqual([...want, CID.decode(PARENT).toString()].sort())
  })

  it('version 1 still decodes, to the same Manifest as version 2', () => {
    for (const parent of [PARENT, null]) {
      const v1 = encodeManifest(manifest(parent), 1)
      const v2 = encodeManifest(manifest(parent))
      expect(generic(v1).v).toBe(1)
      expect(Object.keys(generic(v1))).toContain('parent')
      expect(decodeManifest(v1)).toEqual(decodeManifest(v2))
      expect(decodeManifest(v2)).toEqual({ ...manifest(parent), meta: expect.anything(), regions: expect.anything(), blobs: expect.anything() })
      expect(decodeManifest(v2).parent === null ? null : Buffer.from(decodeManifest(v2).parent!).toString('hex')).toBe(parent && Buffer.from(parent).toString('hex'))
    }
  })

  it('the two encodings of one checkpoint differ in v and the parent field alone', () => {
    for (const parent of [PARENT, null]) {
      const v1 = generic(encodeManifest(manifest(parent), 1))
      const v2 = generic(encodeManifest(manifest(parent)))
      const { parentCid, ...rest2 } = v2
      const { parent: link, ...rest1 } = v1
      expect({ ...rest2, v: 1 }).toEqual(rest1)
      expect(parentCid === null ? null : CID.decode(parentCid as Uint8Array).toString()).toBe(link === null ? null : String(link))
      // and the version-1 bytes come back exactly from the version-2 map with the field turned into a link
      const back = reencode({ ...rest2, v: 1, parent: parentCid === null ? null : CID.decode(parentCid as Uint8Array) })
      expect(Buffer.from(back).equals(Buffer.from(encodeManifest(manifest(parent), 1)))).toBe(true)
    }
  })

  it('each version has exactly its own parent field, of its own kind', () => {
    const v2 = generic(encodeManifest(manifest(PARENT)))
    const v1 = generic(encodeManifest(manifest(PARENT), 1))
    const { parentCid, ...rest2 } = v2
    const { parent, ...rest1 } = v1
    const refuse = (o: Record<string, unknown>, re: RegExp) => expect(code(() => decodeManifest(reencode(o)))).toMatch(re)
    refuse({ ...rest2, parent }, /CKPT_BAD_MANIFEST.*unknown field "?parent/)
    refuse({ ...v2, parent }, /CKPT_BAD_MANIFEST.*unknown field "?parent/)
    refuse({ ...rest1, parentCid }, /CKPT_BAD_MANIFEST.*unknown field "?parentCid/)
    refuse({ ...rest2, parentCid: parent }, /CKPT_BAD_MANIFEST.*parentCid is not a byte string \(a CID\)/)
    refuse({ ...rest1, parent: parentCid }, /CKPT_BAD_MANIFEST.*parent is not a CID \(bytes\)/)
    refuse({ ...rest2, parentCid: (parentCid as Uint8Array).subarray(0, 35) }, /CKPT_BAD_MANIFEST.*parentCid is not the 36 bytes/)
    refuse({ ...rest2, parentCid: Uint8Array.of(0, ...(parentCid as Uint8Array)) }, /CKPT_BAD_MANIFEST.*parentCid is not the 36 bytes/)
    refuse({ ...rest2, parentCid: cid(0x55, 1) }, /CKPT_BAD_MANIFEST.*parentCid is not the 36 bytes/)
    refuse({ ...rest2, parentCid: 'bafy' }, /CKPT_BAD_MANIFEST.*parentCid is not a byte string/)
    refuse(rest2, /CKPT_BAD_MANIFEST.*lacks the field parentCid/)
    refuse({ ...v2, v: 3 }, /CKPT_VERSION.*version 3/)
    refuse({ ...v2, v: 0 }, /CKPT_VERSION/)
    expect(decodeManifest(reencode({ ...rest2, parentCid: null })).parent).toBeNull()
  })

  it('encodeManifest writes only versions 1 and 2, and refuses an invalid parent in either', () => {
    expect(code(() => encodeManifest(manifest(PARENT), 3 as never))).toMatch(/CKPT_BAD_ARGUMENT/)
    for (const v of [1, 2] as const) expect(code(() => encodeManifest(manifest(cid(0x55, 1)), v))).toMatch(/CKPT_BAD_ARGUMENT.*parent/)
  })
})
