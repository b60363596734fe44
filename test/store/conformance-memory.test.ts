/** The conformance suites (test/store/conformance.ts) against the memory backend: MemoryPackIO + MemoryKV. */
import { describe, expect, it } from 'vitest'
import { blake3 } from '../../codecs/blake3.js'
import { cidBytes, RAW } from '../../codecs/cid.js'
import { AT_REST } from '../../codecs/compress.js'
import { memoryBackend } from '../../store/backend.js'
import type { Backend } from '../../store/interface.js'
import { MemoryKV } from '../../store/memory-kv.js'
import { MemoryPackIO } from '../../store/pack-io.js'
import { Repository } from '../../store/repository.js'
import { runKvConformance, runPackIoConformance, runRepositoryConformance } from './conformance.js'

runRepositoryConformance('memory', () => ({
  backend: memoryBackend(),
  newDir: () => 'memory:x',
  async tamper(repo, pack, offset) {
    // no file to edit: reach into the memory pack (test-only access to a private field)
    const packs = (repo.blocks.io as unknown as { packs: Map<number, { buf: Buffer }> }).packs
    packs.get(pack)!.buf[offset]! ^= 0x5a
    return repo
  },
}))
runKvConformance('MemoryKV', async () => new MemoryKV())
runPackIoConformance('MemoryPackIO', () => ({ io: new MemoryPackIO() }))

describe('an injected backend', () => {
  it('Repository.open stores through the PackIO and KV the backend makes', async () => {
    const made: { packs: string[]; index: string[] } = { packs: [], index: [] }
    let appended = 0
    class CountingPackIO extends MemoryPackIO {
      override append(packNo: number, bytes: Uint8Array): void {
        appended += bytes.length
        super.append(packNo, bytes)
      }
    }
    const backend: Backend = {
      name: 'counting',
      durable: false,
      locks: false,
      packs: (dir) => (made.packs.push(dir), new CountingPackIO()),
      index: async (dir) => (made.index.push(dir), new MemoryKV()),
    }
    const repo = await Repository.open('label', { backend })
    try {
      expect(made).toEqual({ packs: ['label'], index: ['label'] })
      expect(repo.memory).toBe(true)
      const raw = Buffer.from('a block through an injected backend')
      const cid = cidBytes(RAW, blake3(raw))
      expect(repo.blocks.put(cid, AT_REST.identity, raw, raw.length)).toBe(true)
      await repo.commit([])
      expect(appended).toBeGreaterThan(raw.length)
      expect(Buffer.from(repo.blocks.get(cid)).equals(raw)).toBe(true)
    } finally {
      await repo.close()
    }
  })
})
