/**
 * bench/results/peers.md and peers.svg from the harness's TSVs (run-peers.sh plus peers-hints).
 * usage: node dist/bench/peers-report.js PEERS.tsv OUT.md OUT.svg
 * The table is what the README's "How it compares" shows; the chart has two panels: stored bytes
 * after each checkpoint (log scale) and ingest ms per checkpoint, one line per tool.
 */
import fs from 'node:fs'
import path from 'node:path'

const [tsv, outMd, outSvg] = process.argv.slice(2)
if (!tsv || !outMd || !outSvg) {
  process.stderr.write('usage: peers-report PEERS.tsv OUT.md OUT.svg\n')
  process.exit(2)
}

type Row = Record<string, string>
function readTsv(file: string): Row[] {
  const lines = fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '' && !l.startsWith('#'))
  const head = lines[0]!.split('\t')
  return lines.slice(1).map((l) => Object.fromEntries(l.split('\t').map((v, i) => [head[i]!, v])))
}
const rows = readTsv(tsv)
const ingestFile = tsv.replace(/\.tsv$/, '.ingest.tsv')
const ingest = fs.existsSync(ingestFile) ? readTsv(ingestFile) : []
const envFile = path.join(path.dirname(tsv), 'peers.env')
const env = fs.existsSync(envFile) ? fs.readFileSync(envFile, 'utf8').trim().split('\n').map((l) => l.replace(/^# /, '')) : []

const LABEL: Record<string, string> = {
  ideal: 'ideal (lower bound: distinct pages and clusters, zstd -1 each)',
  ckpt: '**ckpt, CLI, full scan**',
  'ckpt-lib-dirty-hints': '**ckpt, library, dirty-page hints**',
  'qemu-chain': 'qemu-img backing chain, 64 KiB clusters',
  'qemu-chain-4k': 'qemu-img backing chain, 4 KiB clusters',
  'borg-fixed4k': 'borg, fixed 4 KiB chunker',
  borg: 'borg, default chunker',
  restic: 'restic',
  casync: 'casync',
  'zstd-countonly': 'zstd -1 of every file (sizes counted; 2 checkpoints stored)',
  zstd: 'zstd -1 of every file',
}
/** peers that deduplicate (restore of the last checkpoint is compared against these) */
const DEDUP = new Set(['restic', 'borg', 'borg-fixed4k', 'casync'])
/**
 * peers whose verify reads all data (qcow2 has no data checksums: its check reads metadata only;
 * zstd-countonly stores only the two checkpoints the harness restores, and tests those)
 */
const READS_ALL = new Set(['restic', 'borg', 'borg-fixed4k', 'casync', 'zstd'])
const VERIFY_NOTE: Record<string, string> = { 'qemu-chain': ' (metadata only)', 'qemu-chain-4k': ' (metadata only)', 'zstd-countonly': ' (the 2 stored checkpoints only)' }
const num = (v: string | undefined) => (v === undefined || v === 'NA' || v === '' ? NaN : Number(v))
const fmtInt = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '—')
const fmtS = (n: number) => (Number.isFinite(n) ? n.toFixed(2) : '—')

const ideal = rows.find((r) => r.tool === 'ideal')
const idealBytes = num(ideal?.repo_bytes)
const ratio = (r: Row) => num(r.repo_bytes) / idealBytes
const md: string[] = []
md.push('| tool | checkpoints | median ingest ms | p90 ingest ms | stored bytes | × ideal | restore last s | verify s | byte-identical |')
md.push('|---|---:|---:|---:|---:|---:|---:|---:|---|')
for (const r of rows) {
  const isIdeal = r.tool === 'ideal'
  const verify = Number.isFinite(num(r.verify_s)) ? fmtS(num(r.verify_s)) + (VERIFY_NOTE[r.tool!] ?? '') : '—'
  md.push(
    `| ${LABEL[r.tool!] ?? r.tool} | ${r.checkpoints} | ${isIdeal ? '—' : fmtInt(num(r.median_ingest_ms))} | ${isIdeal ? '—' : fmtInt(num(r.p90_ingest_ms))} | ${fmtInt(num(r.repo_bytes))} | ${Number.isFinite(ratio(r)) ? ratio(r).toFixed(2) : '—'} | ${fmtS(num(r.restore_last_s))} | ${verify} | ${r.restore_ok === 'NA' ? '—' : r.restore_ok}${r.note && r.note !== '-' && !r.tool!.startsWith('ckpt-lib') ? ` (${r.note})` : ''} |`,
  )
}

// targets of issue 6, each against the peers measured in this run
const ck = rows.find((r) => r.tool === 'ckpt')
const peers = rows.filter((r) => r.tool !== 'ideal' && !r.tool!.startsWith('ckpt') && r.note === '-')
const targets: string[][] = []
if (ck) {
  const best = (pred: (r: Row) => boolean, col: string) =>
    peers.filter(pred).filter((r) => Number.isFinite(num(r[col]))).sort((a, b) => num(a[col]) - num(b[col]))[0]
  const bi = best(() => true, 'median_ingest_ms')
  const br = best((r) => DEDUP.has(r.tool!), 'restore_last_s')
  const bv = best((r) => READS_ALL.has(r.tool!), 'verify_s')
  const add = (what: string, mine: number, theirs: number | undefined, who: string | undefined, unit: string, digits: number) =>
    targets.push([what, `${mine.toFixed(digits)} ${unit}`, theirs === undefined ? '—' : `${theirs.toFixed(digits)} ${unit} (${who})`, theirs === undefined ? '—' : mine < theirs ? 'yes' : 'NO'])
  add('full-scan ingest, median per checkpoint, below every peer', num(ck.median_ingest_ms), bi && num(bi.median_ingest_ms), bi?.tool, 'ms', 0)
  targets.push(['stored bytes ≤ 1.15 × ideal', `${ratio(ck).toFixed(3)} ×`, '1.15 ×', ratio(ck) <= 1.15 ? 'yes' : 'NO'])
  add('restore of the last checkpoint, below every dedup peer', num(ck.restore_last_s), br && num(br.restore_last_s), br?.tool, 's', 2)
  add('deep verify, below every peer that reads all data', num(ck.verify_s), bv && num(bv.verify_s), bv?.tool, 's', 2)
}
const out = [
  '# ckpt side by side with its peers',
  '',
  ...env.map((l) => `- ${l}`),
  '',
  ...md,
  '',
  'Targets (issue 6), same run:',
  '',
  '| target | ckpt | best peer | met |',
  '|---|---|---|---|',
  ...targets.map((t) => `| ${t.join(' | ')} |`),
  '',
  'Reproduce: `npm run bench:peers` (needs restic, borg, casync, qemu-utils, zstd; see bench/peers/run.sh).',
  '',
]
fs.writeFileSync(outMd, out.join('\n'))
process.stdout.write(out.join('\n'))

// ---- chart
const COLORS: Record<string, string> = {
  ideal: '#888888', ckpt: '#d62728', 'ckpt-lib-dirty-hints': '#ff7f0e', 'qemu-chain': '#1f77b4', 'qemu-chain-4k': '#17becf',
  'borg-fixed4k': '#2ca02c', borg: '#98df8a', restic: '#9467bd', casync: '#8c564b', 'zstd-countonly': '#e377c2', zstd: '#e377c2',
}
const series = new Map<string, { x: number; bytes: number; ms: number }[]>()
for (const r of ingest) {
  const list = series.get(r.tool!) ?? []
  list.push({ x: Number(r.idx) + 1, bytes: Number(r.repo_bytes_after), ms: Number(r.wall_s) * 1000 })
  series.set(r.tool!, list)
}
const W = 1100
const H = 420
const pad = { l: 70, r: 16, t: 34, b: 44 }
const pw = (W - 3 * 16 - 2 * pad.l - 250) / 2
const ph = H - pad.t - pad.b
const maxX = Math.max(1, ...[...series.values()].flatMap((s) => s.map((p) => p.x)))
const allBytes = [...series.values()].flatMap((s) => s.map((p) => p.bytes)).filter((b) => b > 0)
const lo = Math.pow(10, Math.floor(Math.log10(Math.min(...allBytes, 1e8))))
const hi = Math.pow(10, Math.ceil(Math.log10(Math.max(...allBytes, 1e9))))
const allMs = [...series.entries()].filter(([t]) => t !== 'ideal').flatMap(([, s]) => s.slice(1).map((p) => p.ms))
const msHi = Math.max(100, Math.ceil(quantileOf(allMs, 0.98) / 500) * 500)
function quantileOf(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b)
  return s.length ? s[Math.min(s.length - 1, Math.floor(q * s.length))]! : 1
}
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/\*/g, '')
const svg: string[] = [
  `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`,
  `<rect width="${W}" height="${H}" fill="#ffffff"/>`,
]
function panel(x0: number, title: string, yOf: (p: { bytes: number; ms: number }) => number, yTicks: { v: number; label: string }[], skipIdeal: boolean, skipFirst: boolean) {
  const X = (x: number) => x0 + ((x - 1) / Math.max(1, maxX - 1)) * pw
  svg.push(`<text x="${x0 + pw / 2}" y="18" text-anchor="middle" font-size="13" font-weight="bold">${esc(title)}</text>`)
  svg.push(`<rect x="${x0}" y="${pad.t}" width="${pw}" height="${ph}" fill="none" stroke="#444"/>`)
  for (const t of yTicks) {
    const y = pad.t + ph - t.v * ph
    svg.push(`<line x1="${x0}" x2="${x0 + pw}" y1="${y}" y2="${y}" stroke="#e5e5e5"/><text x="${x0 - 4}" y="${y + 4}" text-anchor="end">${t.label}</text>`)
  }
  for (let k = 0; k <= 4; k++) {
    const xv = 1 + Math.round(((maxX - 1) * k) / 4)
    svg.push(`<text x="${X(xv)}" y="${pad.t + ph + 14}" text-anchor="middle">${xv}</text>`)
  }
  svg.push(`<text x="${x0 + pw / 2}" y="${H - 10}" text-anchor="middle">checkpoints ingested</text>`)
  for (const [tool, pts] of series) {
    if (skipIdeal && tool === 'ideal') continue
    const use = skipFirst ? pts.slice(1) : pts
    const d = use.map((p, i) => `${i ? 'L' : 'M'}${X(p.x).toFixed(1)},${(pad.t + ph - Math.max(0, Math.min(1, yOf(p))) * ph).toFixed(1)}`).join('')
    const wide = tool.startsWith('ckpt') ? 2.5 : 1.4
    svg.push(`<path d="${d}" fill="none" stroke="${COLORS[tool] ?? '#000'}" stroke-width="${wide}"${tool === 'ideal' ? ' stroke-dasharray="5,3"' : ''}/>`)
  }
}
const logY = (b: number) => (Math.log10(Math.max(b, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))
const byteTicks: { v: number; label: string }[] = []
for (let e = Math.log10(lo); e <= Math.log10(hi); e++) byteTicks.push({ v: logY(10 ** e), label: e >= 9 ? `${10 ** (e - 9)} GB` : `${10 ** (e - 6)} MB` })
panel(pad.l, 'stored bytes (log scale)', (p) => logY(p.bytes), byteTicks, false, false)
const msTicks = [0, 0.25, 0.5, 0.75, 1].map((v) => ({ v, label: `${Math.round(v * msHi)} ms` }))
panel(pad.l * 2 + 16 + pw, 'ingest ms per checkpoint (after the first)', (p) => p.ms / msHi, msTicks, true, true)
let ly = pad.t + 6
const lx = W - 250
for (const tool of series.keys()) {
  const name = (LABEL[tool] ?? tool).replace(/\*\*/g, '').replace(/ \(lower bound.*\)/, ' (lower bound)')
  svg.push(`<line x1="${lx}" x2="${lx + 18}" y1="${ly}" y2="${ly}" stroke="${COLORS[tool] ?? '#000'}" stroke-width="3"${tool === 'ideal' ? ' stroke-dasharray="5,3"' : ''}/><text x="${lx + 24}" y="${ly + 4}">${esc(name.length > 40 ? name.slice(0, 39) + '…' : name)}</text>`)
  ly += 18
}
svg.push('</svg>')
fs.writeFileSync(outSvg, svg.join('\n') + '\n')
