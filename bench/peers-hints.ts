/**
 * The peers' series through the library with dirty hints, as an emulator would use ckpt: one process
 * holds the store open, each checkpoint passes the images as buffers plus the list of chunks changed
 * since the previous one. The hints are what an emulator's dirty log gives for free; here they are
 * found by comparing each image with the previous one, outside the timed call. Only
 * `tl.checkpoint(...)` is timed (wall, until the checkpoint is committed).
 *
 * usage: node dist/bench/peers-hints.js SERIES_DIR HARNESS_DIR OUT.tsv
 * Appends one row to OUT.tsv and its per-ingest rows to OUT.ingest.tsv, with the harness's columns.
 * Restore (last, middle) and verify --deep go through the CLI, timed from outside, like every peer.
 */
import { spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import readline from 'node:readline'
import { fileURLToPath } from 'node:url'
import { openStore, type RegionConfig } from '../src/index.js'
import { median, quantile, dirBytes } from './stats.js'

const TOOL = 'ckpt-lib-dirty-hints'
const [seriesDir, harness, outTsv] = process.argv.slice(2)
if (!seriesDir || !harness || !outTsv) {
  process.stderr.write('usage: peers-hints SERIES_DIR HARNESS_DIR OUT.tsv\n')
  process.exit(2)
}
const cli = fileURLToPath(new URL('../src/cli.js', import.meta.url))
const work = path.join(process.env.WORK ?? '/tmp/peers-work', TOOL)
const repo = path.join(work, 'repo')
const stage = path.join(process.env.STAGE ?? '/dev/shm', 'peers-hints-stage')
fs.rmSync(work, { recursive: true, force: true })
fs.rmSync(stage, { recursive: true, force: true })
fs.mkdirSync(work, { recursive: true })

const manifest = JSON.parse(fs.readFileSync(path.join(seriesDir, 'manifest.json'), 'utf8')) as { count: number; files: string[]; lazy?: boolean }
const files = [...manifest.files].sort()
const count = manifest.count
const last = count - 1
const mid = Math.floor((count - 1) / 2)
const chunkOf = (f: string) => (f.startsWith('ram') ? 4096 : 65536)
const regionOf = (f: string) => f.replace(/[^A-Za-z0-9._-]/g, '_')

// checkpoints come from the series directory, or (lazy recipe) from the generator one at a time
let gen: { ask(i: number): Promise<string>; stop(): void } | undefined
if (manifest.lazy) {
  const p = spawn('/usr/bin/python3', [path.join(harness, 'make-synthetic.py'), '--serve', seriesDir, '--to', stage], { stdio: ['pipe', 'pipe', 'inherit'] })
  const lines = readline.createInterface({ input: p.stdout })[Symbol.asyncIterator]()
  gen = {
    async ask(i) {
      p.stdin.write(`${i}\n`)
      const r = await lines.next()
      if (r.done) throw new Error(`generator ended before checkpoint ${i}`)
      return path.join(stage, r.value)
    },
    stop() {
      p.stdin.end()
    },
  }
}
const dirOf = async (i: number) => (gen ? gen.ask(i) : path.join(seriesDir, `ckpt-${String(i).padStart(4, '0')}`))

function changed(prev: Buffer, cur: Buffer, chunk: number): number[] {
  const out: number[] = []
  for (let i = 0, o = 0; o < cur.length; i++, o += chunk) if (prev.compare(cur, o, o + chunk, o, o + chunk) !== 0) out.push(i)
  return out
}


const store = await openStore(repo)
let prev: Map<string, Buffer> | undefined
const walls: number[] = []
const ingestRows: string[] = []
const t0 = performance.now()
const cpu0 = process.cpuUsage()
const keep = new Map<number, string>()
let tl: Awaited<ReturnType<typeof store.timeline>> | undefined
for (let i = 0; i < count; i++) {
  const dir = await dirOf(i)
  const cur = new Map(files.map((f) => [f, fs.readFileSync(path.join(dir, f))]))
  if (!tl) {
    const regions: Record<string, RegionConfig> = {}
    for (const f of files) regions[regionOf(f)] = { size: cur.get(f)!.length, chunkSize: chunkOf(f) }
    tl = await store.timeline('series', { regions })
  }
  const regions: Record<string, { data: Buffer; dirty?: number[]; stable: boolean }> = {}
  for (const f of files) regions[regionOf(f)] = { data: cur.get(f)!, dirty: prev ? changed(prev.get(f)!, cur.get(f)!, chunkOf(f)) : undefined, stable: true }
  const ts = performance.now()
  await tl.checkpoint({ vtime: BigInt(i), regions, meta: { label: path.basename(dir) } })
  const wall = (performance.now() - ts) / 1000
  walls.push(wall)
  ingestRows.push([TOOL, i, path.basename(dir), wall.toFixed(3), 'NA', 'NA', 'NA', dirBytes(repo)].join('\t'))
  prev = cur
  if (i === mid || i === last) keep.set(i, dir)
  else if (gen) fs.rmSync(dir, { recursive: true, force: true })
  if (i % 10 === 0 || i === last) process.stderr.write(`[${TOOL}] ingested ${path.basename(dir)} in ${wall.toFixed(3)}s\n`)
}
const totalS = (performance.now() - t0) / 1000
const cpu = process.cpuUsage(cpu0)
await store.close()
gen?.stop()

function timed(args: string[]): { s: number; ok: boolean } {
  const t = performance.now()
  const r = spawnSync(process.execPath, [cli, ...args], { stdio: ['ignore', 'ignore', 'pipe'] })
  if (r.status !== 0) process.stderr.write(r.stderr)
  return { s: (performance.now() - t) / 1000, ok: r.status === 0 }
}
function restoreOne(i: number): { s: number; ok: boolean } {
  const out = path.join(work, `restore-${i}`)
  fs.mkdirSync(out, { recursive: true })
  const r = timed(['restore', '--store', repo, `series@${i}`, '--all', '--out', out])
  const s = r.s
  let ok = r.ok
  for (const f of files) ok &&= spawnSync('cmp', ['-s', path.join(keep.get(i)!, f), path.join(out, regionOf(f))]).status === 0
  fs.rmSync(out, { recursive: true, force: true })
  return { s, ok }
}
const rl = restoreOne(last)
const rm = restoreOne(mid)
const v = timed(['verify', '--store', repo, '--deep'])
const size = dirBytes(repo)
const sorted = [...walls].sort((a, b) => a - b)
const row = [
  TOOL, count, totalS.toFixed(3), (median(walls) * 1000).toFixed(1), (quantile(sorted, 0.9) * 1000).toFixed(1), size, Math.floor(size / count),
  rl.s.toFixed(3), rm.s.toFixed(3), v.s.toFixed(3), rl.ok && rm.ok ? 'yes' : 'no', walls[0]!.toFixed(3),
  ((cpu.user + cpu.system) / 1e6).toFixed(2), Math.round(process.resourceUsage().maxRSS / 1024), v.ok ? 'yes' : 'no',
  'library, dirty hints (found outside the timing, as an emulator dirty log gives them); whole process holds the store open',
]
fs.appendFileSync(outTsv, row.join('\t') + '\n')
fs.appendFileSync(outTsv.replace(/\.tsv$/, '.ingest.tsv'), ingestRows.join('\n') + '\n')
for (const d of keep.values()) if (gen) fs.rmSync(d, { recursive: true, force: true })
fs.rmSync(work, { recursive: true, force: true })
process.stderr.write(`[${TOOL}] median ${(median(walls) * 1000).toFixed(1)} ms, repo ${size} B, restore last ${rl.s.toFixed(2)} s, verify ${v.s.toFixed(2)} s\n`)
