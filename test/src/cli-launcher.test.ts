/**
 * The `ckpt` command's launcher (dist/cli/ckpt.js, from scripts/cli-launcher.js) and its code cache:
 * the bundle (main.cjs) runs from V8's cached data when a valid cache for this Node is beside it; a
 * missing, damaged or rejected cache is rewritten at exit, whole (a temporary name, then renamed); a
 * cache that cannot be written is not an error; NODE_DISABLE_COMPILE_CACHE=1 neither reads nor writes.
 * Each test runs a copy of the launcher and the bundle in a directory of its own under dist/ (so the
 * bundle's external modules resolve from node_modules as the installed command's do).
 * Needs the build with esbuild (npm run build).
 */
import { spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import zlib from 'node:zlib'
import { afterEach, describe, expect, it } from 'vitest'
import { pattern } from '../helpers/bytes.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const BUILT = path.join(ROOT, 'dist/cli')
const MAGIC = 0x3856_4b43

const dirs: string[] = []
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true })
})

/** A copy of the launcher and the bundle, without any cache. */
function copyCli(): { dir: string; cli: string; cacheName: string } {
  const dir = fs.mkdtempSync(path.join(ROOT, 'dist', 'launcher-test-'))
  dirs.push(dir)
  fs.copyFileSync(path.join(BUILT, 'ckpt.js'), path.join(dir, 'ckpt.js'))
  fs.copyFileSync(path.join(BUILT, 'main.cjs'), path.join(dir, 'main.cjs'))
  fs.copyFileSync(path.join(BUILT, 'client.cjs'), path.join(dir, 'client.cjs'))
  const sha = createHash('sha256').update(fs.readFileSync(path.join(dir, 'main.cjs'))).digest('hex')
  return { dir, cli: path.join(dir, 'ckpt.js'), cacheName: `main.${sha.slice(0, 16)}.${process.version}-${process.arch}.v8cache` }
}

function run(cli: string, args: string[], env: Record<string, string> = {}) {
  const e: Record<string, string | undefined> = { ...process.env, CKPT_STORE: '', ...env }
  delete e.CKPT_WRITE_COMPILE_CACHE
  if (!('NODE_DISABLE_COMPILE_CACHE' in env)) delete e.NODE_DISABLE_COMPILE_CACHE
  return spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: e })
}

/** The cache file's V8 data when its header and crc32 are right, else undefined. */
function cacheData(file: string): Buffer | undefined {
  const raw = fs.readFileSync(file)
  if (raw.length < 8 || raw.readUInt32LE(0) !== MAGIC) return undefined
  const data = raw.subarray(8)
  return zlib.crc32(data) === raw.readUInt32LE(4) ? data : undefined
}

function withCrc(data: Buffer): Buffer {
  const head = Buffer.alloc(8)
  head.writeUInt32LE(MAGIC, 0)
  head.writeUInt32LE(zlib.crc32(data), 4)
  return Buffer.concat([head, data])
}

const hasCrc32 = typeof (zlib as { crc32?: unknown }).crc32 === 'function'

describe.skipIf(!fs.existsSync(path.join(BUILT, 'main.cjs')) || !hasCrc32)('the ckpt launcher and its code cache', () => {
  it('the built launcher names the bundle it was built with, and the build left a valid cache for this Node', () => {
    const { cacheName } = copyCli()
    const launcher = fs.readFileSync(path.join(BUILT, 'ckpt.js'), 'utf8')
    const sha = createHash('sha256').update(fs.readFileSync(path.join(BUILT, 'main.cjs'))).digest('hex')
    expect(launcher).toContain(`const BUNDLE_SHA256 = '${sha}'`)
    expect(launcher.startsWith('#!/usr/bin/env node')).toBe(true)
    // npm test builds with this Node, and the build primes the cache
    expect(cacheData(path.join(BUILT, cacheName))?.length).toBeGreaterThan(100_000)
  })

  it('writes a missing cache at exit and then runs from it without rewriting it', () => {
    const { dir, cli, cacheName } = copyCli()
    const cache = path.join(dir, cacheName)
    const first = run(cli, ['--help'])
    expect(first.status, first.stderr).toBe(0)
    expect(first.stdout).toContain('usage: ckpt COMMAND')
    const data = cacheData(cache)
    expect(data?.length).toBeGreaterThan(10_000)
    const ino = fs.statSync(cache).ino
    const second = run(cli, ['--help'])
    expect(second.status).toBe(0)
    expect(second.stdout).toBe(first.stdout)
    // accepted: not written again (a rewrite renames a new file over it)
    expect(fs.statSync(cache).ino).toBe(ino)
    expect(fs.readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([])
  })

  it('a damaged cache is ignored and rewritten, and the command works from it as from none', () => {
    const { dir, cli, cacheName } = copyCli()
    const cache = path.join(dir, cacheName)
    const store = path.join(dir, 's')
    const img = path.join(dir, 'ram')
    const bytes = pattern(1 << 20, 4)
    fs.writeFileSync(img, bytes)
    expect(run(cli, ['--help']).status).toBe(0)
    const good = cacheData(cache)!
    const damages: [string, Buffer][] = [
      // a bit flipped in V8's data: our crc32 catches it
      ['flipped', (() => { const b = fs.readFileSync(cache); b[b.length >> 1] ^= 0x10; return b })()],
      // cut short
      ['truncated', fs.readFileSync(cache).subarray(0, 1000)],
      // not a cache at all
      ['garbage', Buffer.from('not a code cache')],
      // a valid frame around data V8 rejects (its header says another V8 build)
      ['rejected', withCrc((() => { const d = Buffer.from(good); d.writeUInt32LE((d.readUInt32LE(4) ^ 0xffff) >>> 0, 4); return d })())],
    ]
    let vtime = 0
    for (const [what, bad] of damages) {
      fs.writeFileSync(cache, bad)
      bytes[vtime * 4096] ^= 0xff
      fs.writeFileSync(img, bytes)
      const r = run(cli, ['add', '--store', store, '--timeline', 't', '--vtime', String(vtime++), `ram=${img}`])
      expect(r.status, `${what}: ${r.stderr}`).toBe(0)
      expect(r.stdout.trim(), what).toMatch(/^bafy/)
      expect(cacheData(cache)?.length, what).toBeGreaterThan(10_000)
      expect(fs.readFileSync(cache).equals(bad), `${what}: rewritten`).toBe(false)
      const out = path.join(dir, `out-${what}`)
      const back = run(cli, ['restore', '--store', store, `t@${vtime - 1}`, '--all', '--out', out])
      expect(back.status, back.stderr).toBe(0)
      expect(fs.readFileSync(path.join(out, 'ram')).equals(bytes), what).toBe(true)
    }
    expect(fs.readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([])
  })

  it('a cache that cannot be written is not an error, and leaves nothing behind', () => {
    const { dir, cli, cacheName } = copyCli()
    // a directory where the cache would go: it can be neither read nor renamed onto
    fs.mkdirSync(path.join(dir, cacheName))
    const r = run(cli, ['--help'])
    expect(r.status, r.stderr).toBe(0)
    expect(r.stderr).toBe('')
    expect(r.stdout).toContain('usage: ckpt COMMAND')
    expect(fs.statSync(path.join(dir, cacheName)).isDirectory()).toBe(true)
    expect(fs.readdirSync(dir).sort()).toEqual(['ckpt.js', cacheName, 'client.cjs', 'main.cjs'].sort())
  })

  it('NODE_DISABLE_COMPILE_CACHE=1 writes no cache', () => {
    const { dir, cli } = copyCli()
    const r = run(cli, ['--help'], { NODE_DISABLE_COMPILE_CACHE: '1' })
    expect(r.status).toBe(0)
    expect(r.stdout).toContain('usage: ckpt COMMAND')
    expect(fs.readdirSync(dir).sort()).toEqual(['ckpt.js', 'client.cjs', 'main.cjs'])
  })

  it('a missing bundle is a clear error, exit 1 (a broken install), with --json too', () => {
    const { dir, cli } = copyCli()
    fs.rmSync(path.join(dir, 'main.cjs'))
    const r = run(cli, ['log', '--store', path.join(dir, 's'), '--json'])
    expect(r.status).toBe(1)
    expect(r.stderr).toMatch(/^ckpt: ENOENT: the command's bundle .*main\.cjs cannot be read .*npm run build/)
    expect(JSON.parse(r.stdout).error.code).toBe('ENOENT')
    expect(fs.readdirSync(dir).sort()).toEqual(['ckpt.js', 'client.cjs'])
    // the relay's bundle too
    fs.rmSync(path.join(dir, 'client.cjs'))
    const r2 = run(cli, ['--help'])
    expect(r2.status).toBe(1)
    expect(r2.stderr).toMatch(/^ckpt: [A-Z_]+: the command's bundle .*client\.cjs cannot be read/)
  })

  it('a command of a store a `ckpt serve` holds is relayed without loading the bundle', () => {
    const { dir, cli, cacheName } = copyCli()
    const store = path.join(dir, 's')
    const img = path.join(dir, 'ram')
    fs.writeFileSync(img, pattern(1 << 16, 2))
    expect(run(cli, ['add', '--store', store, '--timeline', 't', '--vtime', '0', `ram=${img}`]).status).toBe(0)
    const started = run(cli, ['serve', '--detach', '--store', store])
    expect(started.status, started.stderr).toBe(0)
    try {
      // (the processes that added and started the server wrote it)
      fs.rmSync(path.join(dir, cacheName), { force: true })
      // with main.cjs gone, only the relay can answer
      fs.renameSync(path.join(dir, 'main.cjs'), path.join(dir, 'main.cjs.away'))
      const r = run(cli, ['log', '--store', store])
      expect(r.status, r.stderr).toBe(0)
      expect(r.stdout).toMatch(/^t@0 bafy/)
      // a served run writes no cache
      expect(fs.existsSync(path.join(dir, cacheName))).toBe(false)
    } finally {
      fs.renameSync(path.join(dir, 'main.cjs.away'), path.join(dir, 'main.cjs'))
      run(cli, ['serve', '--store', store, '--stop'])
    }
  })

  it('errors keep their codes and exit statuses through the launcher', () => {
    const { cli } = copyCli()
    const r = run(cli, ['log', '--store', path.join(ROOT, 'dist', 'no-such-store-here'), '--json'])
    expect(r.status).not.toBe(0)
    expect(JSON.parse(r.stdout || r.stderr).error.code).toMatch(/^CKPT_/)
  })
})
