/**
 * The peers' series through the library with dirty hints, as an emulator would use ckpt: one process
 * holds the store open, each checkpoint passes the images as buffers plus the list of pages and
 * clusters written since the previous one — what an emulator's dirty log gives, here the synthetic
 * generator's own list of writes. Only `tl.checkpoint(...)` is timed (wall, until it is committed).
 *
 * usage: node dist/bench/peers-hints.js --series small|default|tiny OUT.tsv
 * Appends one row to OUT.tsv and its per-ingest rows to OUT.ingest.tsv, with the harness's columns
 * (bench/peers/run.ts). Restore (last, middle) and verify --deep go through the CLI, timed from
 * outside, like every peer; the restored files are compared byte for byte with the series.
 */
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { openStore, type RegionConfig } from '../src/index.js'
import { sameFile } from './peers/run.js'
import { FILES, SERIES, SyntheticSeries, chunkOf, specOf } from './peers/synth.js'
import { dirBytes, median, peakRssMiB, quantile } from './stats.js'

const TOOL = 'ckpt-lib-dirty-hints'
const [flag, name, outTsv] = process.argv.slice(2)
if (flag !== '--series' || !name || !SERIES[name] || !outTsv) {
  process.stderr.write(`usage: peers-hints --series ${Object.keys(SERIES).join('|')} OUT.tsv\n`)
  process.exit(2)
}
const spec = specOf(name)
const cli = fileURLToPath(new URL('../cli/ckpt.js', import.meta.url))
const work = path.join(process.env.WORK ?? '/tmp/peers-work', TOOL)
const repo = path.join(work, 'repo')
const stage = path.join(process.env.STAGE ?? '/dev/shm/peers-stage', TOOL)
fs.rmSync(work, { recursive: true, force: true })
fs.rmSync(stage, { recursive: true, force: true })
fs.mkdirSync(work, { recursive: true })
fs.mkdirSync(stage, { recursive: true })

const files = FILES.map((f) => f.name)
const count = spec.count
const last = count - 1
const mid = Math.floor(last / 2)
const regionOf = (f: string) => f.replace(/[^A-Za-z0-9._-]/g, '_')
const gen = new SyntheticSeries(spec)

const store = await openStore(repo)
const walls: number[] = []
const ingestRows: string[] = []
const t0 = performance.now()
const cpu0 = process.cpuUsage()
let tl: Awaited<ReturnType<typeof store.timeline>> | undefined
for (let i = 0; i < count; i++) {
  gen.seek(i)
  const ckpt = SyntheticSeries.checkpointName(i)
  if (!tl) {
    const regions: Record<string, RegionConfig> = {}
    for (const f of files) regions[regionOf(f)] = { size: gen.image(f).length, chunkSize: chunkOf(f) }
    tl = await store.timeline('series', { regions })
  }
  const regions: Record<string, { data: Buffer; dirty?: number[]; stable: boolean }> = {}
  for (const f of files) regions[regionOf(f)] = { data: gen.image(f), dirty: gen.dirty(f), stable: true }
  const ts = performance.now()
  await tl.checkpoint({ vtime: BigInt(i), regions, meta: { label: ckpt } })
  const wall = (performance.now() - ts) / 1000
  walls.push(wall)
  ingestRows.push([TOOL, i, ckpt, wall.toFixed(3), 'NA', 'NA', 'NA', dirBytes(repo)].join('\t'))
  if (i === mid || i === last) gen.write(path.join(stage, ckpt))
  if (i % 10 === 0 || i === last) process.stderr.write(`[${TOOL}] ingested ${ckpt} in ${wall.toFixed(3)} s\n`)
}
const totalS = (performance.now() - t0) / 1000
const cpu = process.cpuUsage(cpu0)
await store.close()
gen.close()

function timed(args: string[]): { s: number; ok: boolean } {
  const t = performance.now()
  const r = spawnSync(process.execPath, [cli, ...args], { stdio: ['ignore', 'ignore', 'pipe'] })
  if (r.status !== 0) process.stderr.write(r.stderr)
  return { s: (performance.now() - t) / 1000, ok: r.status === 0 }
}
function restoreOne(i: number): { s: number; ok: boolean } {
  const out = path.join(work, `restore-${i}`)
  fs.mkdirSync(out, { recursive: true })
  const r = timed(['restore', '--quiet', '--store', repo, `series@${i}`, '--all', '--out', out])
  let ok = r.ok
  for (const f of files) ok &&= sameFile(path.join(stage, SyntheticSeries.checkpointName(i), f), path.join(out, regionOf(f)))
  fs.rmSync(out, { recursive: true, force: true })
  return { s: r.s, ok }
}
const rl = restoreOne(last)
const rm = restoreOne(mid)
const v = timed(['verify', '--store', repo, '--deep'])
const size = dirBytes(repo)
const row = [
  TOOL, count, totalS.toFixed(3), (median(walls) * 1000).toFixed(1), (quantile(walls, 0.9) * 1000).toFixed(1), size, Math.floor(size / count),
  rl.s.toFixed(3), rm.s.toFixed(3), v.s.toFixed(3), rl.ok && rm.ok ? 'yes' : 'no', walls[0]!.toFixed(3),
  ((cpu.user + cpu.system) / 1e6).toFixed(2), Math.round(peakRssMiB()), v.ok ? 'yes' : 'no',
  'library, dirty hints (the writes of each step, as an emulator dirty log gives them); one process holds the store open; its RSS includes the generator',
]
fs.appendFileSync(outTsv, row.join('\t') + '\n')
fs.appendFileSync(outTsv.replace(/\.tsv$/, '.ingest.tsv'), ingestRows.join('\n') + '\n')
fs.rmSync(stage, { recursive: true, force: true })
fs.rmSync(work, { recursive: true, force: true })
process.stderr.write(`[${TOOL}] median ${(median(walls) * 1000).toFixed(1)} ms, p99 ${(quantile(walls, 0.99) * 1000).toFixed(1)} ms, repo ${size} B, restore last ${rl.s.toFixed(2)} s, verify ${v.s.toFixed(2)} s\n`)
