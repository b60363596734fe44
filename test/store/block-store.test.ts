/**
 * BlockStore specifics beyond the shared conformance suite: node-delta chains at rest (read back as
 * whole nodes, verified as final nodes so a damaged base cannot pass), index entries that point at the
 * wrong entry, and deltas whose base is missing.
 */
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { blake3, initBlake3 } from '../../codecs/blake3.js'
import { cidBytes, cidToString, DAG_CBOR, RAW, type CidBytes } from '../../codecs/cid.js'
import { AT_REST } from '../../codecs/compress.js'
import { encodeNodeDelta } from '../../codecs/node-delta.js'
import { encodeNode, type NodeEntries } from '../../codecs/tree-node.js'
import { ENTRY_HEADER_SIZE } from '../../codecs/pack-format.js'
import { packFileName } from '../../store/pack-io.js'
import { Repository } from '../../store/repository.js'
import { memoryBackend } from '../../store/backend.js'
import { makeRng, type Rng } from '../helpers/rng.js'
import { flipByte } from '../helpers/damage.js'
import { readableAcrossReopen } from '../helpers/reopen.js'
import { bytesEqual, caught, removeTmpDirs, tmpStorePath } from '../helpers/tmp.js'

afterAll(removeTmpDirs)
await initBlake3()

function randomNode(rng: Rng, count: number): NodeEntries {
  const codecs = new Uint8Array(count)
  const digests = new Uint8Array(count * 32)
  for (let s = 0; s < count; s++) {
    if (rng.chance(0.2)) continue
    codecs[s] = RAW
    digests.set(rng.bytes(32), s * 32)
  }
  return { count, codecs, digests }
}

function withSlot(rng: Rng, n: NodeEntries, slot: number): NodeEntries {
  const out = { count: n.count, codecs: n.codecs.slice(), digests: n.digests.slice() }
  out.codecs[slot] = RAW
  out.digests.set(rng.bytes(32), slot * 32)
  return out
}

const nodeCid = (n: NodeEntries): CidBytes => cidBytes(DAG_CBOR, blake3(encodeNode(n)))

/** A whole base node and a chain of `len` deltas on it; returns the nodes and their CIDs. */
function putChain(repo: Repository, rng: Rng, len: number): { nodes: NodeEntries[]; cids: CidBytes[] } {
  const nodes = [randomNode(rng, 256)]
  for (let k = 1; k <= len; k++) nodes.push(withSlot(rng, nodes[k - 1]!, rng.int(0, 256)))
  const cids = nodes.map(nodeCid)
  const whole = encodeNode(nodes[0]!)
  expect(repo.blocks.put(cids[0]!, AT_REST.identity, whole, whole.length)).toBe(true)
  for (let k = 1; k <= len; k++) {
    const delta = encodeNodeDelta(cids[k - 1]!, nodes[k - 1]!, nodes[k]!, 1 << 20)!
    expect(delta.length).toBeLessThan(200)
    const rawLength = encodeNode(nodes[k]!).length
    expect(repo.blocks.put(cids[k]!, AT_REST.nodeDelta, delta, rawLength, { depth: k })).toBe(true)
  }
  return { nodes, cids }
}

describe('BlockStore: node deltas at rest', () => {
  it('a chain of deltas reads back as the whole nodes, before and after commit and reopen', async () => {
    await readableAcrossReopen(
      (repo) => putChain(repo, makeRng(1), 20),
      (r, { nodes, cids }) => {
        for (let k = 0; k < nodes.length; k++) {
          expect(bytesEqual(r.blocks.get(cids[k]!), encodeNode(nodes[k]!)), `node ${k}`).toBe(true)
          const e = r.blocks.getNode(cids[k]!)
          expect(e.count).toBe(256)
          expect(bytesEqual(e.digests, nodes[k]!.digests)).toBe(true)
          expect(r.blocks.locate(cids[k]!)?.depth).toBe(k)
        }
      },
      (r, { nodes, cids }) => expect(bytesEqual(r.blocks.get(cids[20]!), encodeNode(nodes[20]!))).toBe(true),
    )
  })

  it('a damaged base: the base and every node built on it fail with CKPT_HASH_MISMATCH, never wrong bytes', async () => {
    const dir = tmpStorePath('ckpt-bs-')
    let repo = await Repository.open(dir)
    const { cids } = putChain(repo, makeRng(2), 3)
    await repo.commit([])
    const loc = repo.blocks.locate(cids[0]!)!
    await repo.close()
    // flip a byte inside a link digest of the base node (an identity payload)
    flipByte(path.join(dir, 'packs', packFileName(loc.pack)), loc.offset + ENTRY_HEADER_SIZE + Math.floor(loc.storedLength / 2))
    repo = await Repository.open(dir, { mustExist: true })
    try {
      for (const k of [3, 1, 0, 2]) {
        const err = await caught(() => repo.blocks.get(cids[k]!))
        expect(err.code, `node ${k}`).toBe('CKPT_HASH_MISMATCH')
        expect(err.details?.cid).toBe(cidToString(cids[k]!))
        const err2 = await caught(() => repo.blocks.getNode(cids[k]!))
        expect(err2.code).toBe('CKPT_HASH_MISMATCH')
      }
    } finally {
      await repo.close()
    }
  })

  it('a delta whose base is not stored -> CKPT_NOT_FOUND naming the base', async () => {
    const repo = await Repository.open('memory:bs', { backend: memoryBackend() })
    try {
      const rng = makeRng(3)
      const base = randomNode(rng, 64)
      const next = withSlot(rng, base, 7)
      const baseCid = nodeCid(base)
      const cid = nodeCid(next)
      const delta = encodeNodeDelta(baseCid, base, next, 1 << 20)!
      repo.blocks.put(cid, AT_REST.nodeDelta, delta, encodeNode(next).length, { depth: 1 })
      await repo.commit([])
      const err = await caught(() => repo.blocks.get(cid))
      expect(err.code).toBe('CKPT_NOT_FOUND')
      expect(err.details?.cid).toBe(cidToString(baseCid))
    } finally {
      await repo.close()
    }
  })
})

describe('BlockStore: index entries', () => {
  it('a location that points at another entry -> CKPT_BAD_INDEX', async () => {
    const repo = await Repository.open('memory:bs2', { backend: memoryBackend() })
    try {
      const rng = makeRng(4)
      const a = rng.bytes(1000)
      const b = rng.bytes(1000)
      const ca = cidBytes(RAW, blake3(a))
      const cb = cidBytes(RAW, blake3(b))
      repo.blocks.put(ca, AT_REST.identity, a, a.length)
      repo.blocks.put(cb, AT_REST.identity, b, b.length)
      await repo.commit([])
      const err = await caught(() => repo.blocks.readAt(ca, repo.blocks.locate(cb)!))
      expect(err.code).toBe('CKPT_BAD_INDEX')
      expect(err.details?.cid).toBe(cidToString(ca))
      expect(bytesEqual(repo.blocks.readAt(ca, repo.blocks.locate(ca)!), a)).toBe(true)
      // locateMany: present, missing and staged in one call
      const c = rng.bytes(10)
      const cc = cidBytes(RAW, blake3(c))
      const missing = cidBytes(RAW, blake3(Uint8Array.of(1)))
      repo.blocks.put(cc, AT_REST.identity, c, c.length)
      const locs = await repo.blocks.locateMany([ca, missing, cc, cb])
      expect(locs.map((l) => l?.rawLength)).toEqual([1000, undefined, 10, 1000])
    } finally {
      await repo.close()
    }
  })
})

describe('pack files: a new one is durable by name', () => {
  it('creating a pack fsyncs the packs directory once; reopening an existing one does not', async () => {
    const { FilePackIO } = await import('../../store/pack-io.js')
    const { openStore } = await import('../../src/index.js')
    const synced: string[] = []
    const fsyncSync = fs.fsyncSync
    fs.fsyncSync = (fd: number) => {
      const p = fs.readlinkSync(`/proc/self/fd/${fd}`)
      if (fs.statSync(p).isDirectory()) synced.push(p)
      return fsyncSync(fd)
    }
    try {
      const dir = path.join(tmpStorePath(), 'packs')
      const io = new FilePackIO(dir)
      io.openForAppend(1, 0)
      expect(synced).toEqual([fs.realpathSync(dir)])
      io.append(1, new Uint8Array(100))
      io.openForAppend(1, 100)
      expect(synced.length).toBe(1)
      io.openForAppend(2, 0)
      expect(synced).toEqual([fs.realpathSync(dir), fs.realpathSync(dir)])
      io.close()
      // through the library: a store's first checkpoint creates its first pack, and syncs its directory
      synced.length = 0
      const storeDir = tmpStorePath()
      const store = await openStore(storeDir)
      const tl = await store.timeline('t', { regions: { ram: { size: 4096, chunkSize: 4096 } } })
      await tl.checkpoint({ vtime: 1n, regions: { ram: { data: Buffer.alloc(4096, 7) } } })
      await store.close()
      expect(synced).toContain(fs.realpathSync(path.join(storeDir, 'packs')))
    } finally {
      fs.fsyncSync = fsyncSync
    }
  })
})
