/**
 * gc reclaims dead space in every pack, the open one (unsealed, still appended to) included: a store
 * smaller than one pack shrinks after thinning like any other (issue 14). The user's scenario: 120
 * checkpoints of a 4 MiB image, 20 dirty pages each, thinned by 10ms@200ms,100ms@2s to 31, then gc:
 * the store's bytes on disk shrink and every remaining checkpoint restores byte-identical. A gc that
 * reclaims nothing writes nothing (no node stored anew, no snapshot). And kill -9 at every I/O event
 * of a gc that rewrites the open pack, storing nodes and chunk deltas anew, loses nothing.
 */
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { blake3 } from '@noble/hashes/blake3.js'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openStore, verifyStore, type CkptStore } from '../../src/index.js'
import { makeRng } from '../helpers/rng.js'
import { dirBytes, removeTmpDirs, tmpDir } from '../helpers/tmp.js'

afterAll(removeTmpDirs)

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), '../helpers/crash-gc-inject.mjs')
const PAGE = 4096
const MS = 1_000_000n

const hex = (b: Uint8Array) => Buffer.from(blake3(b)).toString('hex')

/**
 * `steps` checkpoints 10 ms apart of an image of `pages` random pages, `dirty` pages rewritten each
 * step (dirty hints); returns each CID's image digest. `edits`: a dirty page gets 16 new bytes instead
 * of new content, and its previous bytes go along (it is stored as a chunk delta).
 */
async function record(dir: string, pages: number, steps: number, dirty: number, seed: number, edits = false): Promise<Map<string, string>> {
  const rng = makeRng(seed)
  const regions = { ram: { size: pages * PAGE, chunkSize: PAGE } }
  const store = await openStore(dir)
  const digests = new Map<string, string>()
  try {
    const tl = await store.timeline('t', { regions })
    const ram = rng.bytes(pages * PAGE)
    for (let k = 0; k < steps; k++) {
      const hints = k === 0 ? undefined : [...new Set(Array.from({ length: dirty }, () => rng.int(0, pages)))].sort((a, b) => a - b)
      const previous = edits && hints ? new Uint8Array(hints.length * PAGE) : undefined
      hints?.forEach((p, i) => {
        previous?.set(ram.subarray(p * PAGE, (p + 1) * PAGE), i * PAGE)
        if (edits) ram.set(rng.bytes(16), p * PAGE + rng.int(0, PAGE - 16))
        else ram.set(rng.bytes(PAGE), p * PAGE)
      })
      const ck = await tl.checkpoint({ vtime: BigInt(k) * 10n * MS, regions: { ram: { data: ram, dirty: hints, previous } } })
      digests.set(ck.cid.toString(), hex(ram))
    }
  } finally {
    await store.close()
  }
  return digests
}

async function catalogued(store: CkptStore): Promise<string[]> {
  const out: string[] = []
  for await (const e of store.log('t')) out.push(e.cid.toString())
  return out
}

async function expectRestores(store: CkptStore, cids: string[], digests: Map<string, string>, size: number): Promise<void> {
  const out = new Uint8Array(size)
  for (const c of cids) {
    await store.restore(c, 'ram', out)
    expect(hex(out), c).toBe(digests.get(c))
  }
}

async function expectClean(store: CkptStore): Promise<void> {
  const it = verifyStore(store, { deep: true })
  let r = await it.next()
  for (; !r.done; r = await it.next()) expect(r.value.severity, `${r.value.kind}: ${r.value.message}`).toBe('info')
  expect(r.value.errors + r.value.warnings).toBe(0)
}

describe('gc and the open pack', () => {
  let thinned: string
  let digests: Map<string, string>
  let kept: string[]

  beforeAll(async () => {
    thinned = path.join(tmpDir('ckpt-gc-open-'), 'store')
    digests = await record(thinned, 1024, 120, 20, 14)
    const store = await openStore(thinned, { mustExist: true })
    try {
      const r = await store.thin('t', '10ms@200ms,100ms@2s')
      expect(r.kept.length).toBe(31)
      kept = await catalogued(store)
    } finally {
      await store.close()
    }
  }, 120_000)

  it('a store smaller than one pack shrinks after thinning; every checkpoint left restores byte-identical', async () => {
    const dir = path.join(tmpDir('ckpt-gc-open-'), 'store')
    fs.cpSync(thinned, dir, { recursive: true })
    const before = dirBytes(dir)
    const packsBefore = dirBytes(path.join(dir, 'packs'))
    const store = await openStore(dir, { mustExist: true, dedupFilter: false })
    try {
      const s = await store.gc()
      // one pack, the open one: rewritten
      expect(s.packsBefore).toBe(1)
      expect(s.deadBytes).toBeGreaterThan(0)
      expect(s.packsRewritten).toBe(1)
      expect(s.deadBytesKept).toBe(0)
      expect(s.reclaimedBytes).toBeGreaterThan(0)
      expect(s.bytesAfter).toBe(s.bytesBefore - s.reclaimedBytes)
      // the nodes stored anew and the snapshot cost less than what went
      expect(s.reclaimedBytes).toBeGreaterThan(0.5 * s.deadBytes - s.reencodedBytes)
      expect(await catalogued(store)).toEqual(kept)
      await expectRestores(store, kept, digests, 1024 * PAGE)
      await expectClean(store)
      // a second gc finds nothing to reclaim and writes nothing
      const again = await store.gc()
      expect(again.packsRewritten + again.packsDeleted).toBe(0)
      expect(again.nodesReencoded).toBe(0)
      expect(again.bytesAfter).toBe(again.bytesBefore)
    } finally {
      await store.close()
    }
    expect(dirBytes(path.join(dir, 'packs'))).toBeLessThan(packsBefore)
    // the store on disk (packs, index and all) shrank
    expect(dirBytes(dir)).toBeLessThan(before)
    const store2 = await openStore(dir, { mustExist: true })
    try {
      await expectRestores(store2, kept, digests, 1024 * PAGE)
    } finally {
      await store2.close()
    }
  }, 120_000)

  it('a gc that reclaims nothing does not make the store grow (no node stored anew, no snapshot)', async () => {
    const dir = path.join(tmpDir('ckpt-gc-open-'), 'store')
    fs.cpSync(thinned, dir, { recursive: true })
    const packsBefore = dirBytes(path.join(dir, 'packs'))
    const store = await openStore(dir, { mustExist: true })
    try {
      // no pack is due at threshold 0, and any dead share is allowed
      const s = await store.gc({ threshold: 0, maxUnused: 1 })
      expect(s.packsRewritten + s.packsDeleted).toBe(0)
      expect(s.nodesReencoded).toBe(0)
      expect(s.recordBytes).toBe(0)
      expect(s.bytesAfter).toBe(s.bytesBefore)
      expect(s.reclaimedBytes).toBe(0)
      await expectRestores(store, kept, digests, 1024 * PAGE)
      await expectClean(store)
    } finally {
      await store.close()
    }
    expect(dirBytes(path.join(dir, 'packs'))).toBe(packsBefore)
  }, 120_000)
})

describe('kill -9 at every I/O event of a gc that rewrites the open pack and stores nodes and chunk deltas anew', () => {
  let thinned: string
  let digests: Map<string, string>
  let kept: string[]
  let events = 0

  beforeAll(async () => {
    thinned = path.join(tmpDir('ckpt-gc-inject-'), 'store')
    // pages edited in place, with their previous bytes: chunk deltas, which the gc stores anew too
    digests = await record(thinned, 256, 60, 12, 41, true)
    const store = await openStore(thinned, { mustExist: true })
    try {
      await store.thin('t', '10ms@100ms,100ms@1s')
      kept = await catalogued(store)
    } finally {
      await store.close()
    }
    // a gc left to finish counts the events a kill can fall on
    const dir = path.join(tmpDir('ckpt-gc-inject-'), 'store')
    fs.cpSync(thinned, dir, { recursive: true })
    const r = spawnSync(process.execPath, [CHILD, dir, '0'], { encoding: 'utf8' })
    expect(r.status, r.stderr).toBe(0)
    events = Number(/EVENTS (\d+)/.exec(r.stdout)![1])
    const s = JSON.parse(r.stdout.split('\n')[1]!) as { packsRewritten: number; packsBefore: number; nodesReencoded: number; chunksReencoded: number }
    // the scenario under test: one pack, the open one, rewritten, with nodes and chunk deltas stored anew
    expect(s.packsBefore).toBe(1)
    expect(s.packsRewritten).toBe(1)
    expect(s.nodesReencoded).toBeGreaterThan(0)
    expect(s.chunksReencoded).toBeGreaterThan(0)
    expect(events).toBeGreaterThan(5)
  }, 120_000)

  it('every kill leaves a store that opens clean, restores every checkpoint, and gc again shrinks it', async () => {
    const packsBefore = dirBytes(path.join(thinned, 'packs'))
    for (let n = 1; n <= events; n++) {
      const dir = path.join(tmpDir('ckpt-gc-inject-'), 'store')
      fs.cpSync(thinned, dir, { recursive: true })
      const r = spawnSync(process.execPath, [CHILD, dir, String(n)], { encoding: 'utf8' })
      expect(r.signal, `event ${n}: ${r.stderr}`).toBe('SIGKILL')
      const store = await openStore(dir, { mustExist: true })
      try {
        expect(await catalogued(store), `event ${n}`).toEqual(kept)
        await expectRestores(store, kept, digests, 256 * PAGE)
        await expectClean(store)
        // gc again finishes the job
        await store.gc()
      } finally {
        await store.close()
      }
      expect(dirBytes(path.join(dir, 'packs')), `event ${n}`).toBeLessThan(packsBefore)
      fs.rmSync(path.dirname(dir), { recursive: true, force: true })
    }
  }, 600_000)
})
