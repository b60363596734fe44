/**
 * What bundle export (bundle-export.ts) and import (bundle-import.ts) both use: where their
 * temporary sets live, and which region of a base checkpoint a tree is compared with.
 */
import os from 'node:os'
import path from 'node:path'
import type { CidBytes } from '../codecs/cid.js'
import type { Manifest } from '../codecs/manifest.js'
import type { StoreContext } from './context.js'

/** A directory for a temporary SeenSet (undefined: in memory, for a memory store). */
export function tmpSetDir(ctx: StoreContext, what: string): string | undefined {
  const { repo } = ctx
  if (repo.memory) return undefined
  const name = `${what}-${process.pid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`
  // a store opened read-only is never written to: the set spills to the system's temporary directory
  if (repo.readOnly) return path.join(os.tmpdir(), `ckpt-${name}`)
  return path.join(repo.dir, 'tmp', name)
}

/** The root of the base checkpoint's region of the same name and shape, else null. */
export function baseRoot(base: Manifest | undefined, name: string, reg: { size: number; chunkSize: number; fanout: number }): CidBytes | null {
  const b = base?.regions[name]
  return b && b.size === reg.size && b.chunkSize === reg.chunkSize && b.fanout === reg.fanout ? b.root : null
}
