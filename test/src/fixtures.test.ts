/**
 * Golden fixtures (test/fixtures/stores, built by test/fixtures/make-stores.mjs): small stores, one
 * clean store of each format version and broken ones, each with the exact findings verify --deep
 * must report (kind, severity, CID, pack and offset, the checkpoints a damaged block hurts).
 */
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'
import { openStore, verifyStore, type Finding } from '../../src/index.js'
import { removeTmpDirs, tmpDir } from '../helpers/tmp.js'

afterAll(removeTmpDirs)

const DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/stores')
const ORDER: Record<string, number> = { structure: 0, dag: 1, data: 2 }

function normal(f: Finding) {
  const out: Record<string, unknown> = { phase: f.phase, kind: f.kind, severity: f.severity }
  if (f.cid !== undefined) out.cid = f.cid
  if (f.pack !== undefined) out.pack = f.pack
  if (f.offset !== undefined) out.offset = f.offset
  if (f.length !== undefined && (f.kind === 'damaged-entry' || f.kind === 'truncated-pack')) out.length = f.length
  if (f.checkpoints !== undefined) out.checkpoints = f.checkpoints.map((c) => `${c.timeline}@${c.vtime}`).sort()
  return out
}

function sort(list: Record<string, unknown>[]) {
  return list.sort(
    (a, b) =>
      ORDER[a.phase as string]! - ORDER[b.phase as string]! ||
      String(a.kind).localeCompare(String(b.kind)) ||
      String(a.cid).localeCompare(String(b.cid)) ||
      Number(a.pack ?? 0) - Number(b.pack ?? 0),
  )
}

describe('golden fixture stores', () => {
  const cases = fs.readdirSync(DIR).filter((d) => fs.existsSync(path.join(DIR, d, 'expected.json')))
  it('include a clean store of format version 1 and broken ones', () => {
    expect(cases).toContain('clean-v1')
    expect(cases.length).toBeGreaterThan(4)
  })
  for (const name of cases) {
    it(`${name}: verify --deep reports exactly the expected findings`, async () => {
      const expected = JSON.parse(fs.readFileSync(path.join(DIR, name, 'expected.json'), 'utf8'))
      const dir = path.join(tmpDir('ckpt-fixture-'), 'store')
      fs.cpSync(path.join(DIR, name, 'store'), dir, { recursive: true })
      const store = await openStore(dir, { mustExist: true, readOnly: true })
      try {
        const it = verifyStore(store, { deep: true })
        const got: Finding[] = []
        let r = await it.next()
        for (; !r.done; r = await it.next()) got.push(r.value)
        expect(sort(got.map(normal))).toEqual(sort(expected.findings))
        expect(r.value.clean).toBe(expected.clean)
        expect(r.value.checkpoints).toBeGreaterThan(0)
      } finally {
        await store.close()
      }
    })
  }
})
