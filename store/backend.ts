/**
 * The two backends a store is made of today (the Backend of store/interface.ts), given to
 * Repository.open / openStore as `backend`:
 *
 *   diskBackend()    pack files under <dir>/packs, a LevelDB index under <dir>/index: durable,
 *                    locked (LevelDB's LOCK), the default
 *   memoryBackend()  MemoryPackIO and MemoryKV: nothing on disk, every open a new empty store (tests)
 */
import path from 'node:path'
import type { Backend, PackIO } from './interface.js'
import type { KV } from './kv.js'
import { LevelKV } from './level-kv.js'
import { MemoryKV } from './memory-kv.js'
import { FilePackIO, MemoryPackIO } from './pack-io.js'

const disk: Backend = Object.freeze({
  name: 'disk',
  durable: true,
  locks: true,
  packs: (dir: string, opts: { readOnly: boolean }): PackIO => new FilePackIO(path.join(dir, 'packs'), opts.readOnly),
  index: (dir: string, opts: { create: boolean }): Promise<KV> => LevelKV.open(path.join(dir, 'index'), opts),
})

const memory: Backend = Object.freeze({
  name: 'memory',
  durable: false,
  locks: false,
  packs: (): PackIO => new MemoryPackIO(),
  index: async (): Promise<KV> => new MemoryKV(),
})

/** Pack files and a LevelDB index in the store's directory (the default). */
export function diskBackend(): Backend {
  return disk
}

/** Everything in memory, for tests: `dir` is only a label, and every open is a new, empty store. */
export function memoryBackend(): Backend {
  return memory
}
