/**
 * QEMU adapter: the QMP client against a fake QMP server (always), and — when qemu-system-x86_64 is
 * installed — a real guest checkpointed over QMP several times while it runs, restored into files
 * (byte-identical with copies taken while it was paused) and resumed from them in a new QEMU.
 *
 * The real-guest part boots the i386 Linux + busybox initramfs from CKPT_GUEST_DIR (default
 * .guest/; node scripts/fetch-guest.mjs builds .guest/), whose /init prints `tick N ...` on ttyS0,
 * and checks that the resumed guest continues the tick sequence exactly where the checkpoint was.
 * Without a guest it runs SeaBIOS with no boot disk (the same checks but the ticks).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import {
  checkpointQemu,
  openQemuTimeline,
  openStore,
  qemuCommandLine,
  QmpClient,
  readQemuInfo,
  restoreQemu,
  resumeQemu,
  type QemuVm,
} from '../../src/index.js'
import { caught, removeTmpDirs, tmpDir } from '../helpers/tmp.js'

afterAll(removeTmpDirs)

// ---------------------------------------------------------------- fake QMP server

type Handler = (cmd: { execute: string; arguments?: Record<string, unknown>; id?: unknown }, sock: net.Socket) => unknown

function fakeQmp(handler: Handler, opts: { greeting?: string } = {}): { path: string; server: net.Server; sockets: net.Socket[] } {
  const p = path.join(tmpDir('ckpt-qmp-'), 'qmp.sock')
  const sockets: net.Socket[] = []
  const server = net.createServer((s) => {
    sockets.push(s)
    s.write((opts.greeting ?? JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 }, package: 'fake' }, capabilities: ['oob'] } })) + '\r\n')
    let buf = ''
    s.on('data', (d) => {
      buf += d
      let nl
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl)
        buf = buf.slice(nl + 1)
        const cmd = JSON.parse(line)
        if (cmd.execute === 'qmp_capabilities') {
          s.write(JSON.stringify({ return: {}, id: cmd.id }) + '\r\n')
          continue
        }
        const r = handler(cmd, s)
        if (r !== undefined) s.write(JSON.stringify({ ...(r as object), id: cmd.id }) + '\r\n')
      }
    })
    s.on('error', () => {})
  })
  server.listen(p)
  return { path: p, server, sockets }
}

const servers: net.Server[] = []
afterEach(() => {
  for (const s of servers.splice(0)) s.close()
})

describe('QMP client (fake server)', () => {
  it('negotiates, runs commands, matches replies by id, delivers events', async () => {
    const f = fakeQmp((cmd, s) => {
      if (cmd.execute === 'query-status') return { return: { status: 'running', running: true } }
      if (cmd.execute === 'slow') {
        setTimeout(() => s.write(JSON.stringify({ return: 'slow', id: cmd.id }) + '\n'), 30)
        return undefined
      }
      if (cmd.execute === 'stop') {
        s.write(JSON.stringify({ event: 'STOP', timestamp: { seconds: 1, microseconds: 2 } }) + '\n')
        return { return: {} }
      }
      if (cmd.execute === 'echo') return { return: cmd.arguments }
      return { error: { class: 'CommandNotFound', desc: `The command ${cmd.execute} has not been found` } }
    })
    servers.push(f.server)
    const q = await QmpClient.connect(f.path)
    expect(q.greeting.version.qemu).toEqual({ major: 7, minor: 2, micro: 0 })
    // a slow reply does not get mixed up with a quicker later one
    const [slow, st] = await Promise.all([q.execute('slow'), q.execute('query-status')])
    expect(slow).toBe('slow')
    expect(st).toEqual({ status: 'running', running: true })
    expect(await q.execute('echo', { a: [1, 'x'] })).toEqual({ a: [1, 'x'] })
    const ev = q.waitEvent('STOP')
    await q.execute('stop')
    expect((await ev).timestamp).toEqual({ seconds: 1, microseconds: 2 })
    const err = await caught(() => q.execute('nope'))
    expect(err.code).toBe('CKPT_QMP')
    expect(err.details).toMatchObject({ reason: 'error', command: 'nope', class: 'CommandNotFound' })
    q.close()
    expect((await caught(() => q.execute('query-status'))).details).toMatchObject({ reason: 'closed' })
  })

  it('times out commands and events, keeps the connection usable', async () => {
    const f = fakeQmp((cmd) => (cmd.execute === 'hang' ? undefined : { return: 42 }))
    servers.push(f.server)
    const q = await QmpClient.connect(f.path, { timeoutMs: 2000 })
    const t = await caught(() => q.execute('hang', undefined, { timeoutMs: 50 }))
    expect(t.code).toBe('CKPT_QMP')
    expect(t.details).toMatchObject({ reason: 'timeout', command: 'hang' })
    expect(await q.execute('other')).toBe(42)
    expect((await caught(() => q.waitEvent('NEVER', { timeoutMs: 30 }))).details).toMatchObject({ reason: 'timeout', event: 'NEVER' })
    q.close()
  })

  it('a server that goes away fails pending commands with reason closed', async () => {
    const f = fakeQmp((_cmd, s) => {
      s.destroy()
      return undefined
    })
    servers.push(f.server)
    const q = await QmpClient.connect(f.path)
    const e = await caught(() => q.execute('query-status'))
    expect(e.code).toBe('CKPT_QMP')
    expect(e.details).toMatchObject({ reason: 'closed', command: 'query-status' })
    expect(q.closed).toBe(true)
  })

  it('no socket, no listener, not QMP, no greeting: CKPT_QMP', async () => {
    const missing = path.join(tmpDir('ckpt-qmp-'), 'none.sock')
    expect((await caught(() => QmpClient.connect(missing))).details).toMatchObject({ reason: 'connect', socket: missing })
    // a socket file nobody listens on (the VM exited)
    const dead = fakeQmp(() => undefined)
    await new Promise<void>((r) => dead.server.close(() => r()))
    fs.writeFileSync(dead.path, '')
    expect((await caught(() => QmpClient.connect(dead.path))).code).toBe('CKPT_QMP')
    const bad = fakeQmp(() => undefined, { greeting: 'hello there' })
    servers.push(bad.server)
    expect((await caught(() => QmpClient.connect(bad.path))).details).toMatchObject({ reason: 'protocol' })
    const notQmp = fakeQmp(() => undefined, { greeting: '{"hello": 1}' })
    servers.push(notQmp.server)
    expect((await caught(() => QmpClient.connect(notQmp.path))).details).toMatchObject({ reason: 'protocol' })
    const silent = path.join(tmpDir('ckpt-qmp-'), 'silent.sock')
    const s = net.createServer(() => {}).listen(silent)
    servers.push(s)
    expect((await caught(() => QmpClient.connect(silent, { timeoutMs: 100 }))).details).toMatchObject({ reason: 'timeout' })
  })
})

// ---------------------------------------------------------------- a real QEMU

const QEMU = process.env.CKPT_QEMU_BINARY ?? 'qemu-system-x86_64'
const haveQemu = spawnSync('sh', ['-c', `command -v ${QEMU}`]).status === 0
if (!haveQemu) console.log(`adapter-qemu: ${QEMU} is not installed: skipping the real-VM tests (apt-get install qemu-system-x86)`)
const guestDir = process.env.CKPT_GUEST_DIR ?? ['.guest'].find((d) => fs.existsSync(path.join(d, 'vmlinuz'))) ?? '.guest'
const guest = fs.existsSync(path.join(guestDir, 'vmlinuz')) && fs.existsSync(path.join(guestDir, 'initramfs.cpio.gz'))
if (haveQemu && !guest) console.log(`adapter-qemu: no Linux guest in ${guestDir} (node scripts/fetch-guest.mjs): SeaBIOS only, no tick checks`)

const MIB = 1 << 20
const boot = guest
  ? { kernel: path.join(guestDir, 'vmlinuz'), initrd: path.join(guestDir, 'initramfs.cpio.gz'), append: 'console=ttyS0 quiet loglevel=3 nokaslr mitigations=off' }
  : {}

function vmFiles(dir: string, tag: string): QemuVm {
  return { qmp: path.join(dir, `${tag}.qmp`), ram: path.join(dir, `${tag}.ram`), disks: { d0: path.join(dir, `${tag}.disk`) } }
}

function startQemu(vm: QemuVm, serial: string, extra: Parameters<typeof qemuCommandLine>[1] = {}): ChildProcess {
  const argv = qemuCommandLine(vm, { ...boot, serial, memory: 96 * MIB, binary: QEMU, ...extra })
  const p = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] })
  p.stderr!.on('data', (d) => process.stderr.write(`qemu: ${d}`))
  return p
}

async function until<T>(what: string, ms: number, f: () => T | undefined | false): Promise<T> {
  const end = Date.now() + ms
  for (;;) {
    const v = f()
    if (v) return v
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

const ticks = (text: string) => [...text.matchAll(/tick (\d+) /g)].map((m) => Number(m[1]))

describe.skipIf(!haveQemu)('QEMU guest over QMP', () => {
  const procs: ChildProcess[] = []
  afterAll(() => {
    for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL')
  })

  it('checkpoints a running guest, resumes it each time, restores byte-identical files and resumes a new QEMU from them', { timeout: 90_000 }, async () => {
    const dir = tmpDir('ckpt-qemu-')
    const vm = vmFiles(dir, 'a')
    fs.writeFileSync(vm.ram, '')
    fs.truncateSync(vm.ram, 96 * MIB)
    fs.writeFileSync(vm.disks!.d0!, '')
    fs.truncateSync(vm.disks!.d0!, 4 * MIB)
    const serial = path.join(dir, 'a.serial')
    const p = startQemu(vm, serial)
    procs.push(p)
    await until('QMP socket', 10_000, () => fs.existsSync(vm.qmp))
    const read = (f: string) => (fs.existsSync(f) ? fs.readFileSync(f, 'latin1') : '')
    if (guest) await until('the guest workload', 45_000, () => ticks(read(serial)).length >= 2)

    const store = await openStore(path.join(dir, 'store'))
    const tl = await openQemuTimeline(store, 'vm', vm)
    const copies: { ram: Buffer; disk: Buffer; serial: string }[] = []
    const onPaused = () => {
      copies.push({ ram: fs.readFileSync(vm.ram), disk: fs.readFileSync(vm.disks!.d0!), serial: read(serial) })
    }
    const hmp = (cmd: string) => q.execute('human-monitor-command', { 'command-line': cmd })

    const r1 = await checkpointQemu(tl, vm, 1, { onPaused })
    expect(r1.statusBefore).toBe('running')
    expect(r1.resumed).toBe(true)
    expect(r1.scanned).toEqual(['ram', 'disk.d0'])
    expect(r1.deviceStateBytes).toBeGreaterThan(1000)
    expect(r1.deviceStateBytes).toBeLessThan(4 * MIB) // RAM left out (x-ignore-shared)
    // QEMU serves one QMP client at a time: from here on the checkpoints share this connection
    const q = await QmpClient.connect(vm.qmp)
    expect((await q.execute<{ status: string }>('query-status')).status).toBe('running')

    // a write through the block layer (the guest does not write its disk): the dirty bitmap sees it
    await hmp('qemu-io d0 "write -P 0x5a 65536 131072"')
    const r2 = await checkpointQemu(tl, vm, 2, { onPaused, mode: 'shadow', qmp: q })
    expect(r2.scanned).toEqual(['ram', 'disk.d0'])
    expect((await q.execute<{ status: string }>('query-status')).status).toBe('running')
    const r3 = await checkpointQemu(tl, vm, 3, { onPaused, mode: 'shadow', qmp: q })
    expect(r3.skipped).toEqual(['disk.d0'])
    expect(r3.scanned).toEqual(['ram'])
    expect(r3.dirtyChunks.ram).toBeLessThan((96 * MIB) / 4096)
    // the shadow's previous bytes go along: pages the guest rewrote are stored as deltas of them
    expect(r3.checkpoint.stats.deltaChunks).toBeGreaterThan(0)
    expect(r3.checkpoint.stats.deltaBaseMismatches).toBe(0)
    console.log(`adapter-qemu: pauses ${[r1, r2, r3].map((r) => r.pauseMs.toFixed(0)).join(', ')} ms (96 MiB RAM + 4 MiB disk; scan, shadow, shadow)`)

    // a failure after stop (vtime order) still resumes the VM
    const bad = await caught(() => checkpointQemu(tl, vm, 3, { qmp: q }))
    expect(bad.code).toBe('CKPT_VTIME_ORDER')
    expect((await q.execute<{ status: string }>('query-status')).status).toBe('running')
    const info = await readQemuInfo(store, 'vm@2')
    expect(info).toMatchObject({ format: 'ckpt-qemu', version: 1, machine: expect.stringMatching(/^pc-i440fx-/), status: 'running' })
    expect((await store.manifest('vm@2')).meta['qemu.version']).toMatch(/^\d+\.\d+\.\d+$/)
    const r4 = await checkpointQemu(tl, vm, 4, { qmp: q, mode: 'shadow' })
    // after a failed checkpoint the adapter trusts neither bitmaps nor shadows: everything is scanned
    expect(r4.scanned).toEqual(['ram', 'disk.d0'])
    expect(r4.dirtyChunks).toEqual({})
    // chunkDeltas: false, the shadow's dirty pages go whole
    const r5 = await checkpointQemu(tl, vm, 5, { qmp: q, mode: 'shadow', chunkDeltas: false })
    expect(r5.dirtyChunks.ram).toBeGreaterThan(0)
    expect(r5.checkpoint.stats.deltaChunks).toBe(0)

    // restore each checkpoint: byte-identical with the copies taken while paused
    const b = vmFiles(dir, 'b')
    for (const [i, c] of copies.entries()) {
      const res = await restoreQemu(store, `vm@${i + 1}`, b)
      expect(res.deviceState).toBe(`${b.ram}.devstate`)
      expect(fs.readFileSync(b.ram).equals(c.ram)).toBe(true)
      expect(fs.readFileSync(b.disks!.d0!).equals(c.disk)).toBe(true)
    }
    // sparse: the restored RAM occupies less than its size where the guest never touched it
    expect(fs.statSync(b.ram).blocks * 512).toBeLessThan(96 * MIB)

    q.close()
    p.kill('SIGKILL')
    await new Promise((r) => p.once('exit', r))
    // the VM is gone; the socket file stays behind
    const gone = await caught(() => checkpointQemu(tl, vm, 6))
    expect(gone.code).toBe('CKPT_QMP')
    expect(gone.details.reason).toBe('connect')
    const missing = await caught(() => checkpointQemu(tl, { ...vm, qmp: path.join(dir, 'nope.qmp') }, 5))
    expect(missing.code).toBe('CKPT_QMP')

    // a new QEMU on the files restored from checkpoint 2, resumed from its device state
    await restoreQemu(store, 'vm@2', b)
    const serialB = path.join(dir, 'b.serial')
    const pb = startQemu(b, serialB, { incoming: true, machine: info.machine })
    procs.push(pb)
    await until('QMP socket', 10_000, () => fs.existsSync(b.qmp))
    await resumeQemu(b)
    const qb = await QmpClient.connect(b.qmp)
    expect((await qb.execute<{ status: string }>('query-status')).status).toBe('running')
    if (guest) {
      // the guest goes on where it was stopped: no boot, the tick sequence continues exactly
      const before = copies[1]!.serial
      const last = ticks(before).at(-1)!
      await until('ticks after the resume', 20_000, () => ticks(read(serialB)).some((n) => n >= last + 2))
      const after = read(serialB)
      expect(after).not.toContain('WORKLOAD START')
      const seq = ticks(before + after)
      for (let k = 1; k < seq.length; k++) expect(seq[k]).toBe(seq[k - 1]! + 1)
      // deterministic workload: the resumed guest prints what the original printed for the same ticks
      const lines = (t: string) => new Map(t.split('\n').filter((l) => /^tick \d+ /.test(l)).map((l) => [ticks(l)[0]!, l.trim()]))
      const orig = lines(read(serial))
      const common = [...lines(after)].filter(([n]) => orig.has(n))
      expect(common.length).toBeGreaterThan(0)
      for (const [n, l] of common) expect(l).toBe(orig.get(n))
    }
    await qb.execute('quit').catch(() => {})
    qb.close()
    await store.close()
  })
})
