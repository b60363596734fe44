/**
 * The QEMU adapter on a real guest (i386 Linux + busybox from .guest/, TCG), against QEMU's own way of
 * saving a VM in the same run: a full migration stream to a file (what `savevm` writes, RAM included).
 *
 *   node scripts/fetch-guest.mjs && npm run build && node dist/bench/qemu.js
 *
 * For each mode (`scan`, `shadow`) a fresh guest (256 MiB RAM, 64 MiB raw disk, 1 MiB written to the
 * disk every other step through QEMU's block layer) is checkpointed N times, 500 ms apart while its
 * workload runs; then the baseline saves the same guest N times with `migrate "exec:cat > FILE"`.
 * Reports pause and commit times, bytes stored vs the baseline's, and a restore + resume of the middle
 * checkpoint into a new QEMU (the guest must go on at the next tick). Writes bench/results/qemu.md.
 * Env: BENCH_QEMU_CHECKPOINTS (default 20), CKPT_GUEST_DIR.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { checkpointQemu, openQemuTimeline, openStore, QmpClient, qemuCommandLine, readQemuInfo, restoreQemu, resumeQemu } from '../src/index.js'
import { fmtBytes, median, quantile, table, dirBytes } from './stats.js'

const N = Number(process.env.BENCH_QEMU_CHECKPOINTS ?? 20)
const RAM_MIB = 256
const guestDir = [process.env.CKPT_GUEST_DIR, '.guest'].find((d) => d && fs.existsSync(path.join(d, 'vmlinuz')))
if (spawnSync('sh', ['-c', 'command -v qemu-system-x86_64']).status !== 0) {
  console.error('bench/qemu: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)')
  process.exit(1)
}
if (!guestDir) {
  console.error('bench/qemu: no guest: run node scripts/fetch-guest.mjs (writes .guest/) or set CKPT_GUEST_DIR')
  process.exit(1)
}
const boot = {
  kernel: path.join(guestDir, 'vmlinuz'),
  initrd: path.join(guestDir, 'initramfs.cpio.gz'),
  append: 'console=ttyS0 quiet loglevel=3 nokaslr mitigations=off',
}
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ckpt-bench-qemu-'))
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const read = (f: string) => (fs.existsSync(f) ? fs.readFileSync(f, 'latin1') : '')
const ticks = (text: string) => [...text.matchAll(/tick (\d+) /g)].map((m) => Number(m[1]))
const exited = (p: ChildProcess) => new Promise((r) => (p.exitCode !== null ? r(null) : p.once('exit', r)))

interface Vm {
  vm: { qmp: string; ram: string; disks: { d0: string } }
  serial: string
  argv: string[]
  proc: ChildProcess
  q: QmpClient
}
async function startGuest(dir: string): Promise<Vm> {
  fs.mkdirSync(dir, { recursive: true })
  const vm = { qmp: path.join(dir, 'qmp.sock'), ram: path.join(dir, 'ram.bin'), disks: { d0: path.join(dir, 'disk.raw') } }
  fs.writeFileSync(vm.ram, '')
  fs.truncateSync(vm.ram, RAM_MIB << 20)
  fs.writeFileSync(vm.disks.d0, '')
  fs.truncateSync(vm.disks.d0, 64 << 20)
  const serial = path.join(dir, 'serial.log')
  const argv = qemuCommandLine(vm, { ...boot, serial })
  const proc = spawn(argv[0]!, argv.slice(1), { stdio: 'ignore' })
  const t = performance.now()
  while (ticks(read(serial)).length < 2) {
    if (performance.now() - t > 120_000) throw new Error(`guest did not reach its workload in 120 s (${serial})`)
    await sleep(100)
  }
  const q = await QmpClient.connect(vm.qmp)
  return { vm, serial, argv, proc, q }
}
async function stopGuest(g: Vm): Promise<void> {
  await g.q.execute('quit').catch(() => {})
  g.q.close()
  await exited(g.proc)
}
const diskWrite = (g: Vm, i: number) => g.q.execute('human-monitor-command', { 'command-line': `qemu-io d0 "write -P ${(i % 250) + 1} ${(i % 60) << 20} 1M"` })

const rows: string[][] = [['figure', 'scan', 'shadow']]
const results: Record<string, Record<string, number | string | boolean>> = {}
for (const mode of ['scan', 'shadow'] as const) {
  const g = await startGuest(path.join(root, mode))
  const store = await openStore(path.join(root, mode, 'store'))
  const tl = await openQemuTimeline(store, 'guest', g.vm)
  const pauses: number[] = []
  const commits: number[] = []
  const tickAt = new Map<bigint, number | undefined>()
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < N; i++) {
    if (i % 2 === 1) await diskWrite(g, i)
    const vtime = process.hrtime.bigint() - t0
    const r = await checkpointQemu(tl, g.vm, vtime, { qmp: g.q, mode, vtimeSource: 'host-monotonic-ns', onPaused: () => void tickAt.set(vtime, ticks(read(g.serial)).at(-1)) })
    if (i > 0) {
      pauses.push(r.pauseMs)
      commits.push(r.checkpoint.stats.commitMs)
    } else results[mode] = { firstPauseMs: r.pauseMs }
    await sleep(500)
  }
  const running = ((await g.q.execute('query-status')) as { status: string }).status
  await stopGuest(g)
  const storeBytes = dirBytes(path.join(root, mode, 'store'))
  // restore the middle checkpoint into new files, resume a new QEMU on them
  const entries: { vtime: bigint; cid: { toString(): string } }[] = []
  for await (const e of store.log('guest')) entries.push(e)
  const mid = entries[Math.floor(entries.length / 2)]!
  const back = { qmp: path.join(root, mode, 'qmp2.sock'), ram: path.join(root, mode, 'ram2.bin'), disks: { d0: path.join(root, mode, 'disk2.raw') } }
  const tr = performance.now()
  await restoreQemu(store, mid.cid.toString(), back)
  const restoreMs = performance.now() - tr
  const info = await readQemuInfo(store, mid.cid.toString())
  const serial2 = path.join(root, mode, 'serial2.log')
  const argv2 = qemuCommandLine(back, { ...boot, serial: serial2, machine: info.machine, incoming: true })
  const p2 = spawn(argv2[0]!, argv2.slice(1), { stdio: 'ignore' })
  while (!fs.existsSync(back.qmp)) await sleep(20)
  const { ms: resumeMs } = await resumeQemu(back)
  const tw = performance.now()
  while (ticks(read(serial2)).length < 1 && performance.now() - tw < 60_000) await sleep(100)
  const first = ticks(read(serial2))[0]
  const q2 = await QmpClient.connect(back.qmp)
  await q2.execute('quit').catch(() => {})
  q2.close()
  await exited(p2)
  await store.close()
  Object.assign(results[mode]!, {
    pauseMedian: median(pauses), pauseP90: quantile(pauses, 0.9), commitMedian: median(commits), storeBytes, restoreMs, resumeMs,
    resumedAtNextTick: first !== undefined && first === (tickAt.get(mid.vtime) ?? -2) + 1, runningAfter: running === 'running',
  })
}

// baseline: QEMU's own full save (the migration stream savevm writes, RAM included), same guest and steps
const base = await startGuest(path.join(root, 'baseline'))
const basePauses: number[] = []
let baseBytes = 0
for (let i = 0; i < N; i++) {
  if (i % 2 === 1) await diskWrite(base, i)
  const file = path.join(root, 'baseline', `save-${i}.bin`)
  const t = performance.now()
  await base.q.execute('stop')
  await base.q.execute('migrate', { uri: `exec:cat > ${file}` })
  for (;;) {
    const s = (await base.q.execute('query-migrate')) as { status?: string }
    if (s.status === 'completed') break
    if (s.status === 'failed' || s.status === 'cancelled') throw new Error(`baseline migrate ${s.status}`)
    await sleep(2)
  }
  await base.q.execute('cont')
  if (i > 0) basePauses.push(performance.now() - t)
  // a savevm-style save also copies the disk: its changed part is what a qcow2 overlay would hold
  baseBytes += fs.statSync(file).size
  await sleep(500)
}
await stopGuest(base)

const fmt = (v: number) => v.toFixed(0)
const both = (f: (r: Record<string, number | string | boolean>) => string) => [f(results.scan!), f(results.shadow!)]
rows.push(['checkpoints (guest running 500 ms between)', String(N), String(N)])
rows.push(['first checkpoint pause ms (all of RAM)', ...both((r) => fmt(r.firstPauseMs as number))])
rows.push(['pause ms, median / p90 (after the first)', ...both((r) => `${fmt(r.pauseMedian as number)} / ${fmt(r.pauseP90 as number)}`)])
rows.push(['commit ms, median', ...both((r) => fmt(r.commitMedian as number))])
rows.push(['store bytes, all checkpoints (RAM, disk, device state)', ...both((r) => fmtBytes(r.storeBytes as number))])
rows.push(['VM running after the checkpoints (query-status)', ...both((r) => String(r.runningAfter))])
rows.push(['restore of the middle checkpoint ms / resume ms', ...both((r) => `${fmt(r.restoreMs as number)} / ${fmt(r.resumeMs as number)}`)])
rows.push(['resumed guest goes on at the next tick', ...both((r) => String(r.resumedAtNextTick))])
const md = [
  '# QEMU adapter bench',
  '',
  `\`node dist/bench/qemu.js\` on ${os.cpus().length} cores, node ${process.version}, ${spawnSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0]}, TCG; guest: i386 Linux 6.1 + busybox, ${RAM_MIB} MiB RAM, 64 MiB raw disk (1 MiB written every other step), ${new Date().toISOString().slice(0, 10)}.`,
  '',
  table(rows),
  '',
  `Baseline in the same run, QEMU's own full save (\`stop\`, \`migrate "exec:cat > FILE"\` with RAM, \`cont\`: what \`savevm\` writes for RAM and devices, disks not included): pause median ${fmt(median(basePauses))} ms (p90 ${fmt(quantile(basePauses, 0.9))}), ${fmtBytes(baseBytes)} for ${N} saves (${fmtBytes(baseBytes / N)} each).`,
  '',
]
fs.mkdirSync(path.join(import.meta.dirname, '..', '..', 'bench', 'results'), { recursive: true })
fs.writeFileSync(path.join(import.meta.dirname, '..', '..', 'bench', 'results', 'qemu.md'), md.join('\n'))
console.log(md.join('\n'))
fs.rmSync(root, { recursive: true, force: true })
