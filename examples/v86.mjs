// Checkpoints of a running v86 guest, and a restore into a fresh emulator that carries on.
//
//   npm install && node scripts/fetch-guest.mjs      # once: Debian SeaBIOS, 686 kernel, busybox initramfs into .guest/
//   node examples/v86.mjs [--guest DIR] [--every MS] [--ticks N] [--store DIR]
//
// Boots Linux (v86 0.5.462, 128 MiB, JIT on), whose /init prints "tick N <lcg> <md5 of history>"
// on ttyS0 forever; from the first tick on it calls saveV86() every MS ms (default 500) until tick N
// (default 12). Then it restores a checkpoint from the middle of the run into a new emulator built
// without kernel or initrd (only the BIOS and the same memory sizes: RAM comes from the checkpoint),
// lets it run, and compares its serial output with what the first emulator printed after that
// checkpoint: the same bytes. Boot takes ~20 s on a 2-core machine.
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { openStore, restoreV86, saveV86, v86Regions } from 'ckpt'
import { V86 } from 'v86'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const arg = (name, def) => {
  const i = process.argv.indexOf(name)
  return i > 0 ? process.argv[i + 1] : def
}
const GUEST = path.resolve(arg('--guest', path.join(ROOT, '.guest')))
const EVERY = Number(arg('--every', 500))
const TICKS = Number(arg('--ticks', 12))
const STORE = arg('--store', fs.mkdtempSync(path.join(os.tmpdir(), 'ckpt-v86-example-')))
for (const f of ['bios.bin', 'vgabios-stdvga.bin', 'vmlinuz', 'initramfs.cpio.gz']) {
  if (!fs.existsSync(path.join(GUEST, f))) {
    console.error(`${path.join(GUEST, f)} is missing: run  node scripts/fetch-guest.mjs ${path.relative(process.cwd(), GUEST) || '.'}  first`)
    process.exit(1)
  }
}
const file = (f) => new Uint8Array(fs.readFileSync(path.join(GUEST, f))).buffer
const machine = {
  wasm_path: path.join(ROOT, 'node_modules/v86/build/v86.wasm'),
  memory_size: 128 << 20,
  vga_memory_size: 2 << 20,
  bios: { buffer: file('bios.bin') },
  vga_bios: { buffer: file('vgabios-stdvga.bin') },
}
const ready = (e) => new Promise((r) => e.add_listener('emulator-ready', r))
const t0 = performance.now()
const secs = () => ((performance.now() - t0) / 1000).toFixed(1).padStart(5) + ' s'

// --- run A: boot, checkpoint every EVERY ms -------------------------------------------------
const A = new V86({
  ...machine,
  bzimage: { buffer: file('vmlinuz') },
  initrd: { buffer: file('initramfs.cpio.gz') },
  cmdline: 'console=ttyS0 quiet loglevel=3 nokaslr mitigations=off tsc=reliable',
  autostart: true,
})
let serialA = ''
let lastTick = 0
const onTick = []
A.add_listener('serial0-output-byte', (b) => {
  serialA += String.fromCharCode(b)
  if (b === 10) {
    const m = /tick (\d+) /.exec(serialA.slice(serialA.lastIndexOf('\n', serialA.length - 2) + 1))
    if (m) {
      lastTick = Number(m[1])
      onTick.splice(0).forEach((f) => f())
    }
  }
})
const nextTick = () => new Promise((r) => onTick.push(r))
await ready(A)
console.log(`${secs()}  booting Linux in v86 (store ${STORE})`)
await nextTick()
console.log(`${secs()}  tick ${lastTick}: checkpointing every ${EVERY} ms until tick ${TICKS}`)

const store = await openStore(STORE)
const first = new Uint8Array(await A.save_state())
const tl = await store.timeline(`v86-${Date.now()}`, { regions: v86Regions(first) })
const cks = [] // { cid, vtime, serialAt, tick }
let busy = false
const take = async () => {
  if (busy) return // one at a time: a checkpoint takes a few 100 ms while the guest runs on
  busy = true
  const serialAt = serialA.length
  const tick = lastTick
  const vtime = BigInt(Math.round((performance.now() - t0) * 1e6)) // ns of wall time since start
  // the emulator as saveV86 sees it, keeping a hash of each state to check the restore against
  let sha
  const spy = { save_state: async () => { const s = await A.save_state(); sha = hash(s); return s }, restore_state: () => {} }
  const ck = await saveV86(tl, spy, vtime)
  cks.push({ cid: ck.cid, vtime, serialAt, tick, ck, sha })
  const d = ck.v86.dirty
  console.log(`${secs()}  checkpoint ${cks.length} at tick ${tick}: ${(ck.v86.stateBytes / 2 ** 20).toFixed(1)} MiB state, ` +
    `${d ? d.ram + ' dirty pages' : 'full scan'}, ${(ck.stats.newStoredBytes / 1024).toFixed(0)} KiB new, ` +
    `save_state ${ck.v86.ms.save.toFixed(0)} ms + split ${ck.v86.ms.split.toFixed(0)} ms + commit ${ck.v86.ms.commit.toFixed(0)} ms`)
  busy = false
}
await take()
const timer = setInterval(take, EVERY)
while (lastTick < TICKS) await nextTick()
clearInterval(timer)
while (busy) await new Promise((r) => setTimeout(r, 10))
await A.stop()
const endA = serialA.length
await A.destroy()

// --- run B: a fresh emulator from a mid-run checkpoint ---------------------------------------
const mid = cks[Math.floor(cks.length / 2)]
const expected = serialA.slice(mid.serialAt, endA)
console.log(`${secs()}  restoring checkpoint ${cks.indexOf(mid) + 1} (tick ${mid.tick}, ${mid.cid}) into a fresh emulator`)
const B = new V86({ ...machine, autostart: false })
await ready(B)
const state = await restoreV86(store, mid.cid, B)
console.log(`${secs()}  restored ${state.length} bytes, byte-identical to what save_state() returned: ${hash(state) === mid.sha}`)
let serialB = ''
B.add_listener('serial0-output-byte', (b) => (serialB += String.fromCharCode(b)))
await B.run()
while (serialB.length < expected.length) await new Promise((r) => setTimeout(r, 50))
await B.stop()
await B.destroy()
const same = serialB.slice(0, expected.length) === expected
console.log(`${secs()}  A printed after the checkpoint:\n${indent(expected)}`)
console.log(`${secs()}  B printed after restoring:\n${indent(serialB.slice(0, expected.length))}`)
console.log(`serial output after the checkpoint identical: ${same} (${expected.length} bytes)`)
const s = await store.stats()
console.log(`store: ${cks.length} checkpoints of ${(first.length / 2 ** 20).toFixed(1)} MiB states in ${(s.packBytes / 2 ** 20).toFixed(1)} MiB of packs`)
await store.close()
process.exit(same && hash(state) === mid.sha ? 0 : 1)

function hash(b) {
  return crypto.createHash('sha256').update(new Uint8Array(b.buffer ?? b, b.byteOffset ?? 0, b.byteLength)).digest('hex')
}

function indent(t) {
  return t.replace(/\r/g, '').trimEnd().split('\n').map((l) => '    ' + l).join('\n')
}
