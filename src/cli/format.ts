/**
 * Text and JSON presentation for `ckpt`: CIDs as base32 text, bigints as decimal strings.
 */
import { cidToString, type CidBytes } from '../../codecs/cid.js'
import type { Manifest } from '../../codecs/manifest.js'
import type { DiffEntry } from '../diff.js'

/** JSON.stringify with bigints as strings (vtimes exceed 2^53). */
export function toJson(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))
}

export function cidText(cid: CidBytes | null): string | null {
  return cid === null ? null : cidToString(cid)
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB']

/** 1536 -> "1.5 KiB"; below 1 KiB exact bytes. */
export function humanBytes(n: number): string {
  let v = n
  let u = 0
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024
    u++
  }
  return u === 0 ? `${n} B` : `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)} ${UNITS[u]}`
}

/** `5 B`, `1048576 B (1.00 MiB)` */
export function bytesText(n: number): string {
  return n < 1024 ? `${n} B` : `${n} B (${humanBytes(n)})`
}

/** Left-aligned columns separated by two spaces. */
export function columns(rows: string[][]): string[] {
  const widths: number[] = []
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)))
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd())
}

/** The JSON view of a manifest (`show --json`). */
export function manifestJson(cid: string, m: Manifest) {
  return {
    cid,
    timeline: m.timeline,
    lineage: m.lineage,
    vtime: m.vtime.toString(),
    wall: new Date(m.wall).toISOString(),
    parent: cidText(m.parent),
    meta: m.meta,
    regions: Object.fromEntries(
      Object.entries(m.regions).map(([name, r]) => [name, { size: r.size, chunkSize: r.chunkSize, fanout: r.fanout, root: cidText(r.root) }]),
    ),
    blobs: Object.fromEntries(Object.entries(m.blobs).map(([name, b]) => [name, { size: b.size, chunks: b.chunks.length }])),
  }
}

/** The text view of a manifest (`show`). */
export function manifestText(cid: string, m: Manifest): string[] {
  const lines = columns([
    ['checkpoint', cid],
    ['timeline', m.timeline],
    ['lineage', m.lineage],
    ['vtime', m.vtime.toString()],
    ['wall', new Date(m.wall).toISOString()],
    ['parent', m.parent ? cidToString(m.parent) : '(none)'],
  ])
  const meta = Object.entries(m.meta)
  lines.push(meta.length ? 'meta' : 'meta        (none)')
  lines.push(...columns(meta.map(([k, v]) => ['  ' + k, v])))
  const regions = Object.entries(m.regions)
  lines.push(regions.length ? 'regions' : 'regions     (none)')
  lines.push(
    ...columns(
      regions.map(([name, r]) => [
        '  ' + name,
        bytesText(r.size),
        `chunk ${r.chunkSize} B`,
        r.root ? cidToString(r.root) : '(all zero)',
      ]),
    ),
  )
  const blobs = Object.entries(m.blobs)
  lines.push(blobs.length ? 'blobs' : 'blobs       (none)')
  lines.push(...columns(blobs.map(([name, b]) => ['  ' + name, bytesText(b.size), `${b.chunks.length} chunk${b.chunks.length === 1 ? '' : 's'}`])))
  return lines
}

/** One line of `diff`: `ram: chunks 10-12 changed (3 x 4096 B)`, `blob cpu changed`, ... */
export function diffText(e: DiffEntry): string {
  switch (e.kind) {
    case 'chunks': {
      const n = e.end - e.start
      const which = n === 1 ? `chunk ${e.start}` : `chunks ${e.start}-${e.end - 1}`
      return `${e.region}: ${which} changed (${n} x ${e.chunkSize} B)`
    }
    case 'region-added':
      return `region ${e.region} added`
    case 'region-removed':
      return `region ${e.region} removed`
    case 'region-resized':
      return `region ${e.region} resized`
    case 'blob-added':
      return `blob ${e.blob} added`
    case 'blob-removed':
      return `blob ${e.blob} removed`
    case 'blob-changed':
      return `blob ${e.blob} changed`
  }
}
