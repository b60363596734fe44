/**
 * QEMU adapter: checkpoints a running QEMU guest over QMP into a ckpt timeline, and writes a
 * checkpoint back into files a new QEMU can start — and resume — from.
 *
 * The guest's RAM must be a `memory-backend-file` with `share=on` (so the file *is* guest memory) and
 * its disks raw image files. A checkpoint:
 *
 *   1. `stop`, and waits until `query-status` says the VM is not running;
 *   2. per disk, a QEMU dirty bitmap (`block-dirty-bitmap-add`, 64 KiB granularity) tells whether the
 *      disk was written since this timeline's previous checkpoint: QMP gives its `count` but not its
 *      contents (those need an NBD client), so an unwritten disk is carried over unchanged and a written
 *      one is scanned in full; the bitmap is cleared while the VM is stopped;
 *   3. device state (CPU registers, devices; not RAM): `migrate` to a unix socket this process reads,
 *      with the `x-ignore-shared` capability, which leaves out RAM blocks backed by shared files — the
 *      stream is a few hundred KiB and becomes the blob `qemu.devstate`;
 *   4. the RAM file as region `ram` (4 KiB pages) and disks as `disk.NAME` (64 KiB clusters): mode
 *      `scan` checkpoints the files through the library's file path (full scan; the VM stays stopped
 *      until the checkpoint is durable, since the files must not change meanwhile); mode `shadow` keeps
 *      a copy of each region in memory, finds the changed chunks by comparing the file with it, and
 *      hands the library those as dirty hints: the VM resumes once they are copied;
 *   5. `cont` (when the VM was running), also when anything above failed.
 *
 * restoreQemu() writes the RAM file, the disks (sparse) and the device-state stream back;
 * qemuCommandLine() builds the command line (with `-incoming defer` for a resume) and resumeQemu()
 * feeds the stream to the new QEMU (`migrate-incoming` with `x-ignore-shared`) and continues it.
 */
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import { CkptError } from '../../codecs/errors.js'
import { replaceFileSync } from '../../store/index.js'
import type { CkptStore } from '../store.js'
import type { Checkpoint, RegionInput, Timeline } from '../timeline.js'
import { QmpClient, qmpError, type QmpOptions } from './qemu-qmp.js'
import { readWhole, refreshShadow } from './shadow.js'

export { QmpClient, qmpError } from './qemu-qmp.js'
export type { QmpEvent, QmpGreeting, QmpOptions, QmpFailure } from './qemu-qmp.js'

export const QEMU_RAM_REGION = 'ram'
export const QEMU_PAGE = 4096
export const QEMU_CLUSTER = 65536
export const QEMU_INFO_BLOB = 'qemu.json'
export const QEMU_DEVSTATE_BLOB = 'qemu.devstate'
export const QEMU_FORMAT = 'ckpt-qemu'
export const QEMU_FORMAT_VERSION = 1

const DISK_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,57}$/

/** A QEMU guest as files and a QMP socket. */
export interface QemuVm {
  /** the QMP unix socket (`-qmp unix:PATH,server=on,wait=off`) */
  qmp: string
  /** the RAM file: mem-path of a share=on memory-backend-file */
  ram: string
  /** raw disk images by name; the name is the region suffix (`disk.NAME`) and the `-drive id` */
  disks?: Record<string, string>
  /** restore: where the device-state stream goes (default RAM path + `.devstate`) */
  deviceState?: string
}

export interface QemuCheckpointOptions extends QmpOptions {
  /** an open QMP connection to use (left open); default: connect to vm.qmp and close after */
  qmp?: QmpClient
  /** `scan` (default): full scan of the files, VM stopped until durable; `shadow`: compare with an in-memory copy, resume after the copy */
  mode?: 'scan' | 'shadow'
  /**
   * shadow mode: hand over each changed chunk's previous bytes, so a changed page is stored as a delta
   * of its previous version where smaller (default true; false: smaller restores' CPU, more bytes)
   */
  chunkDeltas?: boolean
  /** store the device state (migration stream with x-ignore-shared) as blob qemu.devstate (default true) */
  deviceState?: boolean
  /** skip disks QEMU's dirty bitmap says are unwritten since the previous checkpoint (default true) */
  dirtyBitmaps?: boolean
  /** resume the VM afterwards: 'auto' (default) when it was running, true always, false never */
  resume?: boolean | 'auto'
  /** how vtime was obtained, recorded in meta `qemu.vtime-source` (default 'caller') */
  vtimeSource?: string
  /** called while the VM is stopped, after the device state is saved and before the regions are read */
  onPaused?: () => void | Promise<void>
  /** the command line the VM was started with, recorded in qemu.json (for restarts) */
  commandLine?: string[]
  meta?: Record<string, string>
  blobs?: Record<string, Uint8Array>
}

export interface QemuCheckpointResult {
  checkpoint: Checkpoint
  /** ms from `stop` sent until `cont` acknowledged (or until done, when not resumed) */
  pauseMs: number
  /** where the pause went, ms */
  phases: { stop: number; query: number; deviceState: number; regions: number; resume: number }
  /** regions read this time / carried over unchanged (dirty bitmap said unwritten) */
  scanned: string[]
  skipped: string[]
  /** chunks the shadow compare found changed, per region (shadow mode) */
  dirtyChunks: Record<string, number>
  deviceStateBytes: number
  /** query-status before the checkpoint */
  statusBefore: string
  resumed: boolean
}

/** What qemu.json holds (SPEC.md, "The QEMU adapter"). */
export interface QemuInfo {
  format: typeof QEMU_FORMAT
  version: number
  qemu: { version: string; package: string }
  machine: string
  status: string
  vtime: string
  vtimeSource: string
  hostTime: string
  ram: { region: string; size: number; chunkSize: number; path: string; backend?: string }
  disks: Record<string, { region: string; size: number; chunkSize: number; path: string; device?: string; format?: string; carried: boolean }>
  deviceState: { blob: string; bytes: number; capabilities: string[] } | null
  commandLine?: string[]
}

/** The timeline regions of a VM: `ram` in 4 KiB pages, `disk.NAME` in 64 KiB clusters (sizes from the files). */
export function qemuRegions(vm: Pick<QemuVm, 'ram' | 'disks'>): Record<string, { size: number; chunkSize: number }> {
  const out: Record<string, { size: number; chunkSize: number }> = { [QEMU_RAM_REGION]: { size: fileSize(vm.ram), chunkSize: QEMU_PAGE } }
  for (const [name, p] of Object.entries(vm.disks ?? {})) out[diskRegion(name)] = { size: fileSize(p), chunkSize: QEMU_CLUSTER }
  return out
}

/** Opens (or creates) a timeline with the VM's regions. */
export function openQemuTimeline(store: CkptStore, name: string, vm: Pick<QemuVm, 'ram' | 'disks'>, opts: { policy?: string } = {}): Promise<Timeline> {
  return store.timeline(name, { regions: qemuRegions(vm), policy: opts.policy })
}

export function diskRegion(name: string): string {
  if (typeof name !== 'string' || !DISK_RE.test(name)) throw new CkptError('CKPT_BAD_ARGUMENT', `invalid disk name ${JSON.stringify(name)}`, { disk: name })
  return `disk.${name}`
}

function fileSize(p: string): number {
  try {
    return fs.statSync(p).size
  } catch (err) {
    throw new CkptError('CKPT_NOT_FOUND', `cannot read ${p}`, { path: p }, err)
  }
}

interface BlockInfo {
  device?: string
  qdev?: string
  inserted?: {
    file?: string
    'node-name'?: string
    drv?: string
    image?: { filename?: string; format?: string; 'virtual-size'?: number }
    'dirty-bitmaps'?: { name: string; count: number; granularity: number; recording?: boolean }[]
  }
  'dirty-bitmaps'?: { name: string; count: number; granularity: number }[]
}

/** Per timeline and VM: what the previous checkpoint left (bitmaps cleared then, shadows). */
interface VmState {
  /** timeline.lastVtime after this adapter's last successful checkpoint */
  lastVtime: bigint | undefined
  /** disks whose bitmap was cleared at that checkpoint */
  bitmaps: Set<string>
  /** shadow copies by region, equal to the timeline head's content */
  shadows: Map<string, Buffer>
  /** a checkpoint that scans a shadow in full (stable: not copied) and must be done before the shadow changes */
  inflight?: Promise<unknown>
  backend?: { id: string; path: string }
  machine?: string
  /** the last device-state stream saved: a VM still in postmigrate has not run since, so it is still its state */
  devState?: Buffer
}

const states = new WeakMap<Timeline, Map<string, VmState>>()

function stateOf(tl: Timeline, vm: QemuVm): VmState {
  let m = states.get(tl)
  if (!m) states.set(tl, (m = new Map()))
  const key = path.resolve(vm.qmp)
  let s = m.get(key)
  if (!s) m.set(key, (s = { lastVtime: undefined, bitmaps: new Set(), shadows: new Map() }))
  return s
}

/** Drops what the adapter keeps for this timeline (shadow copies): the next checkpoint scans everything. */
export function forgetQemu(tl: Timeline): void {
  states.delete(tl)
}

function bitmapName(tl: Timeline): string {
  return `ckpt-${tl.record.lineage.slice(0, 16)}`
}

const STOPPED = new Set(['paused', 'prelaunch', 'postmigrate', 'shutdown', 'guest-panicked', 'io-error', 'internal-error', 'suspended', 'watchdog', 'debug'])

async function status(q: QmpClient): Promise<string> {
  const s = await q.execute<{ status: string; running: boolean }>('query-status')
  return s.status
}

async function waitStatus(q: QmpClient, ok: (s: string) => boolean, what: string, timeoutMs: number): Promise<string> {
  const until = performance.now() + timeoutMs
  for (let delay = 0; ; delay = Math.min(20, delay + 1)) {
    const s = await status(q)
    if (ok(s)) return s
    if (performance.now() > until) throw qmpError('timeout', `VM did not become ${what} within ${timeoutMs} ms (status ${s})`, { socket: q.path, status: s })
    await new Promise((r) => setTimeout(r, delay))
  }
}

function samePath(a: string, b: string): boolean {
  const real = (p: string) => {
    try {
      return fs.realpathSync(p)
    } catch {
      return path.resolve(p)
    }
  }
  return real(a) === real(b)
}

/** The memory-backend-file object whose mem-path is the RAM file; it must be share=on. */
async function findBackend(q: QmpClient, ram: string): Promise<{ id: string; path: string }> {
  const objs = await q.execute<{ name: string; type: string }[]>('qom-list', { path: '/objects' })
  for (const o of objs) {
    if (o.type !== 'child<memory-backend-file>') continue
    const p = await q.execute<string>('qom-get', { path: `/objects/${o.name}`, property: 'mem-path' })
    if (!samePath(p, ram)) continue
    const share = await q.execute<boolean>('qom-get', { path: `/objects/${o.name}`, property: 'share' })
    if (!share) throw new CkptError('CKPT_BAD_ARGUMENT', `memory backend ${o.name} (${ram}) is not share=on: the file does not hold guest memory`, { path: ram, backend: o.name })
    return { id: o.name, path: p }
  }
  throw new CkptError('CKPT_BAD_ARGUMENT', `the VM has no memory-backend-file with mem-path ${ram}`, { path: ram })
}

/** Receives one migration stream on a fresh unix socket. */
function streamSink(): { uri: string; data: Promise<Buffer>; close: () => void } {
  const sock = path.join(os.tmpdir(), `ckpt-qemu-${process.pid}-${randomBytes(6).toString('hex')}.sock`)
  const server = net.createServer()
  const data = new Promise<Buffer>((resolve, reject) => {
    server.once('error', reject)
    server.once('connection', (c) => {
      server.close()
      const parts: Buffer[] = []
      c.on('data', (d: Buffer) => parts.push(d))
      c.on('end', () => resolve(Buffer.concat(parts)))
      c.on('error', reject)
    })
  })
  data.catch(() => {})
  server.listen(sock)
  const close = () => {
    server.close()
    fs.rmSync(sock, { force: true })
  }
  return { uri: `unix:${sock}`, data, close }
}

async function waitMigration(q: QmpClient, timeoutMs: number, what: string): Promise<void> {
  const until = performance.now() + timeoutMs
  for (let delay = 0; ; delay = Math.min(10, delay + 1)) {
    const m = await q.execute<{ status?: string; 'error-desc'?: string }>('query-migrate')
    if (m.status === 'completed') return
    if (m.status === 'failed' || m.status === 'cancelled') {
      throw qmpError('error', `${what} failed: ${m['error-desc'] ?? m.status}`, { socket: q.path, status: m.status, desc: m['error-desc'] })
    }
    if (performance.now() > until) throw qmpError('timeout', `${what} did not complete within ${timeoutMs} ms (status ${m.status})`, { socket: q.path, status: m.status })
    await new Promise((r) => setTimeout(r, delay))
  }
}

async function saveDeviceState(q: QmpClient, timeoutMs: number): Promise<Buffer> {
  await q.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] })
  const sink = streamSink()
  try {
    await q.execute('migrate', { uri: sink.uri })
    await waitMigration(q, timeoutMs, 'device-state migration')
    return await withTimeout(sink.data, timeoutMs, () => qmpError('timeout', 'device-state stream did not end', { socket: q.path }))
  } finally {
    sink.close()
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, err: () => Error): Promise<T> {
  let timer: NodeJS.Timeout
  return Promise.race([p, new Promise<never>((_, rej) => (timer = setTimeout(() => rej(err()), ms)))]).finally(() => clearTimeout(timer))
}

/** Per disk: whether its dirty bitmap says it was written since the last checkpoint; bitmaps cleared (or added) while stopped. */
async function queryDisks(q: QmpClient, tl: Timeline, state: VmState, disks: [string, string][], valid: boolean, opts: QemuCheckpointOptions) {
  const blocks = await q.execute<BlockInfo[]>('query-block')
  const bmName = bitmapName(tl)
  const scanDisks: string[] = []
  const skipped: string[] = []
  const info: QemuInfo['disks'] = {}
  const cleared: string[] = []
  for (const [name, p] of disks) {
    const dev = blocks.find((b) => b.inserted && (b.inserted.file && samePath(b.inserted.file, p)))
    info[name] = {
      region: diskRegion(name),
      size: fileSize(p),
      chunkSize: QEMU_CLUSTER,
      path: p,
      device: dev?.device || dev?.inserted?.['node-name'],
      format: dev?.inserted?.image?.format ?? dev?.inserted?.drv,
      carried: false,
    }
    const node = dev?.device || dev?.inserted?.['node-name']
    if (!node || opts.dirtyBitmaps === false) {
      scanDisks.push(name)
      continue
    }
    const bm = (dev!.inserted!['dirty-bitmaps'] ?? dev!['dirty-bitmaps'] ?? []).find((b) => b.name === bmName)
    if (valid && state.bitmaps.has(name) && bm && bm.count === 0) {
      skipped.push(diskRegion(name))
      info[name]!.carried = true
      continue
    }
    if (bm) await q.execute('block-dirty-bitmap-clear', { node, name: bmName })
    else await q.execute('block-dirty-bitmap-add', { node, name: bmName, granularity: QEMU_CLUSTER, persistent: false })
    cleared.push(name)
    scanDisks.push(name)
  }
  return { info, scanDisks, skipped, cleared }
}

/** The device-state stream (a migration with x-ignore-shared), or the one saved before for a VM that has not run since. */
async function deviceState(q: QmpClient, state: VmState, statusBefore: string, timeoutMs: number): Promise<Buffer> {
  // QEMU refuses to migrate a VM again before it ran ("paused due to previous migration"); it has
  // not run since, so its device state is still the one saved then
  if (statusBefore !== 'postmigrate') return (state.devState = await saveDeviceState(q, timeoutMs))
  if (!state.devState) {
    throw qmpError('state', 'the VM is in postmigrate (migrated while paused, not continued since) and this process did not save its device state: cont it first, or pass deviceState: false', {
      socket: q.path,
      status: statusBefore,
    })
  }
  return state.devState
}

/** What qemu.json says of this checkpoint. */
function qemuInfo(
  q: QmpClient,
  vm: QemuVm,
  state: VmState,
  c: { machine: string; statusBefore: string; vtime: bigint | number; disks: QemuInfo['disks']; dev: Buffer | undefined; opts: QemuCheckpointOptions },
): QemuInfo {
  const vinfo = q.greeting.version.qemu
  return {
    format: QEMU_FORMAT,
    version: QEMU_FORMAT_VERSION,
    qemu: { version: `${vinfo.major}.${vinfo.minor}.${vinfo.micro}`, package: q.greeting.version.package },
    machine: c.machine,
    status: c.statusBefore,
    vtime: BigInt(c.vtime).toString(),
    vtimeSource: c.opts.vtimeSource ?? 'caller',
    hostTime: new Date().toISOString(),
    ram: { region: QEMU_RAM_REGION, size: fileSize(vm.ram), chunkSize: QEMU_PAGE, path: vm.ram, backend: state.backend!.id },
    disks: c.disks,
    deviceState: c.dev ? { blob: QEMU_DEVSTATE_BLOB, bytes: c.dev.length, capabilities: ['x-ignore-shared'] } : null,
    ...(c.opts.commandLine ? { commandLine: c.opts.commandLine } : {}),
  }
}

/**
 * The checkpoint's region inputs: scan mode hands over the files; shadow mode diffs each file against
 * its shadow copy (dirty chunks), or reads it whole into a new shadow the first time.
 */
function regionInputs(mode: 'scan' | 'shadow', state: VmState, files: [string, string, number][], deltas: boolean) {
  const regions: Record<string, RegionInput> = {}
  let fullShadow = false
  const dirtyChunks: Record<string, number> = {}
  for (const [region, file, chunkSize] of files) {
    if (mode === 'scan') {
      regions[region] = { data: file }
      continue
    }
    const shadow = state.shadows.get(region)
    if (shadow && shadow.length === fileSize(file)) {
      // with the chunks' previous bytes: the store keeps a changed page as a delta of its last version
      const { dirty, previous } = refreshShadow(file, shadow, chunkSize)
      dirtyChunks[region] = dirty.length
      regions[region] = deltas ? { data: shadow, dirty, previous } : { data: shadow, dirty }
    } else {
      // first time: the whole file into a shadow, scanned in full without a copy (stable); the
      // next checkpoint waits for this one before it touches the shadow
      const b = readWhole(file, fileSize(file))
      state.shadows.set(region, b)
      regions[region] = { data: b, stable: true }
      fullShadow = true
    }
  }
  return { regions, fullShadow, dirtyChunks }
}

/** Whether the bitmaps and shadows still describe the timeline's head; void (cleared) when the timeline moved without this adapter or a checkpoint failed. */
function stillValid(state: VmState, tl: Timeline): boolean {
  const valid = state.lastVtime !== undefined && state.lastVtime === tl.lastVtime
  if (!valid) {
    state.bitmaps.clear()
    state.shadows.clear()
  }
  return valid
}

/** A function returning the ms since it was last called (or created). */
function lapTimer(): () => number {
  let t = performance.now()
  return () => {
    const now = performance.now()
    const d = now - t
    t = now
    return d
  }
}

/** The VM's status, refused while a migration or snapshot runs. */
async function checkpointableStatus(q: QmpClient): Promise<string> {
  const s = await status(q)
  if (s === 'inmigrate' || s === 'finish-migrate' || s === 'save-vm' || s === 'restore-vm') {
    throw qmpError('state', `cannot checkpoint a VM in state ${s}`, { socket: q.path, status: s })
  }
  return s
}

/**
 * One checkpoint of a running (or paused) QEMU: see the file comment. The VM is resumed afterwards
 * when it was running, also when the checkpoint fails (unless the QMP connection itself is gone).
 */
export async function checkpointQemu(tl: Timeline, vm: QemuVm, vtime: bigint | number, opts: QemuCheckpointOptions = {}): Promise<QemuCheckpointResult> {
  const timeoutMs = opts.timeoutMs ?? 10_000
  const mode = opts.mode ?? 'scan'
  if (mode !== 'scan' && mode !== 'shadow') throw new CkptError('CKPT_BAD_ARGUMENT', `mode must be scan or shadow, not ${String(mode)}`, { mode })
  const disks = Object.entries(vm.disks ?? {})
  for (const [name] of disks) diskRegion(name)
  const state = stateOf(tl, vm)
  const valid = stillValid(state, tl)
  const q = opts.qmp ?? (await QmpClient.connect(vm.qmp, { timeoutMs }))
  const phases = { stop: 0, query: 0, deviceState: 0, regions: 0, resume: 0 }
  const lap = lapTimer()
  let statusBefore = ''
  let stoppedAt = 0
  let resumed = false
  let shouldResume = false
  let succeeded = false
  try {
    statusBefore = await checkpointableStatus(q)
    shouldResume = opts.resume === true || ((opts.resume ?? 'auto') === 'auto' && statusBefore === 'running')
    const machine = (state.machine ??= (await q.execute<string>('qom-get', { path: '/machine', property: 'type' })).replace(/-machine$/, ''))
    state.backend ??= await findBackend(q, vm.ram)
    // a first full scan of a shadow still running reads the shadow: wait (before stopping the VM)
    if (state.inflight) await state.inflight.catch(() => {})
    state.inflight = undefined
    lap()
    stoppedAt = performance.now()
    if (statusBefore === 'running') {
      await q.execute('stop')
      await waitStatus(q, (s) => STOPPED.has(s), 'paused', timeoutMs)
    }
    phases.stop = lap()

    const { info, scanDisks, skipped, cleared } = await queryDisks(q, tl, state, disks, valid, opts)
    phases.query = lap()
    const dev = opts.deviceState === false ? undefined : await deviceState(q, state, statusBefore, timeoutMs)
    if (opts.onPaused) await opts.onPaused()
    phases.deviceState = lap()

    const qinfo = qemuInfo(q, vm, state, { machine, statusBefore, vtime, disks: info, dev, opts })
    const files: [string, string, number][] = [[QEMU_RAM_REGION, vm.ram, QEMU_PAGE], ...scanDisks.map((n): [string, string, number] => [diskRegion(n), vm.disks![n]!, QEMU_CLUSTER])]
    const { regions, fullShadow, dirtyChunks } = regionInputs(mode, state, files, opts.chunkDeltas !== false)
    const blobs: Record<string, Uint8Array> = { ...opts.blobs, [QEMU_INFO_BLOB]: Buffer.from(JSON.stringify(qinfo, null, 1)) }
    if (dev) blobs[QEMU_DEVSTATE_BLOB] = dev
    const meta: Record<string, string> = {
      'qemu.version': qinfo.qemu.version,
      'qemu.machine': machine,
      'qemu.status': statusBefore,
      'qemu.vtime-source': qinfo.vtimeSource,
      ...opts.meta,
    }
    // the adapter's view is void until this one succeeds
    state.lastVtime = undefined
    const pending = tl.checkpoint({ vtime, regions, blobs, meta })
    pending.catch(() => {})
    if (fullShadow) state.inflight = pending
    // files must not change until durable; shadows only until their dirty chunks are copied
    if (mode === 'scan') await pending
    else await pending.copied
    phases.regions = lap()
    if (shouldResume) {
      await q.execute('cont')
      await waitStatus(q, (s) => s === 'running', 'running', timeoutMs)
      resumed = true
    }
    phases.resume = lap()
    const pauseMs = performance.now() - stoppedAt
    const checkpoint = await pending
    for (const n of cleared) state.bitmaps.add(n)
    state.lastVtime = checkpoint.vtime
    succeeded = true
    return {
      checkpoint,
      pauseMs,
      phases,
      scanned: files.map((f) => f[0]),
      skipped,
      dirtyChunks,
      deviceStateBytes: dev?.length ?? 0,
      statusBefore,
      resumed,
    }
  } finally {
    if (!succeeded) {
      state.lastVtime = undefined
      state.bitmaps.clear()
      state.shadows.clear()
    }
    if (shouldResume && !resumed && !q.closed) {
      try {
        await q.execute('cont')
      } catch {}
    }
    if (!opts.qmp) q.close()
  }
}

export interface QemuRestoreResult {
  info: QemuInfo
  ram: string
  disks: Record<string, string>
  /** path the device-state stream was written to, if the checkpoint has one */
  deviceState?: string
  bytes: number
}

/**
 * Writes a checkpoint's RAM file, disks (those vm.disks names; all of the checkpoint's must be named)
 * and device-state stream back to files, byte-identical and sparse where the regions have holes.
 * The VM must not be running on these files.
 */
export async function restoreQemu(store: CkptStore, ref: string | Parameters<CkptStore['restore']>[0], vm: Pick<QemuVm, 'ram' | 'disks' | 'deviceState'>): Promise<QemuRestoreResult> {
  const info = await readQemuInfo(store, ref)
  let bytes = (await store.restore(ref, info.ram.region, vm.ram)).bytesWritten
  const disks: Record<string, string> = {}
  for (const name of Object.keys(info.disks)) {
    const p = vm.disks?.[name]
    if (!p) throw new CkptError('CKPT_BAD_ARGUMENT', `checkpoint has disk ${name}: give its path in vm.disks`, { disk: name })
    bytes += (await store.restore(ref, info.disks[name]!.region, p)).bytesWritten
    disks[name] = p
  }
  for (const name of Object.keys(vm.disks ?? {})) {
    if (!info.disks[name]) throw new CkptError('CKPT_UNKNOWN_REGION', `checkpoint has no disk ${name}`, { disk: name, region: diskRegion(name) })
  }
  let deviceState: string | undefined
  if (info.deviceState) {
    deviceState = vm.deviceState ?? `${vm.ram}.devstate`
    const b = await store.readBlob(ref, info.deviceState.blob)
    try {
      replaceFileSync(deviceState, (tmp) => fs.writeFileSync(tmp, b))
    } catch (err) {
      throw new CkptError('CKPT_IO', `cannot write ${deviceState}: ${(err as Error).message}`, { path: deviceState }, err)
    }
    bytes += b.length
  }
  return { info, ram: vm.ram, disks, deviceState, bytes }
}

/** The qemu.json blob of a checkpoint the adapter wrote. */
export async function readQemuInfo(store: CkptStore, ref: string | Parameters<CkptStore['restore']>[0]): Promise<QemuInfo> {
  const raw = await store.readBlob(ref, QEMU_INFO_BLOB)
  let info: QemuInfo
  try {
    info = JSON.parse(Buffer.from(raw).toString('utf8'))
  } catch (err) {
    throw new CkptError('CKPT_BAD_MANIFEST', `${QEMU_INFO_BLOB} is not JSON`, { blob: QEMU_INFO_BLOB }, err)
  }
  if (info.format !== QEMU_FORMAT) throw new CkptError('CKPT_BAD_MANIFEST', `${QEMU_INFO_BLOB} is not a ${QEMU_FORMAT} record`, { blob: QEMU_INFO_BLOB })
  if (info.version !== QEMU_FORMAT_VERSION) throw new CkptError('CKPT_VERSION', `${QEMU_INFO_BLOB} has version ${info.version}, this adapter reads ${QEMU_FORMAT_VERSION}`, { version: info.version })
  return info
}

/**
 * Resumes a QEMU started with qemuCommandLine({ incoming: true }) (`-incoming defer`) on restored
 * files: loads the device-state stream (migrate-incoming with x-ignore-shared, RAM from the file) and,
 * unless `paused`, continues the VM.
 */
export async function resumeQemu(vm: Pick<QemuVm, 'qmp' | 'ram' | 'deviceState'>, opts: QmpOptions & { qmp?: QmpClient; paused?: boolean; deviceState?: Uint8Array } = {}): Promise<{ ms: number }> {
  const timeoutMs = opts.timeoutMs ?? 10_000
  const t0 = performance.now()
  const stream = opts.deviceState ?? readFile(vm.deviceState ?? `${vm.ram}.devstate`)
  const q = opts.qmp ?? (await QmpClient.connect(vm.qmp, { timeoutMs }))
  try {
    const s = await status(q)
    if (s !== 'inmigrate') throw qmpError('state', `VM is ${s}, not waiting for an incoming migration (start it with -incoming defer)`, { socket: q.path, status: s })
    await q.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] })
    const sock = path.join(os.tmpdir(), `ckpt-qemu-in-${process.pid}-${randomBytes(6).toString('hex')}.sock`)
    try {
      await q.execute('migrate-incoming', { uri: `unix:${sock}` })
      await new Promise<void>((resolve, reject) => {
        const c = net.connect(sock)
        c.once('error', (err) => reject(qmpError('connect', `cannot feed the incoming migration: ${err.message}`, { socket: sock }, err)))
        c.end(stream, () => resolve())
      })
      await waitMigration(q, timeoutMs, 'incoming migration')
    } finally {
      fs.rmSync(sock, { force: true })
    }
    if (!opts.paused) {
      await q.execute('cont')
      await waitStatus(q, (x) => x === 'running', 'running', timeoutMs)
    }
    return { ms: performance.now() - t0 }
  } finally {
    if (!opts.qmp) q.close()
  }
}

function readFile(p: string): Buffer {
  try {
    return fs.readFileSync(p)
  } catch (err) {
    throw new CkptError('CKPT_NOT_FOUND', `cannot read ${p}`, { path: p }, err)
  }
}

export interface QemuCommandOptions {
  /** RAM size in bytes (default: the RAM file's size); a multiple of 1 MiB */
  memory?: number
  /** default 'pc' (a resume must use the exact type the checkpoint recorded, e.g. pc-i440fx-7.2) */
  machine?: string
  /** default 'tcg' */
  accel?: string
  kernel?: string
  initrd?: string
  append?: string
  /** serial port: a file path (`-serial file:PATH`); default none */
  serial?: string
  /** start stopped (-S) */
  paused?: boolean
  /** wait for a device-state stream (-incoming defer), for resumeQemu() */
  incoming?: boolean
  /** the disk interface (default virtio) */
  diskInterface?: string
  /** default qemu-system-x86_64 */
  binary?: string
  extra?: string[]
}

/** QEMU's option syntax doubles commas inside values. */
function optValue(v: string): string {
  return v.replace(/,/g, ',,')
}

/**
 * The exact argv (binary first) for a headless guest this adapter can checkpoint: RAM as a share=on
 * memory-backend-file on vm.ram, raw disks with `id=NAME`, QMP on vm.qmp.
 */
export function qemuCommandLine(vm: Pick<QemuVm, 'qmp' | 'ram' | 'disks'>, opts: QemuCommandOptions = {}): string[] {
  const memory = opts.memory ?? fileSize(vm.ram)
  if (!Number.isSafeInteger(memory) || memory <= 0 || memory % (1 << 20) !== 0) {
    throw new CkptError('CKPT_BAD_ARGUMENT', `memory must be a positive multiple of 1 MiB, not ${memory}`, { memory })
  }
  const mib = memory >> 20
  const argv = [
    opts.binary ?? 'qemu-system-x86_64',
    '-accel', opts.accel ?? 'tcg',
    '-machine', `${opts.machine ?? 'pc'},memory-backend=ram0`,
    '-m', `${mib}M`,
    '-object', `memory-backend-file,id=ram0,size=${mib}M,mem-path=${optValue(vm.ram)},share=on`,
    '-nodefaults', '-no-user-config', '-display', 'none',
    '-qmp', `unix:${optValue(vm.qmp)},server=on,wait=off`,
  ]
  if (opts.serial) argv.push('-serial', `file:${opts.serial}`)
  if (opts.kernel) argv.push('-kernel', opts.kernel)
  if (opts.initrd) argv.push('-initrd', opts.initrd)
  if (opts.append) argv.push('-append', opts.append)
  for (const [name, p] of Object.entries(vm.disks ?? {})) {
    diskRegion(name)
    argv.push('-drive', `file=${optValue(p)},format=raw,if=${opts.diskInterface ?? 'virtio'},id=${name}`)
  }
  if (opts.paused) argv.push('-S')
  if (opts.incoming) argv.push('-incoming', 'defer')
  argv.push(...(opts.extra ?? []))
  return argv
}

/** argv as one shell line (single-quoted where needed). */
export function formatCommandLine(argv: string[]): string {
  return argv.map((a) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ')
}
