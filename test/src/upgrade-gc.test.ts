/**
 * A format-1 store (the clean-v1 golden fixture) upgraded by a writer, then collected: gc copies a
 * live manifest out of a version-1 pack, where entries have no kinds, into a version-2 pack. There
 * it must be marked as a manifest (kind 1), or an index rebuilt from the packs alone would no longer
 * list it among the manifests ('M') once the old pack is gone (SPEC.md §5.1, §7.2).
 */
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'
import { cidToString } from '../../codecs/cid.js'
import { ENTRY_KIND } from '../../codecs/pack-format.js'
import { openStore } from '../../src/index.js'
import { scanPackFile } from '../../store/pack-scan.js'
import { removeTmpDirs, tmpDir } from '../helpers/tmp.js'

afterAll(removeTmpDirs)

const FIXTURE = path.join(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/stores/clean-v1/store')

async function manifestsOf(dir: string): Promise<string[]> {
  const store = await openStore(dir, { mustExist: true })
  try {
    const out: string[] = []
    for await (const cid of store.context().repo.manifests()) out.push(cidToString(cid))
    return out.sort()
  } finally {
    await store.close()
  }
}

describe('gc of an upgraded format-1 store', () => {
  it('marks the manifests it copies out of version-1 packs, so a rebuild from the packs still lists them', async () => {
    const dir = path.join(tmpDir('ckpt-upgrade-gc-'), 'store')
    fs.cpSync(FIXTURE, dir, { recursive: true })
    const before = await manifestsOf(dir) // the first writer upgrades the store to format 2
    expect(before.length).toBe(4)

    // retire the version-1 packs (as repair does with damaged ones): gc then rewrites each, copying
    // what is live, the manifests included
    const store = await openStore(dir, { mustExist: true })
    const { repo } = store.context()
    const v1 = [...repo.blocks.packRecords().keys()].filter((n) => n <= 4)
    expect(v1.length).toBe(4)
    expect(await repo.retirePacks(v1)).toBe(4)
    const gc = await store.gc()
    expect(gc.packsRewritten + gc.packsDeleted).toBeGreaterThanOrEqual(4)
    await store.close()
    const packs = fs.readdirSync(path.join(dir, 'packs')).filter((f) => f.endsWith('.pack'))
    expect(packs.some((f) => Number(f.slice(0, 8)) <= 4)).toBe(false)

    // every manifest is now in a version-2 pack, marked as one
    const marked = new Set<string>()
    for (const f of packs) {
      for (const ev of scanPackFile(path.join(dir, 'packs', f), Number(f.slice(0, 8)), { sealed: false })) {
        if (ev.kind === 'entry' && ev.entry.kind === ENTRY_KIND.manifest) marked.add(cidToString(Uint8Array.prototype.slice.call(ev.entry.cid)))
      }
    }
    expect([...marked].sort()).toEqual(before)

    // the index lost: rebuilt from the packs alone, it lists the same manifests
    fs.rmSync(path.join(dir, 'index'), { recursive: true })
    expect(await manifestsOf(dir)).toEqual(before)
  })
})
