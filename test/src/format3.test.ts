/**
 * Format 3 (SPEC.md §7.4): node deltas may be in form 2. A writer upgrades a format-2 store's marker
 * before it writes anything (a reader leaves it as it is), so a build that reads only form-1 deltas
 * refuses the store at open instead of taking form-2 deltas for damage; a newer format is refused.
 */
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { openStore } from '../../src/index.js'
import { removeTmpDirs, tmpDir } from '../helpers/tmp.js'

afterAll(removeTmpDirs)

const marker = (dir: string) => JSON.parse(fs.readFileSync(path.join(dir, 'CKPT'), 'utf8')) as { format: string; version: number }

describe('store format 3', () => {
  it('a new store is format 3; a format-2 store is upgraded by a writer, not by a reader, and reads the same', async () => {
    const dir = path.join(tmpDir('ckpt-format3-'), 'store')
    let store = await openStore(dir)
    const tl = await store.timeline('vm', { regions: { ram: { size: 8 * 4096, chunkSize: 4096 } } })
    const ram = Buffer.alloc(8 * 4096, 7)
    const a = await tl.checkpoint({ vtime: 1, regions: { ram: { data: ram } } })
    await store.close()
    expect(marker(dir)).toEqual({ format: 'ckpt-store', version: 3 })

    // as a format-2 build left it (nothing stored differs)
    fs.writeFileSync(path.join(dir, 'CKPT'), JSON.stringify({ format: 'ckpt-store', version: 2 }))
    store = await openStore(dir, { mustExist: true, readOnly: true })
    const out = Buffer.alloc(ram.length)
    await store.restore(a.cid, 'ram', out)
    expect(out.equals(ram)).toBe(true)
    await store.close()
    expect(marker(dir).version).toBe(2)

    store = await openStore(dir, { mustExist: true })
    expect(store.openNotes.map((n) => n.kind)).toContain('upgraded')
    expect(store.openNotes.find((n) => n.kind === 'upgraded')!.message).toMatch(/from format 2 to 3/)
    await store.restore(a.cid, 'ram', out)
    expect(out.equals(ram)).toBe(true)
    await store.close()
    expect(marker(dir).version).toBe(3)
  })

  it('a store of a newer format is refused with CKPT_VERSION, and left as it is', async () => {
    const dir = path.join(tmpDir('ckpt-format4-'), 'store')
    await (await openStore(dir)).close()
    fs.writeFileSync(path.join(dir, 'CKPT'), JSON.stringify({ format: 'ckpt-store', version: 4 }))
    await expect(openStore(dir, { mustExist: true })).rejects.toMatchObject({ code: 'CKPT_VERSION' })
    expect(marker(dir).version).toBe(4)
  })
})
