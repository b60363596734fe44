/**
 * The v86 adapter on a real guest: boots Linux in v86 (128 MiB, JIT on; the guest of
 * scripts/fetch-guest.mjs, whose /init prints a tick on ttyS0 every ~0.3 s and rewrites a 256 KiB
 * tmpfs file per tick), then takes N checkpoints (default 50) with saveV86, letting the guest run
 * INTERVAL ms (default 200) after each. Reports per checkpoint the time of saveV86 (save_state, split and
 * page comparison, commit until durable: median / p90), stored bytes against the raw save_state()
 * bytes and against zstd -1 of every raw state, byte-identity of every restore (SHA-256 of the raw
 * state vs restoreV86), restore times, and a restore into a fresh emulator that must print the next
 * tick. Writes bench/results/v86.md.
 *
 *   node scripts/fetch-guest.mjs && npm run build && node dist/bench/v86.js
 *   env: BENCH_V86_CHECKPOINTS, BENCH_V86_INTERVAL_MS, V86_GUEST_DIR, BENCH_DIR
 */
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { zstdCompressor, deflateCompressor } from '../codecs/index.js'
import { openStore, restoreV86, saveV86, v86Regions, type V86Checkpoint } from '../src/index.js'
import { fmtBytes, median, quantile, table } from './stats.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const GUEST = process.env.V86_GUEST_DIR ?? path.join(ROOT, '.guest')
const N = Number(process.env.BENCH_V86_CHECKPOINTS ?? 50)
const INTERVAL = Number(process.env.BENCH_V86_INTERVAL_MS ?? 200)
for (const f of ['bios.bin', 'vgabios-stdvga.bin', 'vmlinuz', 'initramfs.cpio.gz']) {
  if (!fs.existsSync(path.join(GUEST, f))) {
    console.error(`${path.join(GUEST, f)} is missing: run node scripts/fetch-guest.mjs first`)
    process.exit(1)
  }
}
const { V86 } = await import('v86')
const file = (f: string) => new Uint8Array(fs.readFileSync(path.join(GUEST, f))).buffer
const machine = {
  wasm_path: path.join(ROOT, 'node_modules/v86/build/v86.wasm'),
  memory_size: 128 << 20,
  vga_memory_size: 2 << 20,
  bios: { buffer: file('bios.bin') },
  vga_bios: { buffer: file('vgabios-stdvga.bin') },
}
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Emu = any
const ready = (e: Emu) => new Promise<void>((r) => e.add_listener('emulator-ready', () => r()))
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const sha = (b: Uint8Array) => crypto.createHash('sha256').update(b).digest('hex')
const root = fs.mkdtempSync(path.join(process.env.BENCH_DIR ?? os.tmpdir(), 'ckpt-bench-v86-'))
console.log(`ckpt bench: v86 adapter, ${N} checkpoints of a running Linux guest, the guest running ${INTERVAL} ms after each (128 MiB); ${os.cpus().length} cores, node ${process.version}, store in ${root}`)

/** Serial line watcher: resolves waiters on every line; `ticks` is the last tick number seen. */
function serial(e: Emu) {
  const s = { text: '', tick: 0, waiters: [] as (() => void)[], started: false }
  e.add_listener('serial0-output-byte', (b: number) => {
    s.text += String.fromCharCode(b)
    if (b !== 10) return
    const line = s.text.slice(s.text.lastIndexOf('\n', s.text.length - 2) + 1)
    const m = /tick (\d+) /.exec(line)
    if (m) s.tick = Number(m[1])
    if (line.includes('WORKLOAD START')) s.started = true
    s.waiters.splice(0).forEach((f) => f())
  })
  return s
}
const until = async (s: ReturnType<typeof serial>, ok: () => boolean, timeoutMs: number) => {
  const end = Date.now() + timeoutMs
  while (!ok()) {
    if (Date.now() > end) throw new Error('timed out waiting for the guest')
    await Promise.race([new Promise<void>((r) => s.waiters.push(r)), sleep(200)])
  }
}

// ------------------------------------------------------------------------- boot and checkpoint
const tBoot = performance.now()
const A = new V86({
  ...machine,
  bzimage: { buffer: file('vmlinuz') },
  initrd: { buffer: file('initramfs.cpio.gz') },
  cmdline: 'console=ttyS0 quiet loglevel=3 nokaslr mitigations=off tsc=reliable',
  autostart: true,
})
const sa = serial(A)
await ready(A)
await until(sa, () => sa.tick >= 2, 240_000)
const bootS = (performance.now() - tBoot) / 1000
console.log(`booted to tick ${sa.tick} in ${bootS.toFixed(1)} s`)

const store = await openStore(path.join(root, 'store'))
const first = new Uint8Array(await A.save_state())
const tl = await store.timeline('v86', { regions: v86Regions(first) })
const comp = zstdCompressor() ?? deflateCompressor()
const cks: (V86Checkpoint & { sha: string; zstd: number; tick: number; serialAt: number; wallMs: number })[] = []
let rawBytes = 0
let zBytes = 0
let zMs = 0
const tRun = performance.now()
for (let k = 0; k < N; k++) {
  const tick = sa.tick
  const serialAt = sa.text.length
  // wrap save_state to see the exact bytes the adapter got (hash and zstd them outside the timing)
  let got: Uint8Array | undefined
  const spy = { save_state: async () => { const s = await A.save_state(); got = new Uint8Array(s); return s }, restore_state: () => {} }
  const t0 = performance.now()
  const ck = await saveV86(tl, spy, BigInt(Math.round((t0 - tRun) * 1e6)) + 1n)
  const wallMs = performance.now() - t0
  const raw = got!
  const tz = performance.now()
  const z = comp.compress(raw).length
  zMs += performance.now() - tz
  rawBytes += raw.length
  zBytes += z
  cks.push({ ...ck, sha: sha(raw), zstd: z, tick, serialAt, wallMs })
  if (k % 10 === 0 || k === N - 1) {
    const d = ck.v86.dirty
    console.log(`  checkpoint ${k + 1}/${N} at tick ${tick}: ${fmtBytes(raw.length)} state, ${d ? `${d.ram} dirty pages` : 'full scan'}, ` +
      `${fmtBytes(ck.stats.newStoredBytes + ck.stats.nodeBytes + ck.stats.blobBytes + ck.stats.manifestBytes)} new, saveV86 ${wallMs.toFixed(0)} ms`)
  }
  await sleep(INTERVAL) // the guest runs INTERVAL ms between checkpoints (hashing and zstd of the raw state are not its time)
}
await A.stop()
const endTick = sa.tick
const serialA = sa.text
await A.destroy()
const st = await store.stats()

// ------------------------------------------------------------------------- restores
const restoreMs: number[] = []
let identical = 0
const scratch = new Uint8Array(new SharedArrayBuffer(128 << 20))
for (const c of cks) {
  const t0 = performance.now()
  const back = await restoreV86(store, c.cid, undefined, { scratch })
  restoreMs.push(performance.now() - t0)
  if (sha(back) === c.sha) identical++
}
// a mid-run checkpoint into a fresh emulator (no kernel, no initrd): it must print what A printed next
const mid = cks[Math.floor(cks.length / 2)]!
const B = new V86({ ...machine, autostart: false })
await ready(B)
const sb = serial(B)
const tB = performance.now()
await restoreV86(store, mid.cid, B)
const intoEmuMs = performance.now() - tB
await B.run()
const expectNext = serialA.slice(mid.serialAt, serialA.indexOf('\n', serialA.indexOf('tick ', mid.serialAt)) + 1)
await until(sb, () => sb.text.length >= expectNext.length, 60_000)
await B.stop()
await B.destroy()
const continues = sb.text.slice(0, expectNext.length) === expectNext

// ------------------------------------------------------------------------- report
const later = cks.slice(1)
const ms = (xs: number[]) => `${median(xs).toFixed(1)} / ${quantile(xs, 0.9).toFixed(1)}`
const newBytes = (c: V86Checkpoint) => c.stats.newStoredBytes + c.stats.nodeBytes + c.stats.blobBytes + c.stats.manifestBytes
const rows = [
  ['figure', 'measured'],
  ['guest', `Linux 6.1 686 + busybox in v86 0.5.462, 128 MiB RAM, 2 MiB VGA, JIT on; boot to tick 2 in ${bootS.toFixed(1)} s`],
  ['checkpoints', `${N}, the guest running ${INTERVAL} ms after each (ticks ${cks[0]!.tick}..${endTick})`],
  ['raw save_state() bytes, per checkpoint (median)', fmtBytes(median(cks.map((c) => c.v86.stateBytes)))],
  ['guest pages present (non-zero), median', `${median(cks.map((c) => c.v86.presentPages))} of ${(128 << 20) / 4096}`],
  ['dirty RAM pages per checkpoint, median / p90 (after the first)', ms(later.map((c) => c.v86.dirty?.ram ?? NaN))],
  ['saveV86 ms, median / p90 (after the first; save_state + split + durable commit)', ms(later.map((c) => c.wallMs))],
  ['  save_state() ms, median / p90', ms(later.map((c) => c.v86.ms.save))],
  ['  split + page comparison ms, median / p90', ms(later.map((c) => c.v86.ms.split))],
  ['  commit until durable ms, median / p90', ms(later.map((c) => c.v86.ms.commit))],
  ['first checkpoint (full scan) saveV86 ms', cks[0]!.wallMs.toFixed(1)],
  ['new bytes stored per checkpoint, median / p90 (after the first)', `${fmtBytes(median(later.map(newBytes)))} / ${fmtBytes(quantile(later.map(newBytes), 0.9))}`],
  ['first checkpoint new bytes', fmtBytes(newBytes(cks[0]!))],
  ['store (packs + index) for all checkpoints', `${fmtBytes(st.packBytes + st.indexBytes)} (packs ${fmtBytes(st.packBytes)})`],
  ['raw save_state() bytes, all checkpoints', fmtBytes(rawBytes)],
  [`${comp.name === 'zstd' ? 'zstd -1' : 'deflate'} of every raw state, all checkpoints`, `${fmtBytes(zBytes)} (${(zMs / N).toFixed(0)} ms per state)`],
  ['store vs raw / vs compressed states', `${((st.packBytes + st.indexBytes) / rawBytes * 100).toFixed(2)}% / ${((st.packBytes + st.indexBytes) / zBytes * 100).toFixed(1)}%`],
  ['restores byte-identical to save_state()', `${identical} of ${N}`],
  ['restoreV86 ms (state buffer), median / p90', ms(restoreMs)],
  ['restoreV86 into a fresh emulator (incl. restore_state) ms', intoEmuMs.toFixed(0)],
  ['fresh emulator prints what the original printed next', String(continues)],
]
const out = `# v86 adapter bench\n\n\`node dist/bench/v86.js\` on ${os.cpus().length} cores, node ${process.version}, ${new Date().toISOString().slice(0, 10)}.\n\n${table(rows)}\n`
console.log('\n' + table(rows))
fs.mkdirSync(path.join(ROOT, 'bench/results'), { recursive: true })
fs.writeFileSync(path.join(ROOT, 'bench/results/v86.md'), out)
await store.close()
fs.rmSync(root, { recursive: true, force: true })
process.exit(identical === N && continues ? 0 : 1)
