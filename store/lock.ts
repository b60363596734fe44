/**
 * One writer per store. LevelDB's own LOCK (an fcntl lock the kernel drops when the process dies, even
 * on kill -9) is the mutual exclusion; lock.json beside it only names the holder for the error message.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

export interface LockHolder {
  pid: number
  host: string
  since: string
}

export function writeHolder(dir: string): void {
  const h: LockHolder = { pid: process.pid, host: os.hostname(), since: new Date().toISOString() }
  fs.writeFileSync(path.join(dir, 'lock.json'), JSON.stringify(h) + '\n')
}

export function readHolder(dir: string): LockHolder | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, 'lock.json'), 'utf8')) as LockHolder
  } catch {
    return undefined
  }
}

export function clearHolder(dir: string): void {
  const h = readHolder(dir)
  if (h && h.pid === process.pid && h.host === os.hostname()) fs.rmSync(path.join(dir, 'lock.json'), { force: true })
}
