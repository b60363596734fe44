/**
 * A full check of a casync chunk store (casync has no fsck): decompress every <id>.cacnk (zstd) and
 * compare its SHA-512/256 (casync's default digest) with its name.
 * usage: node dist/bench/peers/casync-verify.js STORE_DIR   (exit 1 on a bad chunk or an empty store)
 */
import crypto from 'node:crypto'
import fs from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'

const store = process.argv[2]
if (!store) {
  process.stderr.write('usage: casync-verify.js STORE_DIR\n')
  process.exit(2)
}
const { decompress } = createRequire(import.meta.url)('zstd-napi') as { decompress(b: Uint8Array): Buffer }
let n = 0
let bad = 0
let raw = 0
const walk = (d: string) => {
  for (const e of fs.readdirSync(d, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const p = path.join(d, e.name)
    if (e.isDirectory()) walk(p)
    else if (e.name.endsWith('.cacnk')) {
      const data = decompress(fs.readFileSync(p))
      n++
      raw += data.length
      if (crypto.createHash('sha512-256').update(data).digest('hex') !== e.name.slice(0, -6)) {
        bad++
        process.stderr.write(`BAD chunk ${p}\n`)
      }
    }
  }
}
walk(store)
process.stdout.write(`chunks=${n} bad=${bad} raw_bytes=${raw}\n`)
process.exit(bad || n === 0 ? 1 : 0)
