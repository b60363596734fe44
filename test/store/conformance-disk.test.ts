/** The conformance suites (test/store/conformance.ts) against the disk backend: pack files + LevelDB; plus what only a disk has. */
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import type { CidBytes } from '../../codecs/cid.js'
import { identity } from '../../codecs/compress.js'
import { diskBackend } from '../../store/backend.js'
import { packKey } from '../../store/keys.js'
import { LevelKV } from '../../store/level-kv.js'
import { FilePackIO, packFileName } from '../../store/pack-io.js'
import { Repository, type RepositoryOptions } from '../../store/repository.js'
import { makeRng } from '../helpers/rng.js'
import { bytesEqual, caught, removeTmpDirs, tmpDir, tmpStorePath } from '../helpers/tmp.js'
import { putBlock, runKvConformance, runPackIoConformance, runRepositoryConformance, type Subject } from './conformance.js'

afterAll(removeTmpDirs)

/** the disk backend, opened with `options` each time */
function disk(options: RepositoryOptions = {}): Subject {
  return {
    backend: diskBackend(),
    newDir: () => tmpStorePath('ckpt-conf-'),
    options,
    async tamper(repo, pack, offset) {
      await repo.close()
      const file = path.join(repo.dir, 'packs', packFileName(pack))
      const fd = fs.openSync(file, 'r+')
      const b = Buffer.alloc(1)
      fs.readSync(fd, b, 0, 1, offset)
      b[0]! ^= 0x5a
      fs.writeSync(fd, b, 0, 1, offset)
      fs.closeSync(fd)
      return Repository.open(repo.dir, { mustExist: true, ...options })
    },
  }
}

runRepositoryConformance('LevelDB + pack files', () => disk())
// as short-lived processes open it (the CLI, gc): no dedup filter, every "stored already?" asks the index
runRepositoryConformance('LevelDB + pack files, opened without the dedup filter', () => disk({ dedupFilter: false }))
runKvConformance('LevelKV', () => LevelKV.open(path.join(tmpDir('ckpt-kv-'), 'db')))
runPackIoConformance('FilePackIO', () => {
  const dir = path.join(tmpDir('ckpt-packio-'), 'packs')
  return { io: new FilePackIO(dir), reopen: () => new FilePackIO(dir) }
})

describe('disk backend specifics', () => {
  it('blocks committed across many packs survive reopen; torn tails past the commit are cut', async () => {
    const dir = tmpStorePath('ckpt-conf-')
    let repo = await Repository.open(dir, { packTargetSize: 32 * 1024 })
    const rng = makeRng(41)
    const all: { cid: CidBytes; raw: Uint8Array }[] = []
    for (let round = 0; round < 12; round++) {
      for (let i = 0; i < 5; i++) {
        const raw = rng.bytes(rng.int(1000, 9000))
        all.push({ cid: putBlock(repo, identity, raw).cid, raw })
      }
      await repo.commit([])
    }
    const packs = fs.readdirSync(path.join(dir, 'packs')).filter((f) => f.endsWith('.pack'))
    expect(packs.length).toBeGreaterThan(2)
    const committed = new Map([...repo.blocks.packRecords()].map(([n, r]) => [n, r.committedLength]))
    // stage more (past the 1 MiB flush threshold, so the bytes reach the file), never commit, close
    const lostCids = Array.from({ length: 3 }, () => putBlock(repo, identity, rng.bytes(600_000)).cid)
    const grown = packs.length < fs.readdirSync(path.join(dir, 'packs')).length || [...committed].some(([n, len]) => repo.blocks.io.size(n) > len)
    expect(grown || repo.blocks.io.list().some((n) => !committed.has(n))).toBe(true)
    await repo.close()
    repo = await Repository.open(dir)
    try {
      for (const c of lostCids) expect(repo.blocks.has(c)).toBe(false)
      // torn tails cut back to the committed lengths, and a pack nobody committed (a leftover: at most
      // the commit a crash interrupted) deleted, before anything is committed again
      expect(repo.blocks.io.list().sort()).toEqual([...committed.keys()].sort())
      expect(repo.leftovers).toEqual([])
      for (const [n, len] of committed) expect(fs.statSync(path.join(dir, 'packs', packFileName(n))).size).toBe(len)
      for (const b of all) expect(bytesEqual(repo.blocks.get(b.cid), b.raw)).toBe(true)
      // and writing continues
      const more = rng.bytes(7000)
      const m = putBlock(repo, identity, more)
      await repo.commit([])
      expect(bytesEqual(repo.blocks.get(m.cid), more)).toBe(true)
      expect(await repo.blocks.count()).toBe(all.length + 1)
    } finally {
      await repo.close()
    }
  })

  // an open that fails after LevelDB was opened must release it (and its lock)
  it('an open that fails after the index was opened leaves the store openable', async () => {
    const dir = tmpStorePath('ckpt-conf-')
    const repo = await Repository.open(dir)
    // a pack record of 3 bytes instead of 13
    await repo.commitWith([{ type: 'put', key: packKey(9), value: Uint8Array.of(1, 2, 3) }])
    await repo.close()
    const first = await caught(() => Repository.open(dir))
    expect(first.code).toBe('CKPT_BAD_INDEX')
    const second = await caught(() => Repository.open(dir))
    expect(second.code).toBe('CKPT_BAD_INDEX')
  })

  it('mustExist on a missing store fails with CKPT_BAD_STORE and creates nothing', async () => {
    const dir = tmpStorePath('ckpt-conf-')
    expect((await caught(() => Repository.open(dir, { mustExist: true }))).code).toBe('CKPT_BAD_STORE')
    expect(fs.existsSync(dir)).toBe(false)
  })
})

