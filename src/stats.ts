import fs from 'node:fs'
import path from 'node:path'
import type { BlockStore } from '../store/block-store.js'

export function packStats(blocks: BlockStore): { packs: number; bytes: number } {
  let bytes = 0
  for (const [, r] of blocks.packRecords()) bytes += r.committedLength
  return { packs: blocks.packRecords().size, bytes }
}

export function dirBytes(dir: string): number {
  let n = 0
  try {
    for (const f of fs.readdirSync(dir)) {
      const st = fs.statSync(path.join(dir, f))
      if (st.isFile()) n += st.size
    }
  } catch {}
  return n
}
