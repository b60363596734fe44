/**
 * SeenSet: an exact set of CIDs with bounded memory. Past the in-memory table's half it spills to a
 * temporary LevelDB (behind a Bloom filter); answers stay exact either way, and close() removes the
 * temporary directory.
 */
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { cidBytes, DAG_CBOR, RAW } from '../../codecs/cid.js'
import { SeenSet } from '../../store/seen-set.js'
import { makeRng } from '../helpers/rng.js'
import { removeTmpDirs, tmpDir } from '../helpers/tmp.js'

afterAll(removeTmpDirs)

describe('SeenSet', () => {
  for (const where of ['disk', 'memory'] as const) {
    it(`is exact across both tiers (${where}), and close() leaves nothing behind`, async () => {
      const dir = where === 'disk' ? path.join(tmpDir('ckpt-seen-'), 'set') : undefined
      // expecting few entries: a 4,096-slot table, so most of these 20,000 spill to the second tier
      const set = await SeenSet.create(dir, 100)
      const rng = makeRng(1)
      const added = Array.from({ length: 20_000 }, () => cidBytes(rng.chance(0.5) ? RAW : DAG_CBOR, rng.bytes(32)))
      const absent = Array.from({ length: 20_000 }, () => cidBytes(RAW, rng.bytes(32)))
      for (let i = 0; i < added.length; i++) {
        expect(set.has(added[i]!)).toBe(false)
        set.add(added[i]!)
        if (i % 1000 === 0) await set.flush()
      }
      await set.flush(true)
      expect(set.size).toBe(20_000)
      for (const c of added) expect(set.has(c)).toBe(true)
      for (const c of absent) expect(set.has(c)).toBe(false)
      // the same digest under the other codec is another block
      const other = new Uint8Array(added[0]!)
      other[1] = other[1] === RAW ? DAG_CBOR : RAW
      expect(set.has(other)).toBe(false)
      if (dir) expect(fs.existsSync(dir)).toBe(true)
      await set.close()
      if (dir) expect(fs.existsSync(dir)).toBe(false)
    })
  }
})
