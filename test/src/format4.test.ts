/**
 * Formats 3 and 4 (SPEC.md §7.4): node deltas may be in form 2 (3), chunks may be chunk deltas (4). A
 * writer upgrades an older store's marker before it writes anything (a reader leaves it as it is), so
 * a build that reads only form-1 node deltas, or no chunk deltas, refuses the store at open instead of
 * taking them for damage; a newer format is refused.
 */
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { openStore } from '../../src/index.js'
import { removeTmpDirs, tmpDir } from '../helpers/tmp.js'

afterAll(removeTmpDirs)

const marker = (dir: string) => JSON.parse(fs.readFileSync(path.join(dir, 'CKPT'), 'utf8')) as { format: string; version: number }

describe('store format 4', () => {
  it('a new store is format 4; a format-2 or format-3 store is upgraded by a writer, not by a reader, and reads the same', async () => {
    const dir = path.join(tmpDir('ckpt-format4-'), 'store')
    let store = await openStore(dir)
    const tl = await store.timeline('vm', { regions: { ram: { size: 8 * 4096, chunkSize: 4096 } } })
    const ram = Buffer.alloc(8 * 4096, 7)
    const a = await tl.checkpoint({ vtime: 1, regions: { ram: { data: ram } } })
    await store.close()
    expect(marker(dir)).toEqual({ format: 'ckpt-store', version: 4 })

    // as a format-2 build left it (nothing stored differs)
    const out = Buffer.alloc(ram.length)
    for (const from of [2, 3]) {
      fs.writeFileSync(path.join(dir, 'CKPT'), JSON.stringify({ format: 'ckpt-store', version: from }))
      store = await openStore(dir, { mustExist: true, readOnly: true })
      await store.restore(a.cid, 'ram', out)
      expect(out.equals(ram)).toBe(true)
      await store.close()
      expect(marker(dir).version).toBe(from)

      store = await openStore(dir, { mustExist: true })
      expect(store.openNotes.map((n) => n.kind)).toContain('upgraded')
      const note = store.openNotes.find((n) => n.kind === 'upgraded')!.message
      expect(note).toMatch(new RegExp(`from format ${from} to 4`))
      expect(note).toMatch(/chunks may be stored as deltas/)
      if (from === 2) expect(note).toMatch(/form 2/)
      await store.restore(a.cid, 'ram', out)
      expect(out.equals(ram)).toBe(true)
      await store.close()
      expect(marker(dir).version).toBe(4)
    }
  })

  it('a store of a newer format is refused with CKPT_VERSION, and left as it is', async () => {
    const dir = path.join(tmpDir('ckpt-format5-'), 'store')
    await (await openStore(dir)).close()
    fs.writeFileSync(path.join(dir, 'CKPT'), JSON.stringify({ format: 'ckpt-store', version: 5 }))
    const err = await openStore(dir, { mustExist: true }).then(
      async (s) => {
        await s.close()
        return undefined
      },
      (e: unknown) => e as { code?: string },
    )
    expect(err?.code).toBe('CKPT_VERSION')
    expect(marker(dir).version).toBe(5)
  })
})
