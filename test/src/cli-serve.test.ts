/**
 * `ckpt serve` (SPEC.md §24): the built CLI (dist/cli/ckpt.js) started as a server, and the same
 * command lines run through it and in processes of their own, compared; the store's lock while it is
 * served; a dead server's socket; the idle stop; the client's side of the protocol against a fake server.
 */
import { spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { FRAME, runServed, SOCKET_NAME } from '../../src/cli/serve-client.js'
import { openStore } from '../../src/index.js'
import { caught, removeTmpDirs, tmpDir } from '../helpers/tmp.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const CLI = path.join(ROOT, 'dist/cli/ckpt.js')

interface Run {
  status: number | null
  stdout: string
  stderr: string
}

function ckpt(args: string[], opts: { cwd?: string; env?: Record<string, string> } = {}): Run {
  const env: NodeJS.ProcessEnv = { ...process.env, ...opts.env }
  if (!opts.env?.CKPT_STORE) delete env.CKPT_STORE
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd: opts.cwd, env, encoding: 'utf8', maxBuffer: 64 << 20 })
  if (r.error) throw r.error
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

/** Output with wall times, CIDs (manifests hold the wall time) and the store's path made comparable. */
const norm = (s: string, store: string) =>
  s
    .replaceAll(store, 'STORE')
    .replaceAll(`out-${path.basename(store)}`, 'OUT')
    .replace(/bafy[a-z2-7]+/g, 'CID')
    .replace(/\b[0-9a-f]{32}\b/g, 'LINEAGE')
    .replace(/\d+\.\d\d s\b/g, 'SECS')
    .replace(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z/g, 'WALL')
    .replace(/\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?/g, 'WALL')

const alive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

async function until(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 25))
  }
}

let dir: string
const pids: number[] = []

beforeAll(() => {
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` before the tests`)
  dir = tmpDir('ckpt-serve-')
  for (let i = 0; i < 3; i++) {
    const ram = Buffer.alloc(256 << 10)
    randomBytes(64 << 10).copy(ram, i * 4096)
    fs.writeFileSync(path.join(dir, `ram${i}.bin`), ram)
    const disk = Buffer.alloc(512 << 10)
    randomBytes(65536).copy(disk, i * 65536)
    fs.writeFileSync(path.join(dir, `disk${i}.img`), disk)
  }
})

afterAll(() => {
  for (const pid of pids) if (alive(pid)) process.kill(pid, 'SIGKILL')
  removeTmpDirs()
})

function startServer(store: string, idle = 60): number {
  const r = ckpt(['serve', '--store', store, '--detach', '--idle', String(idle), '--json'])
  expect(r.status, r.stderr).toBe(0)
  const pid = JSON.parse(r.stdout).pid as number
  pids.push(pid)
  return pid
}

/** The command lines of a short session, relative paths against `cwd`; one result each. */
function session(store: string): Run[] {
  const out: Run[] = []
  const run = (args: string[], env?: Record<string, string>) => out.push(ckpt(args, { cwd: dir, env }))
  for (let i = 0; i < 3; i++) run(['add', '--store', store, '--timeline', 'vm', '--vtime', String(i * 10), `ram=ram${i}.bin`, `disk=disk${i}.img`, '--label', `step ${i}`])
  run(['log', '--store', store])
  run(['log', '--json'], { CKPT_STORE: store })
  run(['show', '--store', store, 'vm@15'])
  run(['diff', '--store', store, 'vm@0', 'vm@20'])
  run(['restore', '--store', store, 'vm@10', '--all', '--out', `out-${path.basename(store)}`])
  run(['show', '--store', store, 'vm@5', '--json'])
  run(['show', '--store', store, 'nosuch'])
  run(['add', '--store', store, 'ram=ram0.bin'])
  run(['add', '--store', store, '--timeline', 'vm', '--vtime', '5', 'ram=ram0.bin', 'disk=disk0.img', '--json'])
  run(['verify', '--store', store])
  return out
}

describe('ckpt serve', () => {
  it('runs every command line as a process of its own would: the same output, exit status and files', async () => {
    const local = path.join(dir, 'local')
    const served = path.join(dir, 'served')
    const a = session(local)
    const pid = startServer(served)
    const sock = path.join(served, SOCKET_NAME)
    expect(fs.statSync(sock).isSocket()).toBe(true)
    // the socket is the owner's alone: a command sent there runs with the server's rights
    expect(fs.statSync(sock).mode & 0o077).toBe(0)
    const b = session(served)
    expect(b.map((r) => r.status)).toEqual(a.map((r) => r.status))
    expect(b.map((r) => r.status)).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 1, 0])
    for (let i = 0; i < a.length; i++) {
      expect(norm(b[i]!.stdout, served), `command ${i} stdout`).toBe(norm(a[i]!.stdout, local))
      expect(norm(b[i]!.stderr, served), `command ${i} stderr`).toBe(norm(a[i]!.stderr, local))
    }
    expect(fs.readFileSync(path.join(dir, 'out-served', 'ram'))).toEqual(fs.readFileSync(path.join(dir, 'ram1.bin')))
    expect(fs.readFileSync(path.join(dir, 'out-served', 'disk'))).toEqual(fs.readFileSync(path.join(dir, 'disk1.img')))
    expect(alive(pid)).toBe(true)
    // the store named through a symlink is the same store: served, not opened a second time
    const link = path.join(dir, 'served-link')
    fs.symlinkSync(served, link)
    const viaLink = ckpt(['log', '--store', link])
    expect(viaLink.status, viaLink.stderr).toBe(0)
    expect(viaLink.stdout.split('\n').filter(Boolean)).toHaveLength(3)

    // while served, the store is the server's: a command run in its own process, a second server, a library open
    const own = ckpt(['log', '--store', served], { env: { CKPT_SERVE: '0' } })
    expect(own.status).toBe(3)
    expect(own.stderr).toContain('ckpt: CKPT_LOCKED:')
    expect(own.stderr).toContain(`ckpt serve --stop --store ${served}`)
    const second = ckpt(['serve', '--store', served, '--detach'])
    expect(second.status).toBe(3)
    expect(second.stderr).toContain('CKPT_LOCKED')
    expect((await caught(() => openStore(served))).code).toBe('CKPT_LOCKED')

    // --stop returns once the store is closed: the library opens it at once and finds the checkpoints
    const stop = ckpt(['serve', '--store', served, '--stop'])
    expect(stop.status, stop.stderr).toBe(0)
    expect(stop.stdout).toBe(`stopped the server of ${served}\n`)
    expect(fs.existsSync(sock)).toBe(false)
    const store = await openStore(served, { threads: 0 })
    try {
      const vtimes: bigint[] = []
      for await (const c of store.log('vm')) vtimes.push(c.vtime)
      expect(vtimes).toEqual([0n, 10n, 20n])
    } finally {
      await store.close()
    }
    await until('the server to exit', () => !alive(pid))
    expect(ckpt(['serve', '--store', served, '--stop']).stdout).toBe(`no server of ${served}\n`)
  })

  it('a big add and restore (the sizes a process would start its workers ahead for) leave nothing running after --stop', async () => {
    const store = path.join(dir, 'big')
    const big = path.join(dir, 'big.img')
    const img = Buffer.alloc(64 << 20)
    for (let o = 0; o < img.length; o += 1 << 20) randomBytes(4096).copy(img, o)
    fs.writeFileSync(big, img)
    const pid = startServer(store)
    for (const v of ['1', '2']) expect(ckpt(['add', '--store', store, '--timeline', 'vm', '--vtime', v, `disk=${big}`, `ram=${path.join(dir, 'ram0.bin')}`]).status).toBe(0)
    const out = path.join(dir, 'big-out')
    expect(ckpt(['restore', '--store', store, 'vm', '--all', '--out', out]).status).toBe(0)
    expect(fs.readFileSync(path.join(out, 'disk')).equals(img)).toBe(true)
    expect(ckpt(['serve', '--store', store, '--stop']).status).toBe(0)
    // the server's process ends by itself: no worker thread or port is left holding it
    await until('the server to exit', () => !alive(pid))
  })

  it('CKPT_SERVE=auto: a command of an existing store starts a server, later ones use it; a missing store gets none', async () => {
    const store = path.join(dir, 'auto')
    const env = { CKPT_SERVE: 'auto' }
    const sock = path.join(store, SOCKET_NAME)
    // no store yet: the add creates it in its own process, and no server is started for a read of a missing one
    expect(ckpt(['log', '--store', path.join(dir, 'auto-missing')], { env }).status).toBe(3)
    expect(fs.existsSync(path.join(dir, 'auto-missing'))).toBe(false)
    expect(ckpt(['add', '--store', store, '--timeline', 'vm', '--vtime', '1', `ram=${path.join(dir, 'ram0.bin')}`], { env }).status).toBe(0)
    expect(fs.existsSync(sock)).toBe(false)
    // the store exists: this add starts a server and runs there; the next ones find it
    expect(ckpt(['add', '--store', store, '--timeline', 'vm', '--vtime', '2', `ram=${path.join(dir, 'ram1.bin')}`], { env }).status).toBe(0)
    expect(fs.statSync(sock).isSocket()).toBe(true)
    const holder = JSON.parse(fs.readFileSync(path.join(store, 'lock.json'), 'utf8')).pid as number
    pids.push(holder)
    expect(alive(holder)).toBe(true)
    expect(ckpt(['add', '--store', store, '--timeline', 'vm', '--vtime', '3', `ram=${path.join(dir, 'ram2.bin')}`], { env }).status).toBe(0)
    expect(ckpt(['log', '--store', store], { env }).stdout.split('\n').filter(Boolean)).toHaveLength(3)
    expect(JSON.parse(fs.readFileSync(path.join(store, 'lock.json'), 'utf8')).pid).toBe(holder)
    expect(ckpt(['serve', '--store', store, '--stop']).status).toBe(0)
    await until('the auto server to exit', () => !alive(holder))
  })

  it('a store path too long for a socket address is served all the same; two --stop at once both succeed', async () => {
    const deep = path.join(dir, 'a-directory-name-long-enough'.repeat(3), 'and-deeper-still'.repeat(2))
    fs.mkdirSync(deep, { recursive: true })
    const store = path.join(deep, 'store')
    expect(Buffer.byteLength(path.join(store, SOCKET_NAME))).toBeGreaterThan(108)
    const pid = startServer(store)
    const r = ckpt(['add', '--store', store, '--timeline', 'vm', '--vtime', '1', `ram=${path.join(dir, 'ram0.bin')}`])
    expect(r.status, r.stderr).toBe(0)
    expect(JSON.parse(fs.readFileSync(path.join(store, 'lock.json'), 'utf8')).pid).toBe(pid)
    const stops = [0, 1].map(
      () =>
        new Promise<number | null>((resolve) => {
          const c = spawn(process.execPath, [CLI, 'serve', '--store', store, '--stop'], { stdio: 'ignore' })
          c.on('exit', (code) => resolve(code))
        }),
    )
    expect(await Promise.all(stops)).toEqual([0, 0])
    await until('the server to exit', () => !alive(pid))
    expect(fs.existsSync(path.join(store, SOCKET_NAME))).toBe(false)
  })

  it('a dead server leaves a socket nobody answers: commands run in their own process, a new server takes over', async () => {
    const store = path.join(dir, 'killed')
    const pid = startServer(store)
    process.kill(pid, 'SIGKILL')
    await until('the server to die', () => !alive(pid))
    expect(fs.existsSync(path.join(store, SOCKET_NAME))).toBe(true)
    const r = ckpt(['add', '--store', store, '--timeline', 'vm', '--vtime', '1', `ram=${path.join(dir, 'ram0.bin')}`])
    expect(r.status, r.stderr).toBe(0)
    const pid2 = startServer(store)
    expect(ckpt(['log', '--store', store]).stdout).toMatch(/^vm@1 bafy/)
    expect(ckpt(['serve', '--store', store, '--stop']).status).toBe(0)
    await until('the second server to exit', () => !alive(pid2))
  })

  it('stops by itself after --idle seconds without a command, and answers a bad request with exit 2', async () => {
    const store = path.join(dir, 'idle')
    const pid = startServer(store, 2)
    // a request line that is not one
    const sock = net.connect(path.join(store, SOCKET_NAME))
    sock.end('not json\n')
    let got = Buffer.alloc(0)
    for await (const c of sock as AsyncIterable<Buffer>) got = Buffer.concat([got, c])
    const frames: [number, string][] = []
    for (let at = 0; at < got.length; ) {
      const len = got.readUInt32BE(at + 1)
      frames.push([got[at]!, got.subarray(at + 5, at + 5 + len).toString()])
      at += 5 + len
    }
    expect(frames).toEqual([
      [FRAME.STDERR, 'ckpt: bad serve request: not a JSON request line\n'],
      [FRAME.EXIT, '2'],
    ])
    await until('the idle server to stop', () => !alive(pid), 15_000)
    expect(fs.existsSync(path.join(store, SOCKET_NAME))).toBe(false)
    const s = await openStore(store, { threads: 0 })
    await s.close()
  })
})

describe('the client side (runServed, serve --stop) against a fake server', () => {
  async function fake(answer: (req: any, sock: net.Socket) => void): Promise<{ store: string; close: () => void; requests: any[] }> {
    const store = tmpDir('ckpt-serve-fake-')
    const requests: any[] = []
    const server = net.createServer((sock) => {
      let buf = ''
      sock.on('data', (c) => {
        buf += c.toString()
        if (!buf.includes('\n')) return
        const req = JSON.parse(buf.slice(0, buf.indexOf('\n')))
        requests.push(req)
        answer(req, sock)
      })
    })
    await new Promise<void>((r) => server.listen(path.join(store, SOCKET_NAME), r))
    return { store, close: () => server.close(), requests }
  }

  const frame = (type: number, text: string) => {
    const p = Buffer.from(text)
    const h = Buffer.alloc(5)
    h[0] = type
    h.writeUInt32BE(p.length, 1)
    return Buffer.concat([h, p])
  }

  it('sends argv, cwd and only the CKPT_* variables; relays stdout and stderr; returns the exit status', async () => {
    const f = await fake((_req, sock) => sock.end(Buffer.concat([frame(FRAME.STDOUT, 'out 1\n'), frame(FRAME.STDERR, 'err\n'), frame(FRAME.STDOUT, 'out 2\n'), frame(FRAME.EXIT, '7')])))
    const out: string[] = []
    const err: string[] = []
    const o = vi.spyOn(process.stdout, 'write').mockImplementation((c) => (out.push(String(c)), true))
    const e = vi.spyOn(process.stderr, 'write').mockImplementation((c) => (err.push(String(c)), true))
    try {
      const code = await runServed(['log', '--store', f.store], { CKPT_SECRET_NOT: undefined, CKPT_X: 'y', HOME: '/h' } as NodeJS.ProcessEnv)
      expect(code).toBe(7)
    } finally {
      o.mockRestore()
      e.mockRestore()
      f.close()
    }
    expect(out.join('')).toBe('out 1\nout 2\n')
    expect(err.join('')).toBe('err\n')
    expect(f.requests).toEqual([{ v: 1, argv: ['log', '--store', f.store], cwd: process.cwd(), env: { CKPT_X: 'y' }, tty: expect.any(Object) }])
  })

  it('a server that ends without an exit frame is CKPT_SERVE_LOST, exit 1; no socket, a command not served: undefined', async () => {
    const f = await fake((_req, sock) => sock.end(frame(FRAME.STDOUT, 'half')))
    const err: string[] = []
    const o = vi.spyOn(process.stdout, 'write').mockImplementation(() => true)
    const e = vi.spyOn(process.stderr, 'write').mockImplementation((c) => (err.push(String(c)), true))
    try {
      expect(await runServed(['add', '--store', f.store], {})).toBe(1)
      expect(err.join('')).toMatch(/^ckpt: CKPT_SERVE_LOST: the server of .* ended before the command did/)
      // not sent: help, the server's own command, stdin, CKPT_SERVE=0, a store without a socket
      expect(await runServed(['log', '--store', f.store, '--help'], {})).toBeUndefined()
      expect(await runServed(['serve', '--store', f.store], {})).toBeUndefined()
      expect(await runServed(['import', '--store', f.store, '-'], {})).toBeUndefined()
      expect(await runServed(['log', '--store', f.store], { CKPT_SERVE: '0' })).toBeUndefined()
      expect(await runServed(['log', '--store', dir], {})).toBeUndefined()
      expect(await runServed(['log'], {})).toBeUndefined()
    } finally {
      o.mockRestore()
      e.mockRestore()
      f.close()
    }
    expect(f.requests).toHaveLength(1)
  })

  it('--stop whose connection a stopping server closes unread waits until the store is closed (its socket gone), then says stopped', async () => {
    // a server stopping, holding the store (lock.json names this live process): it closes connections
    // unread, as a listener closed with connections still queued does
    const store = tmpDir('ckpt-serve-stopping-')
    fs.writeFileSync(path.join(store, 'lock.json'), JSON.stringify({ pid: process.pid, host: os.hostname(), since: new Date().toISOString() }) + '\n')
    let accepted = 0
    const closeUnread = net.createServer((sock) => (accepted++, sock.destroy()))
    await new Promise<void>((r) => closeUnread.listen(path.join(store, SOCKET_NAME), r))
    let exited: number | null | undefined
    let out = ''
    const c = spawn(process.execPath, [CLI, 'serve', '--store', store, '--stop', '--json'], { stdio: ['ignore', 'pipe', 'inherit'] })
    c.stdout.on('data', (d: Buffer) => (out += d.toString()))
    const done = new Promise<void>((resolve) => c.on('exit', (code) => ((exited = code), resolve())))
    try {
      // it has connected and been closed unread, and waits while the socket is there and the holder alive
      await until('the --stop to connect', () => accepted > 0)
      await new Promise((r) => setTimeout(r, 500))
      expect(exited).toBeUndefined()
    } finally {
      // the store closed: the server removes its socket
      closeUnread.close()
      fs.rmSync(path.join(store, SOCKET_NAME), { force: true })
    }
    await done
    expect(exited).toBe(0)
    expect(JSON.parse(out)).toEqual({ store, stopped: true })
  })
})
