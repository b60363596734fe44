/**
 * Output files of the `ckpt` command (SPEC.md §17), end to end with the compiled CLI: --out onto a
 * symlink, a FIFO, /dev/null, /dev/full, a block device (a loop device, root only) and a directory;
 * no temporary file left by a failed or interrupted restore; the free-space check (a small tmpfs, root
 * only); OS errors as CKPT_* codes; options with values starting with '-'; add without regions; text
 * output escaping control characters.
 */
import { execFileSync, spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { blake3 } from '../../codecs/blake3.js'
import { encodeCarHeader, sectionPrefix } from '../../codecs/car.js'
import { cidBytes, DAG_CBOR, RAW, type CidBytes } from '../../codecs/cid.js'
import { encodeManifest } from '../../codecs/manifest.js'
import { encodeNode } from '../../codecs/tree-node.js'
import { mountTmpfs, unmountTmpfs } from '../helpers/tmpfs.js'
import { openStore, type CkptError } from '../../src/index.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const CLI = path.join(ROOT, 'dist/cli/ckpt.js')
const PAGE = 4096
const isRoot = process.getuid?.() === 0

interface Run {
  status: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  raw: Buffer
}

function env(): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env }
  delete e.CKPT_STORE
  return e
}

function ckpt(args: string[]): Run {
  const r: SpawnSyncReturns<Buffer> = spawnSync(process.execPath, [CLI, ...args], { env: env(), maxBuffer: 64 << 20 })
  if (r.error) throw r.error
  return { status: r.status, signal: r.signal, stdout: r.stdout.toString('utf8'), stderr: r.stderr.toString('utf8'), raw: r.stdout }
}

/** The CLI in the background (a FIFO needs a reader at the same time). */
function ckptAsync(args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [CLI, ...args], { env: env() })
    const out: Buffer[] = []
    const err: Buffer[] = []
    c.stdout.on('data', (b: Buffer) => out.push(b))
    c.stderr.on('data', (b: Buffer) => err.push(b))
    c.on('error', reject)
    c.on('close', (status, signal) => {
      const raw = Buffer.concat(out)
      resolve({ status, signal, stdout: raw.toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), raw })
    })
  })
}

/** `ckpt: CODE:` on stderr and the same code in the --json error object when there is one. */
function expectError(r: Run, status: number, code: string): void {
  expect(r.status, r.stderr).toBe(status)
  expect(r.stderr).toContain(`ckpt: ${code}:`)
  if (r.stdout.trim().startsWith('{"error"')) expect(JSON.parse(r.stdout).error.code).toBe(code)
}

function partials(dir: string): string[] {
  const found: string[] = []
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      if (e.name.includes('.ckpt-partial-')) found.push(path.join(d, e.name))
      if (e.isDirectory()) walk(path.join(d, e.name))
    }
  }
  walk(dir)
  return found
}

/** Reads a FIFO to its end (the open waits for the writer). */
async function drainFifo(fifo: string): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const c of fs.createReadStream(fifo)) parts.push(c as Buffer)
  return Buffer.concat(parts)
}

let tmp: string
let store: string
let ram: Buffer
let ramFile: string
let cpu: Buffer
let cpuFile: string
const RED = '\x1b[31mred\x1b[0m'

beforeAll(() => {
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npx tsc -p .\` before the tests`)
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ckpt-cli-output-'))
  store = path.join(tmp, 'store')
  // 1 MiB of 4 KiB pages: a few random, the rest holes
  ram = Buffer.alloc(1 << 20)
  for (const i of [0, 1, 2, 10, 100, 200, 255]) randomBytes(PAGE).copy(ram, i * PAGE)
  ramFile = path.join(tmp, 'ram.in')
  fs.writeFileSync(ramFile, ram)
  cpu = Buffer.from('cpu state\n')
  cpuFile = path.join(tmp, 'cpu.in')
  fs.writeFileSync(cpuFile, cpu)
  const r = ckpt(['add', '--store', store, '--timeline', 'vm', '--vtime', '1', '--label', RED, '--meta', `note=a\nb${RED}`, `ram=${ramFile}`, '--blob', `cpu=${cpuFile}`])
  if (r.status !== 0) throw new Error(`setup add failed: ${r.stderr}`)
})

afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true })
})

function fresh(name: string): string {
  const d = path.join(tmp, name)
  fs.mkdirSync(d, { recursive: true })
  return d
}

describe('--out onto a symlink', () => {
  it('restore --region writes the link target and keeps the link', () => {
    const d = fresh('symlink-region')
    const target = path.join(d, 'target.bin')
    fs.writeFileSync(target, 'old content')
    const link = path.join(d, 'link.bin')
    fs.symlinkSync('target.bin', link)
    const r = ckpt(['restore', '--store', store, 'vm', '--region', 'ram', '--out', link, '--json'])
    expect(r.status, r.stderr).toBe(0)
    expect(JSON.parse(r.stdout).target).toBe(target)
    expect(fs.lstatSync(link).isSymbolicLink()).toBe(true)
    expect(fs.readlinkSync(link)).toBe('target.bin')
    expect(fs.readFileSync(target).equals(ram)).toBe(true)
    expect(partials(d)).toEqual([])
  })

  it('a replaced regular file keeps its permission bits', () => {
    const d = fresh('mode')
    for (const [kind, name] of [['--region', 'ram'], ['--blob', 'cpu']] as const) {
      const f = path.join(d, `${name}.bin`)
      fs.writeFileSync(f, 'old')
      fs.chmodSync(f, 0o640)
      const r = ckpt(['restore', '--store', store, 'vm', kind, name, '--out', f])
      expect(r.status, r.stderr).toBe(0)
      expect(fs.statSync(f).mode & 0o7777).toBe(0o640)
    }
    expect(fs.readFileSync(path.join(d, 'ram.bin')).equals(ram)).toBe(true)
  })

  it('a dangling link (through a chain of links) gets its target created', () => {
    const d = fresh('symlink-dangling')
    fs.mkdirSync(path.join(d, 'sub'))
    fs.symlinkSync('sub/second', path.join(d, 'first'))
    fs.symlinkSync('../new.bin', path.join(d, 'sub', 'second'))
    const r = ckpt(['restore', '--store', store, 'vm', '--blob', 'cpu', '--out', path.join(d, 'first')])
    expect(r.status, r.stderr).toBe(0)
    expect(fs.lstatSync(path.join(d, 'first')).isSymbolicLink()).toBe(true)
    expect(fs.lstatSync(path.join(d, 'sub', 'second')).isSymbolicLink()).toBe(true)
    expect(fs.readFileSync(path.join(d, 'new.bin')).equals(cpu)).toBe(true)
  })

  it('export writes the link target, a bundle that imports', () => {
    const d = fresh('symlink-export')
    const link = path.join(d, 'b.car')
    fs.symlinkSync(path.join(d, 'real.car'), link)
    const r = ckpt(['export', '--store', store, 'vm', '--out', link])
    expect(r.status, r.stderr).toBe(0)
    expect(fs.lstatSync(link).isSymbolicLink()).toBe(true)
    expect(fs.statSync(path.join(d, 'real.car')).size).toBeGreaterThan(0)
    const other = path.join(d, 'store')
    expect(ckpt(['import', '--store', other, link]).status).toBe(0)
    expect(ckpt(['log', '--store', other]).stdout).toContain('vm@1 ')
  })

  it('restore --all follows a symlink inside DIR too', () => {
    const d = fresh('symlink-all')
    const out = path.join(d, 'out')
    fs.mkdirSync(out)
    fs.symlinkSync(path.join(d, 'ram.elsewhere'), path.join(out, 'ram'))
    const r = ckpt(['restore', '--store', store, 'vm', '--all', '--out', out])
    expect(r.status, r.stderr).toBe(0)
    expect(fs.lstatSync(path.join(out, 'ram')).isSymbolicLink()).toBe(true)
    expect(fs.readFileSync(path.join(d, 'ram.elsewhere')).equals(ram)).toBe(true)
    expect(fs.readFileSync(path.join(out, 'cpu')).equals(cpu)).toBe(true)
  })
})

describe('--out onto a FIFO', () => {
  it('restore --region streams the region, holes as zeros, to the reader', async () => {
    const fifo = path.join(fresh('fifo-region'), 'pipe')
    execFileSync('mkfifo', [fifo])
    const [r, got] = await Promise.all([ckptAsync(['restore', '--store', store, 'vm', '--region', 'ram', '--out', fifo]), drainFifo(fifo)])
    expect(r.status, r.stderr).toBe(0)
    expect(got.equals(ram)).toBe(true)
    expect(fs.statSync(fifo).isFIFO()).toBe(true)
  })

  it('restore --blob streams the blob', async () => {
    const fifo = path.join(fresh('fifo-blob'), 'pipe')
    execFileSync('mkfifo', [fifo])
    const [r, got] = await Promise.all([ckptAsync(['restore', '--store', store, 'vm', '--blob', 'cpu', '--out', fifo]), drainFifo(fifo)])
    expect(r.status, r.stderr).toBe(0)
    expect(got.equals(cpu)).toBe(true)
  })

  it('export streams a bundle that imports', async () => {
    const d = fresh('fifo-export')
    const fifo = path.join(d, 'pipe')
    execFileSync('mkfifo', [fifo])
    const [r, got] = await Promise.all([ckptAsync(['export', '--store', store, 'vm', '--out', fifo, '--json']), drainFifo(fifo)])
    expect(r.status, r.stderr).toBe(0)
    expect(JSON.parse(r.stdout).fileBytes).toBe(got.length)
    expect(fs.statSync(fifo).isFIFO()).toBe(true)
    const car = path.join(d, 'got.car')
    fs.writeFileSync(car, got)
    const other = path.join(d, 'store')
    expect(ckpt(['import', '--store', other, car]).status).toBe(0)
    const back = ckpt(['restore', '--store', other, 'vm', '--region', 'ram', '--out', '-'])
    expect(back.raw.equals(ram)).toBe(true)
  })
})

describe('--out onto character devices', () => {
  it('/dev/null takes a region, a blob and a bundle and stays a character device', () => {
    for (const args of [
      ['restore', '--store', store, 'vm', '--region', 'ram', '--out', '/dev/null'],
      ['restore', '--store', store, 'vm', '--blob', 'cpu', '--out', '/dev/null'],
      ['export', '--store', store, 'vm', '--out', '/dev/null'],
    ]) {
      const r = ckpt(args)
      expect(r.status, r.stderr).toBe(0)
      expect(fs.statSync('/dev/null').isCharacterDevice()).toBe(true)
    }
  })

  it('/dev/full fails with CKPT_NO_SPACE and stays a character device', () => {
    if (!fs.existsSync('/dev/full')) throw new Error('/dev/full is missing')
    for (const args of [
      ['restore', '--store', store, 'vm', '--region', 'ram', '--out', '/dev/full', '--json'],
      ['restore', '--store', store, 'vm', '--blob', 'cpu', '--out', '/dev/full', '--json'],
      ['export', '--store', store, 'vm', '--out', '/dev/full', '--json'],
    ]) {
      expectError(ckpt(args), 1, 'CKPT_NO_SPACE')
      expect(fs.statSync('/dev/full').isCharacterDevice()).toBe(true)
    }
    expect(partials('/dev').length).toBe(0)
  })
})

describe('--out onto a block device (a loop device)', () => {
  let dev: string | undefined
  let backing: string
  const SIZE = 2 << 20
  beforeAll(() => {
    if (!isRoot) return console.warn('block device test skipped: losetup needs root')
    backing = path.join(tmp, 'loop.img')
    fs.writeFileSync(backing, Buffer.alloc(SIZE, 0xff))
    try {
      dev = execFileSync('losetup', ['--find', '--show', backing], { encoding: 'utf8' }).trim()
    } catch (err) {
      console.warn(`block device test skipped: losetup failed (${(err as Error).message.split('\n')[0]})`)
    }
  })
  afterAll(() => {
    if (dev) execFileSync('losetup', ['-d', dev])
  })

  it('restore --region writes in place, holes as zeros over the old content; a region larger than the device is CKPT_NO_SPACE', (ctx) => {
    if (!dev) return ctx.skip()
    const r = ckpt(['restore', '--store', store, 'vm', '--region', 'ram', '--out', dev])
    expect(r.status, r.stderr).toBe(0)
    expect(fs.statSync(dev).isBlockDevice()).toBe(true)
    const fd = fs.openSync(dev, 'r')
    const back = Buffer.alloc(SIZE)
    fs.readSync(fd, back, 0, SIZE, 0)
    fs.closeSync(fd)
    expect(back.subarray(0, ram.length).equals(ram)).toBe(true)
    // beyond the region: the device's old content
    expect(back.subarray(ram.length).equals(Buffer.alloc(SIZE - ram.length, 0xff))).toBe(true)

    // a 4 MiB region does not fit the 2 MiB device: refused before writing
    const big = path.join(tmp, 'big.in')
    fs.writeFileSync(big, Buffer.alloc(4 << 20, 7))
    expect(ckpt(['add', '--store', store, '--timeline', 'bigdev', '--vtime', '0', `disk=${big}`]).status).toBe(0)
    expectError(ckpt(['restore', '--store', store, 'bigdev', '--region', 'disk', '--out', dev, '--json']), 1, 'CKPT_NO_SPACE')
    const again = Buffer.alloc(SIZE)
    const fd2 = fs.openSync(dev, 'r')
    fs.readSync(fd2, again, 0, SIZE, 0)
    fs.closeSync(fd2)
    expect(again.equals(back)).toBe(true)
    expect(fs.statSync(dev).isBlockDevice()).toBe(true)

    // a device in use (here: held open exclusively, as a mount holds it) is refused
    const held = fs.openSync(dev, fs.constants.O_RDONLY | fs.constants.O_EXCL)
    try {
      expectError(ckpt(['restore', '--store', store, 'vm', '--region', 'ram', '--out', dev, '--json']), 1, 'CKPT_IO')
    } finally {
      fs.closeSync(held)
    }
  })
})

describe('--out onto a directory', () => {
  it('is refused (CKPT_BAD_ARGUMENT, exit 2) with nothing written', () => {
    const d = fresh('dir-target')
    fs.mkdirSync(path.join(d, 'x'))
    for (const args of [
      ['restore', '--store', store, 'vm', '--region', 'ram', '--out', path.join(d, 'x'), '--json'],
      ['restore', '--store', store, 'vm', '--blob', 'cpu', '--out', path.join(d, 'x'), '--json'],
      ['export', '--store', store, 'vm', '--out', path.join(d, 'x'), '--json'],
    ]) {
      expectError(ckpt(args), 2, 'CKPT_BAD_ARGUMENT')
      expect(fs.readdirSync(d)).toEqual(['x'])
      expect(fs.readdirSync(path.join(d, 'x'))).toEqual([])
    }
  })
})

describe('no temporary file is left behind', () => {
  it('by a restore that fails on a damaged pack (region, --all)', () => {
    const d = fresh('damaged')
    const copy = path.join(d, 'store')
    fs.cpSync(store, copy, { recursive: true })
    const packs = fs.readdirSync(path.join(copy, 'packs')).filter((f) => f.endsWith('.pack'))
    expect(packs.length).toBeGreaterThan(0)
    // the chunks come first in the pack: overwrite a stretch of them
    const fd = fs.openSync(path.join(copy, 'packs', packs[0]!), 'r+')
    fs.writeSync(fd, Buffer.alloc(8192, 0x5a), 0, 8192, 2000)
    fs.closeSync(fd)
    const out = path.join(d, 'out')
    fs.mkdirSync(out)
    const r = ckpt(['restore', '--store', copy, 'vm', '--region', 'ram', '--out', path.join(out, 'ram.bin'), '--json'])
    expect(r.status, r.stderr).toBe(1)
    expect(['CKPT_HASH_MISMATCH', 'CKPT_BAD_PACK', 'CKPT_BAD_INDEX']).toContain(JSON.parse(r.stdout).error.code)
    expect(fs.readdirSync(out)).toEqual([])
    const all = ckpt(['restore', '--store', copy, 'vm', '--all', '--out', path.join(out, 'all')])
    expect(all.status, all.stderr).toBe(1)
    expect(partials(out)).toEqual([])
    expect(fs.existsSync(path.join(out, 'all', 'ram'))).toBe(false)
  })

  it('by a restore that fails on a missing pack', () => {
    const d = fresh('missing-pack')
    const copy = path.join(d, 'store')
    fs.cpSync(store, copy, { recursive: true })
    for (const f of fs.readdirSync(path.join(copy, 'packs'))) if (f.endsWith('.pack')) fs.rmSync(path.join(copy, 'packs', f))
    const r = ckpt(['restore', '--store', copy, 'vm', '--region', 'ram', '--out', path.join(d, 'ram.bin')])
    expect(r.status).not.toBe(0)
    expect(r.stderr).toMatch(/^ckpt: CKPT_[A-Z_]+:/m)
    expect(partials(d)).toEqual([])
    expect(fs.existsSync(path.join(d, 'ram.bin'))).toBe(false)
  })

  it('by a restore interrupted with SIGTERM (slowed down under strace), which ends by that signal', async (ctx) => {
    const hasStrace = spawnSync('strace', ['-qq', '-o', '/dev/null', 'true']).status === 0
    if (!hasStrace) {
      console.warn('SIGTERM cleanup test skipped: strace is missing or cannot trace here')
      return ctx.skip()
    }
    const d = fresh('sigterm')
    // many chunks, each write delayed 100 ms: the restore takes seconds, the temporary file is there at once
    const data = randomBytes(64 * PAGE)
    const input = path.join(d, 'in.bin')
    fs.writeFileSync(input, data)
    expect(ckpt(['add', '--store', store, '--timeline', 'slow', '--vtime', '0', `ram=${input}`]).status).toBe(0)
    const out = path.join(d, 'out.bin')
    const tracer = spawn('strace', ['-f', '-qq', '-o', '/dev/null', '-e', 'trace=pwrite64', '-e', 'inject=pwrite64:delay_enter=100000', process.execPath, CLI, 'restore', '--store', store, 'slow', '--region', 'ram', '--out', out], { env: env(), stdio: 'ignore' })
    const ended = new Promise<{ status: number | null; signal: NodeJS.Signals | null }>((resolve) => tracer.on('close', (status, signal) => resolve({ status, signal })))
    const deadline = Date.now() + 20_000
    while (partials(d).length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
    expect(partials(d).length).toBe(1)
    const children = fs.readFileSync(`/proc/${tracer.pid}/task/${tracer.pid}/children`, 'utf8').trim().split(/\s+/)
    expect(children.length).toBe(1)
    process.kill(Number(children[0]), 'SIGTERM')
    const end = await ended
    // strace ends as its tracee did: by the signal (a shell says 143), or with that status
    expect(end.signal === 'SIGTERM' || end.status === 143, JSON.stringify(end)).toBe(true)
    expect(partials(d)).toEqual([])
    expect(fs.existsSync(out)).toBe(false)
  })

  it('a signal while waiting for a FIFO reader ends the process', async () => {
    const fifo = path.join(fresh('fifo-signal'), 'pipe')
    execFileSync('mkfifo', [fifo])
    const c = spawn(process.execPath, [CLI, 'restore', '--store', store, 'vm', '--region', 'ram', '--out', fifo], { env: env(), stdio: 'ignore' })
    const ended = new Promise<{ status: number | null; signal: NodeJS.Signals | null }>((resolve) => c.on('close', (status, signal) => resolve({ status, signal })))
    await new Promise((r) => setTimeout(r, 1500))
    c.kill('SIGINT')
    const end = await ended
    expect(end.signal === 'SIGINT' || end.status === 130, JSON.stringify(end)).toBe(true)
  })
})

/** A bundle of one checkpoint whose region `disk` is `size` bytes of one repeated 64 KiB chunk (a few blocks). */
function repeatedChunkBundle(size: number): Buffer {
  const CH = 65536
  const FAN = 256
  const sections: { cid: CidBytes; bytes: Uint8Array }[] = []
  const put = (codec: number, bytes: Uint8Array) => {
    const cid = cidBytes(codec, blake3(bytes))
    sections.push({ cid, bytes })
    return cid
  }
  let child = put(RAW, new Uint8Array(CH).fill(0x41))
  for (let items = size / CH; items > 1; items = Math.ceil(items / FAN)) {
    const count = Math.min(FAN, items)
    const digests = new Uint8Array(count * 32)
    for (let i = 0; i < count; i++) digests.set(child.subarray(4), i * 32)
    child = put(DAG_CBOR, encodeNode({ count, codecs: new Uint8Array(count).fill(child[1]!), digests }))
  }
  const root = put(
    DAG_CBOR,
    encodeManifest({ timeline: 'huge', lineage: '0123456789abcdef0123456789abcdef', vtime: 0n, wall: Date.now(), parent: null, meta: {}, regions: { disk: { size, chunkSize: CH, fanout: FAN, root: child } }, blobs: {} }),
  )
  const parts: Uint8Array[] = [encodeCarHeader([root])]
  for (const s of sections.reverse()) parts.push(sectionPrefix(s.cid, s.bytes.length), s.bytes)
  return Buffer.concat(parts)
}

describe('free space is checked before a region is written', () => {
  let mnt = ''
  let mounted = false
  beforeAll(() => {
    const m = mountTmpfs('2m', 'ckpt-out-tmpfs-')
    if (m) {
      mnt = m
      mounted = true
    } else console.warn('free-space test skipped: cannot mount a tmpfs (needs root)')
  })
  afterAll(() => {
    if (mounted) unmountTmpfs(mnt)
  })

  it('a region whose data does not fit is CKPT_NO_SPACE with nothing written; a sparse one that fits restores', async (ctx) => {
    if (!mounted) return ctx.skip()
    const big = path.join(tmp, 'fs-big.in')
    fs.writeFileSync(big, randomBytes(4 << 20))
    expect(ckpt(['add', '--store', store, '--timeline', 'fsbig', '--vtime', '0', `ram=${big}`]).status).toBe(0)
    expectError(ckpt(['restore', '--store', store, 'fsbig', '--region', 'ram', '--out', path.join(mnt, 'ram.bin'), '--json']), 1, 'CKPT_NO_SPACE')
    expect(fs.readdirSync(mnt)).toEqual([])
    expect(fs.statfsSync(mnt).bfree).toBe(fs.statfsSync(mnt).blocks)
    // the check, not a full disk, said it: the error names what was needed and what was free
    const s = await openStore(store, { mustExist: true, threads: 0 })
    try {
      const e = await s.restore('fsbig', 'ram', path.join(mnt, 'ram.bin')).then(
        () => undefined,
        (err: unknown) => err as CkptError,
      )
      expect(e?.code).toBe('CKPT_NO_SPACE')
      expect(e?.details.needed).toBe(4 << 20)
      expect(e?.details.available).toBeLessThanOrEqual(2 << 20)
      expect(e?.details.path).toBe(path.join(mnt, 'ram.bin'))
    } finally {
      await s.close()
    }
    expect(fs.readdirSync(mnt)).toEqual([])
    // 8 MiB, mostly holes: only its few pages count
    const sparse = Buffer.alloc(8 << 20)
    for (const i of [0, 7, 1000, 2047]) randomBytes(PAGE).copy(sparse, i * PAGE)
    const sparseIn = path.join(tmp, 'fs-sparse.in')
    fs.writeFileSync(sparseIn, sparse)
    expect(ckpt(['add', '--store', store, '--timeline', 'fssparse', '--vtime', '0', `ram=${sparseIn}`]).status).toBe(0)
    const ok = ckpt(['restore', '--store', store, 'fssparse', '--region', 'ram', '--out', path.join(mnt, 'sparse.bin')])
    expect(ok.status, ok.stderr).toBe(0)
    expect(fs.readFileSync(path.join(mnt, 'sparse.bin')).equals(sparse)).toBe(true)
    fs.rmSync(path.join(mnt, 'sparse.bin'))
  })

  it('a bundle declaring a 1 TiB region of one repeated chunk is refused at once', async (ctx) => {
    if (!mounted) return ctx.skip()
    const d = fresh('huge')
    const car = path.join(d, 'huge.car')
    fs.writeFileSync(car, repeatedChunkBundle(2 ** 40))
    const other = path.join(d, 'store')
    const imp = ckpt(['import', '--store', other, car])
    expect(imp.status, imp.stderr).toBe(0)
    const t0 = Date.now()
    expectError(ckpt(['restore', '--store', other, 'huge', '--region', 'disk', '--out', path.join(mnt, 'disk.img'), '--json']), 1, 'CKPT_NO_SPACE')
    expect(Date.now() - t0).toBeLessThan(30_000)
    expect(fs.readdirSync(mnt)).toEqual([])
    expect(fs.statfsSync(mnt).bfree).toBe(fs.statfsSync(mnt).blocks)
    const s = await openStore(other, { mustExist: true, threads: 0 })
    try {
      const e = await s.restore('huge', 'disk', path.join(mnt, 'disk.img')).then(
        () => undefined,
        (err: unknown) => err as CkptError,
      )
      expect(e?.code).toBe('CKPT_NO_SPACE')
      expect(e?.details.needed).toBe(2 ** 40)
    } finally {
      await s.close()
    }
  })
})

describe('operating-system errors are CKPT_* codes', () => {
  it('an unreadable --blob or region file of add is CKPT_PERMISSION, a missing one CKPT_NOT_FOUND', (ctx) => {
    const hasSetpriv = isRoot && spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'true']).status === 0
    if (!hasSetpriv) {
      console.warn('EACCES test skipped: needs root and setpriv to run as another user')
      return ctx.skip()
    }
    const d = fs.mkdtempSync(path.join(os.tmpdir(), 'ckpt-eacces-'))
    try {
      fs.chmodSync(d, 0o777)
      const secret = path.join(d, 'secret.bin')
      fs.writeFileSync(secret, Buffer.alloc(PAGE, 1), { mode: 0o600 })
      const nobody = (args: string[]): Run => {
        const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, CLI, ...args], { env: env() })
        return { status: r.status, signal: r.signal, stdout: r.stdout.toString(), stderr: r.stderr.toString(), raw: r.stdout }
      }
      const s = path.join(d, 'store')
      expectError(nobody(['add', '--store', s, '--timeline', 't', '--vtime', '0', '--blob', `cpu=${secret}`, '--json']), 1, 'CKPT_PERMISSION')
      expectError(nobody(['add', '--store', s, '--timeline', 't', '--vtime', '0', `ram=${secret}`, '--json']), 1, 'CKPT_PERMISSION')
      expectError(nobody(['add', '--store', s, '--timeline', 't', '--vtime', '0', '--blob', `cpu=${path.join(d, 'missing.bin')}`, '--json']), 1, 'CKPT_NOT_FOUND')
      // an output directory the user may not write into (a store the user may use)
      const open = path.join(d, 'open-store')
      fs.cpSync(store, open, { recursive: true })
      execFileSync('chmod', ['-R', 'a+rwX', open])
      const locked = path.join(d, 'locked')
      fs.mkdirSync(locked, { mode: 0o755 })
      expectError(nobody(['restore', '--store', open, 'vm', '--region', 'ram', '--out', path.join(locked, 'ram.bin'), '--json']), 1, 'CKPT_PERMISSION')
      expectError(nobody(['restore', '--store', open, 'vm', '--blob', 'cpu', '--out', path.join(locked, 'cpu.bin'), '--json']), 1, 'CKPT_PERMISSION')
      expect(fs.readdirSync(locked)).toEqual([])
    } finally {
      fs.rmSync(d, { recursive: true, force: true })
    }
  })

  it('a missing --blob file is CKPT_NOT_FOUND', () => {
    expectError(ckpt(['add', '--store', store, '--timeline', 'vm', '--vtime', '50', '--blob', `cpu=${path.join(tmp, 'nope.bin')}`, '--json']), 1, 'CKPT_NOT_FOUND')
  })
})

describe('command lines', () => {
  it('option values starting with "-" get the option\'s own usage error', () => {
    for (const args of [
      ['add', '--store', store, '--timeline', 'vm', '--vtime', '-5', `ram=${ramFile}`, '--json'],
      ['seek', '--store', store, '--timeline', 'vm', '--vtime', '-5', '--json'],
      ['gc', '--store', store, '--threshold', '-1', '--json'],
      ['verify', '--store', store, '--sample', '-3', '--json'],
    ]) {
      const r = ckpt(args)
      expect(r.status, r.stderr).toBe(2)
      expect(JSON.parse(r.stdout).error.code).toBe('USAGE')
      expect(r.stderr).not.toMatch(/ambiguous/)
    }
  })

  it('a label starting with "-" is a value', () => {
    const r = ckpt(['add', '--store', store, '--timeline', 'dash', '--vtime', '0', '--label', '-draft', `ram=${ramFile}`, '--json'])
    expect(r.status, r.stderr).toBe(0)
    const log = ckpt(['log', '--store', store, '--timeline', 'dash', '--json'])
    expect(JSON.parse(log.stdout.trim()).meta.label).toBe('-draft')
  })

  it('add with neither REGION=FILE nor --blob is a usage error and adds nothing', () => {
    const before = ckpt(['log', '--store', store, '--timeline', 'vm', '--json']).stdout
    const r = ckpt(['add', '--store', store, '--timeline', 'vm', '--vtime', '77', '--label', 'empty', '--json'])
    expect(r.status).toBe(2)
    expect(JSON.parse(r.stdout).error.code).toBe('USAGE')
    expect(ckpt(['log', '--store', store, '--timeline', 'vm', '--json']).stdout).toBe(before)
  })
})

describe('text output escapes control characters', () => {
  it('log and show print meta values with escape sequences and newlines escaped; --json keeps them exact', () => {
    const log = ckpt(['log', '--store', store, '--timeline', 'vm'])
    expect(log.status, log.stderr).toBe(0)
    expect(log.stdout).not.toContain('\x1b')
    expect(log.stdout).toContain('\\x1b[31mred\\x1b[0m')
    const show = ckpt(['show', '--store', store, 'vm@1'])
    expect(show.status, show.stderr).toBe(0)
    expect(show.stdout).not.toContain('\x1b')
    expect(show.stdout).toContain('a\\nb\\x1b[31mred')
    // the newline inside the value did not start a line: the note is on one line
    expect(show.stdout.split('\n').find((l) => l.includes('note'))).toContain('a\\nb\\x1b[31mred\\x1b[0m')
    const j = JSON.parse(ckpt(['show', '--store', store, 'vm@1', '--json']).stdout)
    expect(j.meta.label).toBe(RED)
    expect(j.meta.note).toBe(`a\nb${RED}`)
  })

  it('error messages are escaped too', () => {
    const r = ckpt(['show', '--store', store, 'vm@1\x1b[2J'])
    expect(r.status).not.toBe(0)
    expect(r.stderr).not.toContain('\x1b')
  })
})

describe('--out - (stdout)', () => {
  it('streams a region front to back, holes as zeros', () => {
    const r = ckpt(['restore', '--store', store, 'vm', '--region', 'ram', '--out', '-'])
    expect(r.status, r.stderr).toBe(0)
    expect(r.raw.equals(ram)).toBe(true)
  })
})
