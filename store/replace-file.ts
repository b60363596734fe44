/**
 * Temp-then-rename: the one way a file is replaced whole or not at all (a restore's or export's output
 * file, src/output-file.ts; the store marker; a scan cache; a QEMU device state). The content is written
 * under a temporary name beside the target (by default TARGET.ckpt-partial-PID), which is renamed over
 * the target when complete; on failure it is removed and the target is as it was. Nothing is fsynced
 * here: a caller that needs durability syncs the file in `write` and the directory (syncDirectory)
 * after the rename.
 */
import fs from 'node:fs'

/** The temporary name a file is written under before it replaces `target`: TARGET.ckpt-partial-PID. */
export function partialName(target: string): string {
  return `${target}.ckpt-partial-${process.pid}`
}

/** Moves a complete temporary file over its target (the last step of replaceFile, and of writers that keep the temporary file open across calls). */
export function renameOver(temp: string, target: string): void {
  fs.renameSync(temp, target)
}

function removeQuietly(temp: string): void {
  try {
    fs.rmSync(temp, { force: true })
  } catch {}
}

/** Replaces `target` by what `write(temp)` puts into `temp`, synchronously. */
export function replaceFileSync(target: string, write: (temp: string) => void, temp = partialName(target)): void {
  try {
    write(temp)
    renameOver(temp, target)
  } catch (err) {
    removeQuietly(temp)
    throw err
  }
}

/** Replaces `target` by what `write(temp)` puts into `temp`. */
export async function replaceFile(target: string, write: (temp: string) => Promise<void>, temp = partialName(target)): Promise<void> {
  try {
    await write(temp)
    renameOver(temp, target)
  } catch (err) {
    removeQuietly(temp)
    throw err
  }
}

/** fsync of a directory: a rename or a new file in it survives a crash once this returns. */
export function syncDirectory(dir: string): void {
  const fd = fs.openSync(dir, 'r')
  try {
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
}
