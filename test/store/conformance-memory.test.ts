/** The conformance suites (test/store/conformance.ts) against the memory backend: MemoryPackIO + MemoryKV. */
import { memoryBackend } from '../../store/backend.js'
import { MemoryKV } from '../../store/memory-kv.js'
import { MemoryPackIO } from '../../store/pack-io.js'
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
