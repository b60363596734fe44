#!/usr/bin/env node
// Fetches a small x86 Linux test guest from Debian 12 packages and writes
//   DIR/bios.bin, DIR/vgabios-stdvga.bin   (SeaBIOS, package seabios)
//   DIR/vmlinuz                            (linux-image-6.1.0-*-686:i386, the non-PAE 686 kernel)
//   DIR/initramfs.cpio.gz                  (busybox-static:i386 + an /init workload, see scripts/guest/init)
//
//   node scripts/fetch-guest.mjs [DIR] [--bios-only] [--init FILE] [--force]
//
// DIR defaults to .guest/ in the checkout. Packages are only downloaded (apt-get download) and
// unpacked (dpkg-deb), never installed; the .debs are cached in DIR/debs, and a file that exists is
// not fetched again (--force: fetch and rebuild everything). The initramfs is written by
// scripts/mkcpio.mjs, so equal inputs give equal bytes; DIR/SHA256SUMS lists what was written.
// On a machine without the i386 architecture in dpkg, root adds it (dpkg --add-architecture i386 and
// apt-get update), as the kernel and busybox are i386 packages. Env: GUEST_KERNEL_PKG picks the kernel
// package (default: linux-image-6.1.0-50-686:i386 when apt knows it, else what linux-image-686:i386
// depends on). Exit code 0: the files are there; 1: they could not be fetched (message on stderr).
import { spawnSync } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { initramfs } from './mkcpio.mjs'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const args = process.argv.slice(2)
const flag = (f) => {
  const i = args.indexOf(f)
  if (i >= 0) args.splice(i, 1)
  return i >= 0
}
const option = (f) => {
  const i = args.indexOf(f)
  if (i < 0) return undefined
  const v = args[i + 1]
  args.splice(i, 2)
  return v
}
const biosOnly = flag('--bios-only')
const force = flag('--force')
const initScript = path.resolve(option('--init') ?? path.join(HERE, 'guest', 'init'))
if (args.some((a) => a.startsWith('--'))) {
  console.error('usage: node scripts/fetch-guest.mjs [DIR] [--bios-only] [--init FILE] [--force]')
  process.exit(2)
}
const DIR = path.resolve(args[0] ?? path.join(HERE, '..', '.guest'))
const DEBS = path.join(DIR, 'debs')

const log = (m) => process.stderr.write(`fetch-guest: ${m}\n`)
function fail(m) {
  log(m)
  process.exit(1)
}
const isRoot = typeof process.getuid === 'function' && process.getuid() === 0
const have = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0
const run = (cmd, argv, opts = {}) => spawnSync(cmd, argv, { encoding: 'utf8', ...opts })

function aptUpdate() {
  if (!isRoot) return false
  log('apt-get update')
  return run('apt-get', ['update', '-qq'], { stdio: ['ignore', 'ignore', 'inherit'] }).status === 0
}

/** Downloads a package into DIR/debs (cached by name); returns the .deb's path. */
function download(pkg) {
  fs.mkdirSync(DEBS, { recursive: true })
  const base = pkg.replace(/:.*$/, '')
  const arch = pkg.includes(':') ? pkg.split(':')[1] : undefined
  const cached = () =>
    fs.readdirSync(DEBS).find((f) => f.startsWith(base + '_') && f.endsWith('.deb') && (!arch || f.endsWith(`_${arch}.deb`) || f.endsWith('_all.deb')))
  if (!force && cached()) return path.join(DEBS, cached())
  for (let attempt = 0; attempt < 2; attempt++) {
    const r = run('apt-get', ['download', '-q', pkg], { cwd: DEBS })
    if (r.status === 0 && cached()) return path.join(DEBS, cached())
    log(`apt-get download ${pkg} failed: ${(r.stderr || r.error?.message || '').trim().split('\n').pop()}`)
    if (attempt === 0 && !aptUpdate()) break
  }
  fail(`cannot download ${pkg} (needs Debian 12 package lists${isRoot ? '' : '; run as root to apt-get update'})`)
}

/** Extracts the members matching the globs from a .deb into a temp dir; returns that dir. */
function extract(deb, globs) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fetch-guest-'))
  const tar = `dpkg-deb --fsys-tarfile '${deb}' | tar -x -C '${tmp}' --wildcards ${globs.map((g) => `'${g}'`).join(' ')}`
  const r = run('sh', ['-c', tar])
  if (r.status !== 0) fail(`cannot unpack ${deb}: ${r.stderr.trim()}`)
  return tmp
}

function ensureI386() {
  const archs = run('dpkg', ['--print-foreign-architectures']).stdout ?? ''
  if (archs.split('\n').includes('i386')) return
  if (!isRoot) fail('dpkg lacks the i386 architecture; as root: dpkg --add-architecture i386 && apt-get update')
  log('dpkg --add-architecture i386')
  if (run('dpkg', ['--add-architecture', 'i386']).status !== 0) fail('cannot add the i386 architecture')
  // a mirror out of sync fails one index (apt-get update exits non-zero, the others are fresh): the
  // downloads below say whether the packages could be had
  if (!aptUpdate()) log('apt-get update reported errors (a mirror out of sync?); going on with the package lists it has')
}

function kernelPackage() {
  if (process.env.GUEST_KERNEL_PKG) return process.env.GUEST_KERNEL_PKG
  const pinned = 'linux-image-6.1.0-50-686:i386'
  const known = (p) => /Candidate: (?!\(none\))/.test(run('apt-cache', ['policy', p]).stdout ?? '')
  if (known(pinned)) return pinned
  const dep = (run('apt-cache', ['depends', 'linux-image-686:i386']).stdout ?? '').match(/Depends: (linux-image-[0-9.]+-[0-9]+-686(?:-unsigned)?)(:i386)?/)
  if (!dep) fail('cannot find a linux-image-*-686:i386 package (apt-cache depends linux-image-686:i386)')
  return `${dep[1]}:i386`
}

const sha = (f) => crypto.createHash('sha256').update(fs.readFileSync(f)).digest('hex')
const exists = (f) => !force && fs.existsSync(path.join(DIR, f))
function put(name, from) {
  fs.copyFileSync(from, path.join(DIR, name + '.tmp'))
  fs.renameSync(path.join(DIR, name + '.tmp'), path.join(DIR, name))
  log(`wrote ${path.join(DIR, name)}`)
}

if (!have('apt-get') || !have('dpkg-deb')) fail('needs apt-get and dpkg-deb (a Debian or Ubuntu host)')
try {
  fs.mkdirSync(DIR, { recursive: true })
} catch (err) {
  fail(`cannot create ${DIR}: ${err.message}`)
}

if (!exists('bios.bin') || !exists('vgabios-stdvga.bin')) {
  const d = extract(download('seabios'), ['./usr/share/seabios/bios.bin', './usr/share/seabios/vgabios-stdvga.bin'])
  put('bios.bin', path.join(d, 'usr/share/seabios/bios.bin'))
  put('vgabios-stdvga.bin', path.join(d, 'usr/share/seabios/vgabios-stdvga.bin'))
  fs.rmSync(d, { recursive: true, force: true })
}
const written = ['bios.bin', 'vgabios-stdvga.bin']

if (!biosOnly) {
  if (!exists('vmlinuz')) {
    ensureI386()
    const d = extract(download(kernelPackage()), ['./boot/vmlinuz-*'])
    const k = fs.readdirSync(path.join(d, 'boot')).find((f) => f.startsWith('vmlinuz-'))
    if (!k) fail('the kernel package has no /boot/vmlinuz-*')
    put('vmlinuz', path.join(d, 'boot', k))
    fs.rmSync(d, { recursive: true, force: true })
  }
  const bb = path.join(DIR, 'busybox')
  if (!exists('busybox')) {
    ensureI386()
    const d = extract(download('busybox-static:i386'), ['./bin/busybox'])
    put('busybox', path.join(d, 'bin/busybox'))
    fs.rmSync(d, { recursive: true, force: true })
  }
  // cheap and reproducible: rebuilt every run, written only when the bytes change (a new --init)
  const gz = initramfs({ busybox: bb, init: initScript })
  const out = path.join(DIR, 'initramfs.cpio.gz')
  if (force || !fs.existsSync(out) || !fs.readFileSync(out).equals(gz)) {
    fs.writeFileSync(out + '.tmp', gz)
    fs.renameSync(out + '.tmp', out)
    log(`wrote ${out}`)
  }
  written.push('vmlinuz', 'initramfs.cpio.gz')
}

const sums = written.map((f) => `${sha(path.join(DIR, f))}  ${f}`).join('\n') + '\n'
fs.writeFileSync(path.join(DIR, biosOnly ? 'SHA256SUMS.bios' : 'SHA256SUMS'), sums)
process.stdout.write(sums)
