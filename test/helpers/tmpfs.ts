import { execFileSync, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

/**
 * A small tmpfs at a fresh directory (a real full disk, a medium to remount read-only). Mounting
 * needs root: undefined when it cannot be done (the caller skips, saying so).
 */
export function mountTmpfs(size: string, prefix = 'ckpt-tmpfs-'): string | undefined {
  const mnt = fs.mkdtempSync(path.join(os.tmpdir(), prefix))
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', mnt], { stdio: 'ignore' })
    return mnt
  } catch {
    fs.rmSync(mnt, { recursive: true, force: true })
    return undefined
  }
}

/** Unmounts (after making it writable again) and removes the directory. */
export function unmountTmpfs(mnt: string): void {
  spawnSync('mount', ['-o', 'remount,rw', mnt])
  spawnSync('umount', [mnt])
  fs.rmSync(mnt, { recursive: true, force: true })
}
