import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

const made: string[] = []

/** A fresh empty directory under the OS temp dir; removed by removeTmpDirs(). */
export function tmpDir(prefix = 'ckpt-test-'): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix))
  made.push(d)
  return d
}

/** A path inside a fresh temp dir that does not exist yet (for stores created by open). */
export function tmpStorePath(prefix = 'ckpt-test-'): string {
  return path.join(tmpDir(prefix), 'store')
}

export function removeTmpDirs(): void {
  for (const d of made.splice(0)) fs.rmSync(d, { recursive: true, force: true })
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength))
}

/** Runs fn and returns what it threw (or rejected with); fails if it did not. */
export async function caught(fn: () => unknown): Promise<{ code?: string; details?: Record<string, unknown> } & Error> {
  try {
    await fn()
  } catch (err) {
    return err as { code?: string; details?: Record<string, unknown> } & Error
  }
  throw new Error('expected an error, got none')
}

/** Bytes of every file under dir: what a store takes on disk. */
export function dirBytes(dir: string): number {
  let n = 0
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name)
    n += e.isDirectory() ? dirBytes(p) : fs.statSync(p).size
  }
  return n
}
