#!/usr/bin/env node
// A reproducible initramfs: a newc cpio archive (mtime 0, uid/gid 0, inodes numbered in order) of a
// static busybox, its applet links, a few device nodes and an /init script, gzipped (level 9, no name,
// mtime 0). No cpio binary needed.
//
//   node scripts/mkcpio.mjs OUT.cpio.gz --busybox PATH --init PATH [--applets sh,mount,...] [--file DEST=SRC]...
//
// Library: import { initramfs, newc } from './mkcpio.mjs'
import fs from 'node:fs'
import path from 'node:path'
import zlib from 'node:zlib'
import { fileURLToPath } from 'node:url'

export const DEFAULT_APPLETS = ['sh', 'mount', 'awk', 'head', 'tr', 'md5sum', 'printf', 'echo', 'cat', 'poweroff', 'sleep', 'ls', 'dmesg', 'uname']

/** entries: [{ name, mode (with type bits), data?: Buffer, nlink?, rdev?: [major, minor] }] -> the archive bytes */
export function newc(entries) {
  const hex = (n) => n.toString(16).padStart(8, '0')
  const pad4 = (n) => Buffer.alloc((4 - (n % 4)) % 4)
  const parts = []
  let ino = 1
  for (const e of [...entries, { name: 'TRAILER!!!', mode: 0, nlink: 1 }]) {
    const data = e.data ?? Buffer.alloc(0)
    const name = Buffer.from(e.name + '\0')
    const [maj, min] = e.rdev ?? [0, 0]
    const fields = [ino++, e.mode, 0, 0, e.nlink ?? 1, 0, data.length, 0, 0, maj, min, name.length, 0]
    parts.push(Buffer.from('070701' + fields.map(hex).join('')), name, pad4(110 + name.length), data, pad4(data.length))
  }
  return Buffer.concat(parts)
}

/** The guest initramfs (gzipped cpio): dirs, /dev nodes, busybox + applet symlinks, /init, extra files. */
export function initramfs({ busybox, init, applets = DEFAULT_APPLETS, files = {} }) {
  const E = []
  for (const d of ['bin', 'dev', 'proc', 'sys', 'tmp', 'root', 'etc']) E.push({ name: d, mode: 0o040755, nlink: 2 })
  E.push({ name: 'dev/console', mode: 0o020600, rdev: [5, 1] })
  E.push({ name: 'dev/null', mode: 0o020666, rdev: [1, 3] })
  E.push({ name: 'dev/zero', mode: 0o020666, rdev: [1, 5] })
  E.push({ name: 'dev/ttyS0', mode: 0o020600, rdev: [4, 64] })
  E.push({ name: 'bin/busybox', mode: 0o100755, data: fs.readFileSync(busybox) })
  for (const a of applets) E.push({ name: 'bin/' + a, mode: 0o120777, data: Buffer.from('busybox') })
  for (const [dest, src] of Object.entries(files)) E.push({ name: dest.replace(/^\/+/, ''), mode: 0o100755, data: fs.readFileSync(src) })
  E.push({ name: 'init', mode: 0o100755, data: fs.readFileSync(init) })
  // zlib's gzip header: no file name, mtime 0, OS byte 3 (unix) -> the same bytes on every run
  return zlib.gzipSync(newc(E), { level: 9 })
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2)
  const out = args.shift()
  const opts = { files: {} }
  while (args.length) {
    const a = args.shift()
    if (a === '--busybox') opts.busybox = args.shift()
    else if (a === '--init') opts.init = args.shift()
    else if (a === '--applets') opts.applets = args.shift().split(',')
    else if (a === '--file') { const [d, s] = args.shift().split('='); opts.files[d] = s }
    else { console.error(`unknown option ${a}`); process.exit(2) }
  }
  if (!out || !opts.busybox || !opts.init) {
    console.error('usage: node scripts/mkcpio.mjs OUT.cpio.gz --busybox PATH --init PATH [--applets a,b] [--file DEST=SRC]...')
    process.exit(2)
  }
  const gz = initramfs(opts)
  fs.writeFileSync(out, gz)
  console.log(`wrote ${out} (${gz.length} bytes)`)
}
