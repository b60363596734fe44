// QEMU: checkpoint a running Linux guest every second over QMP, shut it down, restore a mid-run
// checkpoint into fresh files and resume the VM from it in a new QEMU — CPU, devices, RAM and disk.
//
//   npm run build && node examples/qemu.mjs [--mode scan|shadow] [--ram MiB] [--checkpoints N] [--disk-writes] [--dir DIR]
//
// Needs qemu-system-x86_64 (apt-get install qemu-system-x86) and the test guest (i386 Linux +
// busybox initramfs whose /init prints `tick N ...` on ttyS0): node scripts/fetch-guest.mjs, or
// CKPT_GUEST_DIR=DIR. Everything is written under --dir (default a fresh directory in /tmp).
import { spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {
  checkpointQemu,
  formatCommandLine,
  openQemuTimeline,
  openStore,
  qemuCommandLine,
  QmpClient,
  readQemuInfo,
  restoreQemu,
  resumeQemu,
} from 'ckpt'

const args = process.argv.slice(2)
const opt = (name, dflt) => {
  const i = args.indexOf(name)
  return i >= 0 ? args[i + 1] : dflt
}
const mode = opt('--mode', 'shadow')
const ramMiB = Number(opt('--ram', '256'))
const count = Number(opt('--checkpoints', '8'))
const dir = opt('--dir', fs.mkdtempSync(path.join(os.tmpdir(), 'ckpt-qemu-example-')))
const guestDir = [process.env.CKPT_GUEST_DIR, '.guest'].find((d) => d && fs.existsSync(path.join(d, 'vmlinuz')))
if (spawnSync('sh', ['-c', 'command -v qemu-system-x86_64']).status !== 0) {
  console.error('qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)')
  process.exit(1)
}
if (!guestDir) {
  console.error('no guest: run node scripts/fetch-guest.mjs (writes .guest/) or set CKPT_GUEST_DIR')
  process.exit(1)
}
const boot = {
  kernel: path.join(guestDir, 'vmlinuz'),
  initrd: path.join(guestDir, 'initramfs.cpio.gz'),
  append: 'console=ttyS0 quiet loglevel=3 nokaslr mitigations=off',
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const read = (f) => (fs.existsSync(f) ? fs.readFileSync(f, 'latin1') : '')
const ticks = (text) => [...text.matchAll(/tick (\d+) /g)].map((m) => Number(m[1]))

// ---- 1. the files and the exact command line
fs.mkdirSync(dir, { recursive: true })
const vm = { qmp: path.join(dir, 'qmp.sock'), ram: path.join(dir, 'ram.bin'), disks: { d0: path.join(dir, 'disk.raw') } }
fs.writeFileSync(vm.ram, '')
fs.truncateSync(vm.ram, ramMiB << 20) // sparse: the guest's untouched memory stays holes
fs.writeFileSync(vm.disks.d0, '')
fs.truncateSync(vm.disks.d0, 64 << 20)
const serial = path.join(dir, 'serial.log')
const argv = qemuCommandLine(vm, { ...boot, serial })
console.log(`$ ${formatCommandLine(argv)}`)
const qemu = spawn(argv[0], argv.slice(1), { stdio: 'inherit' })
while (ticks(read(serial)).length < 2) await sleep(100)
console.log(`guest running: ${read(serial).trim().split('\n').at(-1)}`)

// ---- 2. a checkpoint every second while the workload runs
const store = await openStore(path.join(dir, 'store'))
const tl = await openQemuTimeline(store, 'guest', vm)
const q = await QmpClient.connect(vm.qmp) // QEMU serves one QMP client at a time: share it
const t0 = process.hrtime.bigint()
const tickAt = new Map()
for (let i = 0; i < count; i++) {
  // --disk-writes: 1 MiB written through QEMU's block layer (the guest itself does not write its disk)
  if (args.includes('--disk-writes')) await q.execute('human-monitor-command', { 'command-line': `qemu-io d0 "write -P ${i + 1} ${i << 20} 1M"` })
  const vtime = process.hrtime.bigint() - t0 // host ns since the first checkpoint
  const r = await checkpointQemu(tl, vm, vtime, {
    qmp: q,
    mode,
    vtimeSource: 'host-monotonic-ns',
    commandLine: argv,
    onPaused: () => tickAt.set(vtime, ticks(read(serial)).at(-1)),
  })
  const s = r.checkpoint.stats
  console.log(
    `checkpoint ${i} vtime ${(Number(vtime) / 1e9).toFixed(2)} s: pause ${r.pauseMs.toFixed(0)} ms ` +
      `(stop ${r.phases.stop.toFixed(0)}, device state ${r.phases.deviceState.toFixed(0)} [${(r.deviceStateBytes / 1024).toFixed(0)} KiB], regions ${r.phases.regions.toFixed(0)}, cont ${r.phases.resume.toFixed(0)}), ` +
      `commit ${s.commitMs.toFixed(0)} ms, scanned ${r.scanned.join('+')}${r.skipped.length ? `, unchanged ${r.skipped.join('+')}` : ''}` +
      `${r.dirtyChunks.ram !== undefined ? `, ${r.dirtyChunks.ram} dirty pages` : ''}, guest at tick ${tickAt.get(vtime)}`,
  )
  await sleep(1000)
}
const status = await q.execute('query-status')
console.log(`after the checkpoints the VM is ${status.status}; last line: ${read(serial).trim().split('\n').at(-1)}`)
await q.execute('quit').catch(() => {})
q.close()
await new Promise((r) => qemu.once('exit', r))

// ---- 3. restore a mid-run checkpoint into fresh files
const entries = []
for await (const e of store.log('guest')) entries.push(e)
const mid = entries[Math.floor(entries.length / 2)]
const back = { qmp: path.join(dir, 'qmp2.sock'), ram: path.join(dir, 'ram2.bin'), disks: { d0: path.join(dir, 'disk2.raw') } }
const tr = performance.now()
const res = await restoreQemu(store, mid.cid, back)
console.log(
  `restored checkpoint @${mid.vtime} (tick ${tickAt.get(mid.vtime)}): ${(res.bytes / 2 ** 20).toFixed(1)} MiB written in ${(performance.now() - tr).toFixed(0)} ms ` +
    `(RAM file ${(fs.statSync(back.ram).blocks / 2048).toFixed(0)} MiB allocated of ${ramMiB}), device state ${res.info.deviceState?.bytes} B`,
)

// ---- 4. a new QEMU on the restored files, resumed from the device state (same machine type)
const info = await readQemuInfo(store, mid.cid)
const serial2 = path.join(dir, 'serial2.log')
const argv2 = qemuCommandLine(back, { ...boot, serial: serial2, machine: info.machine, incoming: true })
console.log(`$ ${formatCommandLine(argv2)}`)
const qemu2 = spawn(argv2[0], argv2.slice(1), { stdio: 'inherit' })
while (!fs.existsSync(back.qmp)) await sleep(20)
const { ms } = await resumeQemu(back)
console.log(`resumed in ${ms.toFixed(0)} ms (migrate-incoming with x-ignore-shared + cont)`)
while (ticks(read(serial2)).length < 3) await sleep(100)
const out = read(serial2)
console.log(`the resumed guest prints (no boot, no "WORKLOAD START"):\n${out.trim().split('\n').slice(0, 3).join('\n')}`)
const first = ticks(out)[0]
// the workload is deterministic: the resumed run prints what the original run printed for those ticks
const lines = (t) => new Map(t.split('\n').filter((l) => /^tick \d+ /.test(l)).map((l) => [ticks(l)[0], l.trim()]))
const orig = lines(read(serial))
const same = [...lines(out)].filter(([n, l]) => orig.has(n) && orig.get(n) === l).length
console.log(`${same} of the resumed guest's tick lines equal the original run's lines for the same ticks (LCG value and md5 of the history)`)
console.log(first === tickAt.get(mid.vtime) + 1 ? `OK: continues at tick ${first}, right after the checkpoint's tick ${tickAt.get(mid.vtime)}` : `MISMATCH: first tick ${first}, checkpoint at ${tickAt.get(mid.vtime)}`)
const q2 = await QmpClient.connect(back.qmp)
await q2.execute('quit').catch(() => {})
q2.close()
await new Promise((r) => qemu2.once('exit', r))
await store.close()
console.log(`files in ${dir}`)
process.exit(first === tickAt.get(mid.vtime) + 1 ? 0 : 1)
