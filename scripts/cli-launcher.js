#!/usr/bin/env node
/**
 * The `ckpt` command (dist/cli/ckpt.js, package.json's "bin"), written by scripts/bundle-cli.mjs from
 * this template. It first asks whether a `ckpt serve` holds the command's store (dist/cli/client.cjs,
 * a few KB, src/cli/client.ts) and only relays if one does; else it runs the CLI's bundle,
 * dist/cli/main.cjs (one CommonJS script), compiled from V8's code cache when there is one.
 *
 * Compiling the bundle's ~1 MB of JavaScript is ~20-35 ms of a small `ckpt add` (docs/performance.md,
 * "The CLI's code cache"); from the cache, V8 skips the parse and the functions compiled in the run that
 * wrote it. The cache is a file beside the bundle per Node version and architecture, named with the
 * bundle's SHA-256 (filled in by the build), so a rebuilt bundle never meets an old cache:
 *   main.<bundle sha-256, 16 hex>.<node version>-<arch>.v8cache
 *   = "CKV8" | crc32 (u32 LE) of what follows | V8's cached data
 * The build writes one for its Node (a short run of common commands); a process that finds none, or one
 * V8 rejects (another Node's flags), writes it at exit: to a temporary name, then renamed, so a reader
 * never sees half of one. A cache that fails its crc32 is ignored and rewritten; one that cannot be
 * written (a read-only install) is not an error. NODE_DISABLE_COMPILE_CACHE=1 (Node's own variable for
 * its cache) neither reads nor writes it.
 */
import fs from 'node:fs'
import module, { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import vm from 'node:vm'
import zlib from 'node:zlib'

const BUNDLE_SHA256 = '@BUNDLE_SHA256@'
const MAGIC = 0x3856_4b43 // "CKV8" read as a u32 LE

const dir = path.dirname(fileURLToPath(import.meta.url))
const file = path.join(dir, 'main.cjs')
const cacheFile = path.join(dir, `main.${BUNDLE_SHA256.slice(0, 16)}.${process.version}-${process.arch}.v8cache`)
// zlib.crc32 is Node >= 20.15: without it, the cache is neither read nor written
const useCache = !process.env.NODE_DISABLE_COMPILE_CACHE && typeof zlib.crc32 === 'function'

/** V8's cached data from the cache file, or undefined when there is none or it fails its check. */
function readCache() {
  let raw
  try {
    raw = fs.readFileSync(cacheFile)
  } catch {
    return undefined
  }
  if (raw.length < 8 || raw.readUInt32LE(0) !== MAGIC) return undefined
  const data = raw.subarray(8)
  return zlib.crc32(data) === raw.readUInt32LE(4) ? data : undefined
}

function writeCache(script) {
  try {
    // a directory this user cannot write to (an install owned by root): not even the serializing
    fs.accessSync(dir, fs.constants.W_OK)
    const data = script.createCachedData()
    const head = Buffer.alloc(8)
    head.writeUInt32LE(MAGIC, 0)
    head.writeUInt32LE(zlib.crc32(data), 4)
    const tmp = `${cacheFile}.${process.pid}.tmp`
    try {
      fs.writeFileSync(tmp, Buffer.concat([head, data]))
      fs.renameSync(tmp, cacheFile)
    } catch {
      fs.rmSync(tmp, { force: true })
    }
  } catch {
    // a read-only or full directory: the next run compiles again
  }
}

// Node >= 22.1: its own compile cache, for the worker threads' scripts (ES modules, loaded by Node)
module.enableCompileCache?.()

/** A bundle that cannot be read or loaded (a broken install) is said as such, exit 1 (SPEC.md §11). */
function broken(what, err) {
  const code = err.code ?? 'INTERNAL'
  const message = `the command's bundle ${what} cannot be read (${err.message}): run npm run build, or reinstall ckpt`
  if (process.argv.includes('--json')) process.stdout.write(JSON.stringify({ error: { code, message } }) + '\n')
  process.stderr.write(`ckpt: ${code}: ${message}\n`)
  process.exit(1)
}

/** The command run in this process: main.cjs from the code cache. */
function loadMain() {
  let source
  try {
    source = fs.readFileSync(file, 'utf8')
  } catch (err) {
    broken(file, err)
  }
  const cached = useCache ? readCache() : undefined
  const script = new vm.Script(`(function (exports, require, module, __filename, __dirname) {${source}\n})`, {
    filename: file,
    cachedData: cached,
  })
  // written at exit, after the run compiled what it used (a command may end with process.exit)
  if (useCache && (process.env.CKPT_WRITE_COMPILE_CACHE === '1' || cached === undefined || script.cachedDataRejected)) {
    process.once('exit', () => writeCache(script))
  }
  const mod = { exports: {} }
  script.runInThisContext()(mod.exports, createRequire(file), mod, file, dir)
  return mod.exports
}

const argv = process.argv.slice(2)
const clientFile = path.join(dir, 'client.cjs')
let client
try {
  client = createRequire(import.meta.url)(clientFile)
} catch (err) {
  broken(clientFile, err)
}
client.exitOnClosedPipe()
const served = await client.runServed(argv)
process.exitCode = served ?? (await loadMain().runLocal(argv))
