/**
 * Records a real QEMU guest with the QEMU adapter (bench/qemu-recording.ts): the Linux guest of .guest/
 * booted on a 256 MiB RAM file and a 64 MiB raw disk, checkpointed `n` times in shadow mode from the
 * moment QMP answers. At each checkpoint, while the VM is stopped, the recorder reads the files itself
 * and reports what changed since the previous checkpoint (against zeros at first): the page and cluster
 * indexes with their bytes, and the blobs the adapter stored.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { checkpointQemu, openQemuTimeline, QmpClient, qemuCommandLine, readQemuInfo, type Checkpoint, type CkptStore } from '../src/index.js'

export interface Step {
  vtime: bigint
  /** changed 4 KiB pages of the RAM file, and their bytes in that order */
  ram: number[]
  ramBytes: Buffer
  /** changed 64 KiB clusters of the disk, and their bytes */
  disk: number[]
  diskBytes: Buffer
  blobs: Record<string, Uint8Array>
  meta: Record<string, string>
}

const RAM_MIB = Number(process.env.BENCH_REC_RAM_MIB ?? 256)
const DISK_MIB = 64
const INTERVAL = Number(process.env.BENCH_REC_INTERVAL_MS ?? 250)

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const exited = (p: ChildProcess) => new Promise((r) => (p.exitCode !== null ? r(null) : p.once('exit', r)))
const ticks = (f: string) => (fs.existsSync(f) ? [...fs.readFileSync(f, 'latin1').matchAll(/tick (\d+) /g)].length : 0)

/** A file read whole at each checkpoint and compared with the previous read (zeros at first). */
class FileDiff {
  private readonly prev: Buffer
  private readonly cur: Buffer
  constructor(
    readonly file: string,
    readonly unit: number,
  ) {
    this.cur = Buffer.alloc(fs.statSync(file).size)
    this.prev = Buffer.alloc(this.cur.length)
  }
  read(): void {
    const fd = fs.openSync(this.file, 'r')
    try {
      for (let at = 0; at < this.cur.length; ) {
        const n = fs.readSync(fd, this.cur, at, this.cur.length - at, at)
        if (n <= 0) throw new Error(`short read of ${this.file}`)
        at += n
      }
    } finally {
      fs.closeSync(fd)
    }
  }
  /** the units that changed since the last diff, with their bytes; the new content becomes the previous */
  diff(): { idx: number[]; bytes: Buffer } {
    const { cur, prev, unit } = this
    const idx: number[] = []
    for (let at = 0; at < cur.length; at += unit) if (cur.compare(prev, at, at + unit, at, at + unit) !== 0) idx.push(at / unit)
    const bytes = Buffer.alloc(idx.length * unit)
    idx.forEach((u, k) => cur.copy(bytes, k * unit, u * unit, (u + 1) * unit))
    cur.copy(prev)
    return { idx, bytes }
  }
}

function guestBoot() {
  const guestDir = [process.env.CKPT_GUEST_DIR, '.guest'].find((d) => d && fs.existsSync(path.join(d, 'vmlinuz')))
  if (spawnSync('sh', ['-c', 'command -v qemu-system-x86_64']).status !== 0) {
    console.error('bench/qemu-recording: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)')
    process.exit(1)
  }
  if (!guestDir) {
    console.error('bench/qemu-recording: no guest: run node scripts/fetch-guest.mjs (writes .guest/) or set CKPT_GUEST_DIR')
    process.exit(1)
  }
  return { kernel: path.join(guestDir, 'vmlinuz'), initrd: path.join(guestDir, 'initramfs.cpio.gz'), append: 'console=ttyS0 quiet loglevel=3 nokaslr mitigations=off' }
}

/** Runs the recording into timeline `rec` of the store; `onStep` sees each checkpoint as it lands. */
export async function recordQemu(
  store: CkptStore,
  dir: string,
  n: number,
  onStep: (i: number, step: Step, c: Checkpoint) => void,
): Promise<{ note: string; ramBytes: number; diskBytes: number }> {
  const boot = guestBoot()
  fs.mkdirSync(dir, { recursive: true })
  const vm = { qmp: path.join(dir, 'qmp.sock'), ram: path.join(dir, 'ram.bin'), disks: { d0: path.join(dir, 'disk.raw') } }
  fs.writeFileSync(vm.ram, '')
  fs.truncateSync(vm.ram, RAM_MIB << 20)
  fs.writeFileSync(vm.disks.d0, '')
  fs.truncateSync(vm.disks.d0, DISK_MIB << 20)
  const serial = path.join(dir, 'serial.log')
  const argv = qemuCommandLine(vm, { ...boot, serial })
  const proc = spawn(argv[0]!, argv.slice(1), { stdio: 'ignore' })
  const t0 = performance.now()
  while (!fs.existsSync(vm.qmp)) {
    if (performance.now() - t0 > 30_000) throw new Error('QEMU did not open its QMP socket in 30 s')
    await sleep(20)
  }
  const q = await QmpClient.connect(vm.qmp)
  const tl = await openQemuTimeline(store, 'rec', vm)
  const ram = new FileDiff(vm.ram, 4096)
  const disk = new FileDiff(vm.disks.d0, 65536)
  const pauses: number[] = []
  const hostT0 = process.hrtime.bigint()
  try {
    for (let i = 0; i < n; i++) {
      if (i % 4 === 3) await q.execute('human-monitor-command', { 'command-line': `qemu-io d0 "write -P ${(i % 250) + 1} ${((i * 7) % DISK_MIB) << 20} 1M"` })
      const vtime = process.hrtime.bigint() - hostT0
      const r = await checkpointQemu(tl, vm, vtime, {
        qmp: q,
        mode: 'shadow',
        vtimeSource: 'host-monotonic-ns',
        onPaused: () => {
          ram.read()
          disk.read()
        },
      })
      pauses.push(r.pauseMs)
      const ref = r.checkpoint.cid.toString()
      const blobs: Record<string, Uint8Array> = { 'qemu.json': await store.readBlob(ref, 'qemu.json'), 'qemu.devstate': await store.readBlob(ref, 'qemu.devstate') }
      const info = await readQemuInfo(store, ref)
      const meta = { 'qemu.version': info.qemu.version, 'qemu.machine': info.machine, 'qemu.status': info.status, 'qemu.vtime-source': info.vtimeSource }
      const rd = ram.diff()
      const dd = disk.diff()
      onStep(i, { vtime, ram: rd.idx, ramBytes: rd.bytes, disk: dd.idx, diskBytes: dd.bytes, blobs, meta }, r.checkpoint)
      await sleep(INTERVAL)
    }
  } finally {
    await q.execute('quit').catch(() => {})
    q.close()
    await exited(proc)
  }
  const qv = spawnSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0]
  const note =
    `${qv}, TCG; guest i386 Linux 6.1 + busybox (.guest/, its /init loop), ${RAM_MIB} MiB RAM, ${DISK_MIB} MiB raw disk (1 MiB written every 4th step via qemu-io); ` +
    `checkpointQemu in shadow mode with the device state from boot on, ${INTERVAL} ms apart, pause median ${median(pauses).toFixed(0)} ms (the bench's own read of the files included); the guest reached tick ${ticks(serial)}`
  return { note, ramBytes: RAM_MIB << 20, diskBytes: DISK_MIB << 20 }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s.length ? s[Math.floor(s.length / 2)]! : NaN
}
