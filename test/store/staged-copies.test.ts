/**
 * StagedCopies, gc's copies staged in the open pack: each copied CID found (wherever in a buffer it
 * lies), a later copy replacing an earlier one, and the commit's index operations byte for byte what
 * blockKey() and encodeLocation() make.
 */
import { describe, expect, it } from 'vitest'
import { cidBytes, DAG_CBOR, RAW } from '../../codecs/cid.js'
import { blockKey } from '../../store/keys.js'
import { encodeLocation, type BlockLocation } from '../../store/location.js'
import { StagedCopies } from '../../store/staged-copies.js'
import { makeRng } from '../helpers/rng.js'

describe('StagedCopies', () => {
  it('finds every copy, keeps the last of a CID copied twice, and makes the index operations encodeLocation would', () => {
    const rng = makeRng(7)
    const copies = new StagedCopies()
    const cids = Array.from({ length: 5000 }, () => cidBytes(rng.chance(0.5) ? RAW : DAG_CBOR, rng.bytes(32)))
    const absent = Array.from({ length: 5000 }, () => cidBytes(RAW, rng.bytes(32)))
    const want = new Map<number, BlockLocation>()
    for (let i = 0; i < cids.length; i++) {
      // the CID inside a larger buffer, as gc finds it in a pack's entry
      const buf = new Uint8Array(100)
      buf.set(cids[i]!, 12)
      // offsets past 2^32 too: the index keeps 8 bytes of them
      const loc = { pack: 1 + (i % 3), offset: i * 1e6 + (i % 2 ? 2 ** 33 : 0), storedLength: i, rawLength: i + 1, codec: i % 4, depth: i % 7 }
      copies.add(buf, 12, loc)
      want.set(i, loc)
    }
    // copied again: the later copy is the one the index moves to
    const again = { pack: 9, offset: 4096, storedLength: 10, rawLength: 20, codec: 1, depth: 0 }
    copies.add(cids[17]!, 0, again)
    want.set(17, again)
    expect(copies.count).toBe(cids.length)
    for (let i = 0; i < cids.length; i++) {
      expect(copies.has(cids[i]!)).toBe(true)
      expect(copies.get(cids[i]!)).toEqual(want.get(i))
    }
    for (const c of absent) expect(copies.has(c)).toBe(false)
    const ops = copies.ops()
    expect(ops.length).toBe(cids.length)
    for (let i = 0; i < cids.length; i++) {
      const op = ops[i]!
      expect(op.type).toBe('put')
      expect(Buffer.from(op.key).equals(Buffer.from(blockKey(cids[i]!)))).toBe(true)
      expect(Buffer.from((op as { value: Uint8Array }).value).equals(Buffer.from(encodeLocation(want.get(i)!)))).toBe(true)
    }
    copies.clear()
    expect(copies.count).toBe(0)
    expect(copies.has(cids[0]!)).toBe(false)
    expect(copies.get(cids[0]!)).toBeUndefined()
    copies.add(cids[0]!, 0, again)
    expect(copies.get(cids[0]!)).toEqual(again)
    expect(copies.has(cids[1]!)).toBe(false)
  })
})
