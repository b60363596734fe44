// Reverse debugging a Linux guest in v86 with ckpt: step backwards, and find when memory last changed.
//
//   npm install && node scripts/fetch-guest.mjs      # once: Debian SeaBIOS, 686 kernel, busybox initramfs into .guest/
//   node examples/reverse-debug.mjs [--store DIR] [--guest DIR] [--steps 1200] [--every 100] [--back 75] [--watch ADDR[/LEN]]
//                                   [--boot-state FILE]   (keeps the booted state there; a later run starts from it)
//
// 1. Boots Linux in a child process (v86 with its JIT, real time: ~20-30 s) until the guest's /init
//    prints its first tick, and takes the state.
// 2. Records a deterministic run from there: one emulator, JIT off, driven step by step by the
//    adapter's virtual clock (v86Clock: one step = one main_loop() call, ~100k instructions; time =
//    instructions executed, idle time skipped), a checkpoint every --every steps (saveV86 with the
//    clock's state), keystrokes typed on ttyS0 at fixed steps (the inputs: a replay types them again at
//    the same steps), and for checking: a hash of the state at every step the reverse steps will stop
//    at, and the watched bytes at every step.
// 3. Reverse-step: from the end, --back steps back again and again: gotoV86() moves a store.cursor()
//    to the checkpoint at or before the target (writing only the chunks that differ) and loads it into
//    the same emulator, the clock replays forward to the target, and the state is compared with the
//    recorded run's.
// 4. Reverse-watch: the step at which the watched bytes (default: the kernel's jiffies counter, found
//    by a scan) last changed before the end: the tail is replayed, store.history() over the checkpoints
//    finds the interval, and a replay inside it the exact step, compared with the recorded run's.
import { spawnSync } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import * as ckpt from 'ckpt'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const arg = (name, def) => {
  const i = process.argv.indexOf(name)
  return i > 0 ? process.argv[i + 1] : def
}
const GUEST = path.resolve(arg('--guest', path.join(ROOT, '.guest')))
const file = (f) => new Uint8Array(fs.readFileSync(path.join(GUEST, f))).buffer
const machine = () => ({
  wasm_path: path.join(ROOT, 'node_modules/v86/build/v86.wasm'),
  memory_size: 128 << 20,
  vga_memory_size: 2 << 20,
  bios: { buffer: file('bios.bin') },
  vga_bios: { buffer: file('vgabios-stdvga.bin') },
})
const ready = (e) => new Promise((r) => e.add_listener('emulator-ready', r))

if (process.argv.includes('--boot-child')) await bootChild(arg('--boot-child'))
else await main()

// --- the child: boot with the JIT in real time, save the state at the first tick ---------------------
async function bootChild(out) {
  const { V86 } = await import('v86')
  const emu = new V86({
    ...machine(),
    bzimage: { buffer: file('vmlinuz') },
    initrd: { buffer: file('initramfs.cpio.gz') },
    cmdline: 'console=ttyS0 quiet loglevel=3 nokaslr mitigations=off tsc=reliable',
    autostart: true,
  })
  let serial = ''
  await new Promise((resolve) => emu.add_listener('serial0-output-byte', (b) => {
    serial += String.fromCharCode(b)
    if (b === 10 && /\ntick 1 /.test(serial)) resolve()
  }))
  await emu.stop()
  const perfNow = performance.now() // v86's clock when it stopped: the deterministic run starts here
  const dateNow = Date.now()
  fs.writeFileSync(out, new Uint8Array(await emu.save_state()))
  fs.writeFileSync(out + '.json', JSON.stringify({ perfNow, dateNow, serial }))
  await emu.destroy()
  process.exit(0)
}

async function main() {
  const STEPS = Number(arg('--steps', 1200))
  const EVERY = Number(arg('--every', 100))
  const BACK = Number(arg('--back', 75))
  const WATCH = arg('--watch')
  const STORE = arg('--store', fs.mkdtempSync(path.join(os.tmpdir(), 'ckpt-reverse-debug-')))
  for (const f of ['bios.bin', 'vgabios-stdvga.bin', 'vmlinuz', 'initramfs.cpio.gz']) {
    if (!fs.existsSync(path.join(GUEST, f))) {
      console.error(`${path.join(GUEST, f)} is missing: run  node scripts/fetch-guest.mjs ${path.relative(process.cwd(), GUEST) || '.'}  first`)
      process.exit(1)
    }
  }
  const wall = performance.now.bind(performance)
  const t0 = wall()
  const secs = () => ((wall() - t0) / 1000).toFixed(1).padStart(5) + ' s'
  const ms = (x) => `${x.toFixed(x < 10 ? 1 : 0)} ms`

  // 1. boot (or --boot-state FILE: reuse the state a previous run left there)
  const keep = arg('--boot-state')
  const bootFile = keep ? path.resolve(keep) : path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ckpt-rd-boot-')), 'boot.state')
  if (keep && fs.existsSync(bootFile) && fs.existsSync(bootFile + '.json')) console.log(`${secs()}  the booted state from ${bootFile}`)
  else {
    console.log(`${secs()}  booting Linux in a child process (v86 with JIT, real time) until its first tick`)
    const child = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--boot-child', bootFile, '--guest', GUEST], { stdio: ['ignore', 'ignore', 'inherit'], timeout: 600_000 })
    if (child.status !== 0) throw new Error(`the boot child failed (${child.signal ?? child.status})`)
  }
  const bootState = new Uint8Array(fs.readFileSync(bootFile))
  const boot = JSON.parse(fs.readFileSync(bootFile + '.json', 'utf8'))
  if (!keep) fs.rmSync(path.dirname(bootFile), { recursive: true, force: true })
  console.log(`${secs()}  booted: ${(bootState.length / 2 ** 20).toFixed(1)} MiB state, guest said ${JSON.stringify(boot.serial.trim().split('\n').pop())}`)

  // the driver before v86 is loaded (v86 binds performance.now when it loads); the guest's wall
  // clock goes on from the child's
  const { v86Clock, gotoV86, restoreV86Emulator } = ckpt
  const clock = v86Clock({ epochMs: boot.dateNow - boot.perfNow })
  const { V86 } = await import('v86')
  const emu = new V86({ ...machine(), autostart: false, disable_jit: true, preserve_mac_from_state_image: true })
  await ready(emu)
  let serial = ''
  emu.add_listener('serial0-output-byte', (b) => (serial += String.fromCharCode(b)))
  const start = async () => {
    clock.bind(emu, { steps: 0, instr: 0, idle: boot.perfNow }) // virtual ms = the boot's ms at the save
    await restoreV86Emulator(emu, bootState.slice())
  }
  const mem = () => emu.v86.cpu.mem8
  const peek = (w) => mem().subarray(w.addr, w.addr + w.len).reduce((a, b, i) => a + b * 2 ** (8 * i), 0)
  /** inputs: keystrokes on ttyS0 before the step taken at these positions (the tty echoes them) */
  const INPUTS = new Map([[Math.floor(STEPS * 0.13), 'ls\r'], [Math.floor(STEPS * 0.52), 'x'], [Math.floor(STEPS * 0.9), 'date\r']])
  const replay = (to, see) => {
    for (let s = clock.state().steps; s < to; ) {
      const inp = INPUTS.get(s)
      if (inp) emu.serial0_send(inp)
      s = clock.step()
      see?.(s)
    }
  }

  // what to watch: the jiffies counter unless --watch ADDR[/LEN]
  await start()
  const watches = WATCH ? [parseWatch(WATCH)] : jiffiesWatches(await findJiffies(bootState, replay, mem, start))

  // 2. record
  const store = await ckpt.openStore(STORE)
  const tl = await store.timeline(`linux-${new Date().toISOString().replace(/[:.]/g, '-')}`, { regions: ckpt.v86Regions(bootState) })
  const targets = []
  for (let t = STEPS - BACK; t >= 0; t -= BACK) targets.push(t)
  const hashes = new Map()
  const values = new Map(watches.map((w) => [w, []]))
  console.log(`${secs()}  recording ${STEPS} steps (JIT off, virtual clock), a checkpoint every ${EVERY} steps, ` +
    `keystrokes at steps ${[...INPUTS.keys()].join(', ')}, into ${STORE}`)
  await start()
  const tRec = wall()
  let saveMs = 0
  for (let s = 0; ; ) {
    let state
    if (s % EVERY === 0) {
      const ts = wall()
      const spy = { save_state: async () => (state = await emu.save_state()), restore_state() {} }
      const ck = await ckpt.saveV86(tl, spy, s, { clock })
      saveMs += wall() - ts
      if (s === 0 || s === STEPS || (s / EVERY) % 4 === 0) {
        console.log(`${secs()}    checkpoint at step ${s}: ${ck.v86.dirty ? ck.v86.dirty.ram + ' dirty pages' : 'full scan'}, ${(ck.stats.newStoredBytes / 1024).toFixed(0)} KiB new`)
      }
    }
    if (targets.includes(s)) hashes.set(s, sha(state ?? (await emu.save_state())))
    for (const w of watches) values.get(w)[s] = peek(w)
    if (s === STEPS) break
    replay(s + 1)
    s++
  }
  const recorded = serial
  const st = await store.stats()
  console.log(`${secs()}  recorded in ${((wall() - tRec) / 1000).toFixed(1)} s (checkpoints ${(saveMs / 1000).toFixed(1)} s): ` +
    `${Math.floor(STEPS / EVERY) + 1} checkpoints of ${(bootState.length / 2 ** 20).toFixed(1)} MiB states in ${(st.packBytes / 2 ** 20).toFixed(1)} MiB of packs; ` +
    `the guest printed ${JSON.stringify(recorded.replace(/\r/g, '').trim().split('\n').slice(-2).join(' | '))}`)

  // 3. reverse-step
  const cur = await store.cursor(tl.name)
  let bad = 0
  console.log(`${secs()}  reverse-step: from step ${STEPS}, ${BACK} steps back at a time`)
  for (const target of targets) {
    const j = await gotoV86(cur, target, emu, { clock })
    const from = Number(j.to.vtime)
    const tr = wall()
    replay(target)
    const replayMs = wall() - tr
    const same = sha(await emu.save_state()) === hashes.get(target)
    if (!same) bad++
    const chunks = Object.values(j.regions).reduce((a, r) => a + r.chunksWritten, 0)
    const bytes = Object.values(j.regions).reduce((a, r) => a + r.bytesWritten, 0)
    console.log(`    step ${String(target).padStart(5)} <- checkpoint @${String(from).padEnd(5)} ${short(j.to.cid)}: jump ${ms(j.ms)} ` +
      `(${chunks} chunks, ${(bytes / 2 ** 20).toFixed(1)} MiB; blobs ${j.blobsChanged.length}), load ${ms(j.v86.joinMs + j.v86.restoreMs)}, ` +
      `replay ${target - from} steps ${ms(replayMs)}, identical to the recorded run: ${same ? 'yes' : 'NO'}`)
  }

  // 4. reverse-watch
  console.log(`${secs()}  reverse-watch: the last step <= ${STEPS} at which these bytes changed`)
  for (const w of watches) {
    const got = await reverseWatch(w, STEPS)
    const v = values.get(w)
    let want
    for (let s = STEPS; s > 0 && want === undefined; s--) if (v[s] !== v[s - 1]) want = s
    if (got.step !== want) bad++
    const how = got.history
      ? `history ${ms(got.history.ms)} (${got.history.entries} page changes read, ${got.history.skipped} elsewhere in the page) -> checkpoints ${got.interval.join('..')}`
      : got.interval ? `in the tail ${got.interval.join('..')}` : 'not in the recorded run'
    console.log(`    ${w.name} (${hex(w.addr)}, ${w.len} B): step ${got.step ?? 'none'}, ${how}, ${got.replayed} steps replayed; ` +
      `recorded run: step ${want ?? 'none'} (${hex(v[(want ?? 1) - 1])} -> ${hex(v[want ?? 0])}): ${got.step === want ? 'match' : 'MISMATCH'}`)
  }
  await emu.destroy()
  await store.close()
  console.log(`${secs()}  ${bad === 0 ? 'every state and every answer as in the recorded run' : `${bad} MISMATCHES`}`)
  process.exit(bad === 0 ? 0 : 1)

  async function reverseWatch(w, pos) {
    const lastIn = (to) => {
      let before = peek(w)
      let found
      replay(to, (s) => {
        const x = peek(w)
        if (x !== before) found = s
        before = x
      })
      return found
    }
    const j = await gotoV86(cur, pos, emu, { clock })
    const ck = Number(j.to.vtime)
    const tail = lastIn(pos)
    if (tail !== undefined) return { step: tail, interval: [ck, pos], replayed: pos - ck }
    // history is per chunk (4 KiB page): an entry whose bytes are equal at both ends changed elsewhere in the page
    const th = wall()
    let e
    let entries = 0
    let skipped = 0
    for await (const x of store.history(tl.name, 'ram', { offset: w.addr, length: w.len }, { until: ck, reverse: true })) {
      entries++
      if (!x.previous) break
      if (Buffer.from(await bytesAt(x.previous.cid, w)).equals(await bytesAt(x.cid, w))) {
        skipped++
        continue
      }
      e = x
      break
    }
    const history = { ms: wall() - th, entries, skipped }
    if (!e) return { replayed: pos - ck, history }
    await gotoV86(cur, e.previous.cid, emu, { clock })
    const from = Number(e.previous.vtime)
    const to = Number(e.vtime)
    return { step: lastIn(to), interval: [from, to], replayed: pos - ck + to - from, history }
  }

  async function bytesAt(cid, w) {
    const at = w.addr % 4096
    return (await store.readChunk(cid, 'ram', Math.floor(w.addr / 4096))).subarray(at, at + w.len)
  }
}

/**
 * The kernel's jiffies (the low word of jiffies_64 on i386; HZ 250, counting from INITIAL_JIFFIES =
 * 2^32 - 300 * 250): among the 8-byte-aligned words of the booted RAM in that range with a zero high
 * word, the one that, over a short run, only goes up, a few ticks a step at most, and goes up most
 * (ties: the lowest address). The run is thrown away (start() again).
 */
async function findJiffies(bootState, replay, mem, start) {
  const INITIAL = 2 ** 32 - 300 * 250
  const ram = ckpt.splitV86State(bootState).regions.ram
  const dv = new DataView(ram.buffer, ram.byteOffset, ram.byteLength)
  const cands = []
  for (let a = 0; a + 8 <= Math.min(ram.length, 64 << 20); a += 8) {
    const lo = dv.getUint32(a, true)
    if (lo >= INITIAL && lo < INITIAL + 3600 * 250 && dv.getUint32(a + 4, true) === 0) cands.push({ a, first: lo, last: lo, steady: true })
  }
  const read = (a) => new DataView(mem().buffer, mem().byteOffset).getUint32(a, true)
  replay(300, () => {
    for (const c of cands) {
      const v = read(c.a)
      if (v < c.last || v - c.last > 8) c.steady = false
      c.last = v
    }
  })
  await start()
  const ok = cands.filter((c) => c.steady && c.last > c.first).sort((x, y) => y.last - y.first - (x.last - x.first) || x.a - y.a)
  if (ok.length === 0) throw new Error('no jiffies-like counter found in guest RAM: give --watch ADDR')
  return ok[0].a
}

function jiffiesWatches(addr) {
  return [
    { name: 'jiffies', addr, len: 4 },
    { name: 'jiffies, second byte (every 256 ticks)', addr: addr + 1, len: 1 },
  ]
}

function parseWatch(s) {
  const [a, l] = s.split('/')
  const addr = Number(a)
  const len = Number(l ?? 4)
  if (!Number.isSafeInteger(addr) || addr < 0 || ![1, 2, 4].includes(len) || (addr % 4096) + len > 4096) throw new Error(`--watch ADDR[/1|2|4] within one page, not ${s}`)
  return { name: `--watch`, addr, len }
}

function sha(b) {
  return crypto.createHash('sha256').update(new Uint8Array(b.buffer ?? b, b.byteOffset ?? 0, b.byteLength)).digest('hex')
}

function short(cid) {
  const s = cid.toString()
  return `${s.slice(0, 6)}…${s.slice(-6)}`
}

function hex(n) {
  return '0x' + (n ?? 0).toString(16)
}
