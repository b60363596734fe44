/**
 * One bundle or verify operation in a process of its own, so its peak RSS is its own (the bench's parent holds
 * the workload's images). Prints one JSON line.
 *   node dist/bench/bundle-child.js export STORE OUT [--since CID] [--compress] CID...
 *   node dist/bench/bundle-child.js import STORE FILE
 *   node dist/bench/bundle-child.js verify STORE [deep]
 *   node dist/bench/bundle-child.js gc STORE [THRESHOLD]
 */
import fs from 'node:fs'
import { exportBundleToFile, fileSource, importBundle, openStore, verifyStore } from '../src/index.js'
import { mainCpuMs, peakRssMiB, processCpuMs } from './stats.js'

const [op, dir, file, ...rest] = process.argv.slice(2)

/**
 * The longest the event loop went without running a timer while an operation ran (what an emulator or
 * a server sharing the process would feel): a 5 ms interval timer, its largest gap.
 */
function stallWatch(): () => number {
  let tick = performance.now()
  let max = 0
  const timer = setInterval(() => {
    const now = performance.now()
    max = Math.max(max, now - tick)
    tick = now
  }, 5)
  return () => {
    clearInterval(timer)
    return Math.max(max, performance.now() - tick)
  }
}

// the CPU an operation took, on the main thread and in all (its floor on N cores is cpuMs / N)
const cpuNow = () => ({ main: mainCpuMs(), all: processCpuMs() })
const cpuSince = (c: { main: number; all: number }) => ({ mainCpuMs: mainCpuMs() - c.main, cpuMs: processCpuMs() - c.all })
if (op === 'export') {
  const since: string[] = []
  const roots: string[] = []
  let compress = false
  for (let i = 0; i < rest.length; i++) {
    if (rest[i] === '--since') since.push(rest[++i]!)
    else if (rest[i] === '--compress') compress = true
    else roots.push(rest[i]!)
  }
  const store = await openStore(dir!, { mustExist: true })
  const t = performance.now()
  const cpu0 = cpuNow()
  const stalls = stallWatch()
  // as `ckpt export --out FILE` writes it: temporary file, fdatasynced as it goes, renamed
  const s = await exportBundleToFile(store, roots, file!, { since, compress })
  const maxStallMs = stalls()
  const ms = performance.now() - t
  const cpu = cpuSince(cpu0)
  await store.close()
  console.log(JSON.stringify({ ms, ...cpu, maxStallMs, blocks: s.blocks, bytes: s.bytes, carBytes: s.carBytes, fileBytes: s.fileBytes, rssMiB: peakRssMiB() }))
} else if (op === 'import') {
  const store = await openStore(dir!)
  const t = performance.now()
  const cpu0 = cpuNow()
  const stalls = stallWatch()
  const s = await importBundle(store, fileSource(file!))
  const maxStallMs = stalls()
  const ms = performance.now() - t
  const cpu = cpuSince(cpu0)
  await store.close()
  console.log(JSON.stringify({ ms, ...cpu, maxStallMs, checkpoints: s.checkpoints, blocks: s.blocks, bytes: s.bytes, storedBytes: s.storedBytes, rssMiB: peakRssMiB() }))
} else if (op === 'verify') {
  const store = await openStore(dir!, { mustExist: true })
  const t = performance.now()
  const stalls = stallWatch()
  const it = verifyStore(store, { deep: file === 'deep' })
  let r = await it.next()
  while (!r.done) r = await it.next()
  const maxStallMs = stalls()
  const ms = performance.now() - t
  await store.close()
  console.log(JSON.stringify({ ms, maxStallMs, clean: r.value.clean, checkpoints: r.value.checkpoints, blocks: r.value.blocks, dataBytes: r.value.dataBytes, phases: r.value.ms, rssMiB: peakRssMiB() }))
} else if (op === 'gc') {
  // as ckpt gc opens it: no worker threads (gc neither hashes nor compresses)
  const store = await openStore(dir!, { mustExist: true, threads: 0, dedupFilter: false })
  // CKPT_BENCH_RSS_TRACE=1: the RSS and heap at each progress step and phase change, on stderr (where a peak comes from)
  const trace = process.env.CKPT_BENCH_RSS_TRACE === '1'
  let phase = ''
  const sample = (what: string) => {
    const m = process.memoryUsage()
    console.error(`${(performance.now() - t).toFixed(0)} ms ${what}: rss ${(m.rss / 2 ** 20).toFixed(0)} heap ${(m.heapUsed / 2 ** 20).toFixed(0)}/${(m.heapTotal / 2 ** 20).toFixed(0)} external ${(m.external / 2 ** 20).toFixed(0)} arrayBuffers ${(m.arrayBuffers / 2 ** 20).toFixed(0)} MiB, peak ${peakRssMiB().toFixed(0)}`)
  }
  const t = performance.now()
  const timer = trace ? setInterval(() => sample(phase), 250) : undefined
  const stalls = stallWatch()
  const s = await store.gc({
    ...(file ? { threshold: Number(file) } : {}),
    onProgress: trace ? (p) => { if (p.phase !== phase) sample((phase = p.phase) + ' starts') } : undefined,
  })
  if (timer) clearInterval(timer)
  const maxStallMs = stalls()
  const ms = performance.now() - t
  await store.close()
  console.log(JSON.stringify({ ...s, ms, maxStallMs, markMs: s.ms.mark, sweepMs: s.ms.sweep, rewriteMs: s.ms.rewrite, rewriteCpuMs: s.ms.rewriteCpu, rssMiB: peakRssMiB() }))
} else {
  console.error('usage: bundle-child.js export|import|verify|gc ...')
  process.exit(2)
}
