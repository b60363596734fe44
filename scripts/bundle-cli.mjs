#!/usr/bin/env node
/**
 * Bundles the compiled CLI (dist/src/cli/entry.js, from tsc) into dist/cli/ with esbuild, run by `npm run
 * build`. The `ckpt` command (package.json "bin") is dist/cli/ckpt.js, a launcher (from
 * scripts/cli-launcher.js, with the bundle's SHA-256 filled in) that runs dist/cli/main.cjs from V8's code
 * cache (SPEC.md §21.2): one process then reads two files instead of ~175, resolves no module paths and,
 * from the cache, compiles almost nothing, which was most of what a small `ckpt add` cost beyond Node's
 * own start (docs/performance.md, "One ckpt process" and "The CLI's code cache").
 *
 * - main.cjs is one CommonJS script (a vm.Script has no ES module loader); commands stay lazy: a
 *   command's module is evaluated only when it runs (esbuild's lazy module wrappers). client.cjs, a
 *   few KB beside it, is the relay to a `ckpt serve`: a served command loads nothing else.
 * - The worker threads' scripts are ES module entries of their own beside it (worker.js,
 *   sync-reader-worker.js), where the pools look for them (next to the module that starts them).
 * - Native addons (classic-level, zstd-napi, @napi-rs/blake-hash), hash-wasm's wasm and the AWS SDK stay
 *   external: required from node_modules at run time, as without the bundle.
 * - Then the build primes the code cache for its Node (prime(), below).
 * - Without esbuild (a build from the sources with --omit=dev), dist/cli/ckpt.js is a two-line shim
 *   that runs dist/src/cli.js: the same command, unbundled.
 */
import fs from 'node:fs'
import path from 'node:path'
import { createHash } from 'node:crypto'
import { spawnSync } from 'node:child_process'
import os from 'node:os'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const outdir = path.join(root, 'dist/cli')
const entry = path.join(root, 'dist/src/cli.js')
if (!fs.existsSync(entry)) {
  console.error(`bundle-cli: ${entry} is missing (run tsc first)`)
  process.exit(1)
}
fs.rmSync(outdir, { recursive: true, force: true })
fs.mkdirSync(outdir, { recursive: true })
const cli = path.join(outdir, 'ckpt.js')

let esbuild
try {
  esbuild = await import('esbuild')
} catch (err) {
  console.error(`bundle-cli: esbuild is not installed (${err.code ?? err.message}); dist/cli/ckpt.js runs the unbundled CLI`)
}

if (esbuild) {
  // both builds: Node 20 and up, beside this script's output, the native and heavy dependencies external
  const common = {
    bundle: true,
    platform: 'node',
    target: 'node20',
    outdir,
    external: ['classic-level', 'zstd-napi', '@napi-rs/*', 'hash-wasm', '@aws-sdk/*', '@smithy/*'],
    legalComments: 'none',
    logLevel: 'warning',
  }
  // the command: one CommonJS script (main.cjs, its entry src/cli/entry.ts), run by the launcher
  // (ckpt.js, from scripts/cli-launcher.js) through vm.Script with V8's code cache
  await esbuild.build({
    // client: the relay to a `ckpt serve` (src/cli/client.ts), which the launcher loads first
    entryPoints: { main: path.join(root, 'dist/src/cli/entry.js'), client: path.join(root, 'dist/src/cli/client.js') },
    ...common,
    outExtension: { '.js': '.cjs' },
    format: 'cjs',
    // import() of an external (the AWS SDK) becomes require(): a vm.Script has no module loader
    supported: { 'dynamic-import': false },
    // code that finds files beside itself (the worker scripts, docs/) sees the bundle's own URL
    define: { 'import.meta.url': '__ckpt_import_meta_url' },
    banner: { js: "var __ckpt_import_meta_url = require('node:url').pathToFileURL(__filename).href;" },
  })
  // the worker threads' scripts: ES modules with shared chunks, beside the bundle, where the pools look
  // for them (next to the module that starts them)
  await esbuild.build({
    entryPoints: {
      worker: path.join(root, 'dist/src/pipeline/worker.js'),
      'sync-reader-worker': path.join(root, 'dist/store/remote/sync-reader-worker.js'),
    },
    ...common,
    splitting: true,
    format: 'esm',
    chunkNames: 'chunk-[hash]',
    // CommonJS dependencies bundled into ESM call require(): give the bundle one (named apart from
    // any `require` a module declares itself)
    banner: { js: "import { createRequire as __ckptCreateRequire } from 'node:module'; const require = __ckptCreateRequire(import.meta.url);" },
  })
  const sha = createHash('sha256').update(fs.readFileSync(path.join(outdir, 'main.cjs'))).digest('hex')
  const launcher = fs.readFileSync(path.join(root, 'scripts/cli-launcher.js'), 'utf8')
  fs.writeFileSync(cli, launcher.replace('@BUNDLE_SHA256@', sha))
  fs.chmodSync(cli, 0o755)
  prime()
} else {
  fs.writeFileSync(cli, "#!/usr/bin/env node\n// unbundled (esbuild was not installed at build time): the compiled CLI itself\nimport '../src/cli.js'\n")
  fs.chmodSync(cli, 0o755)
}

/**
 * Writes the launcher's code cache for this Node (see scripts/cli-launcher.js) from a short run of the
 * common commands on a scratch store, each process adding what it compiled to the cache the one before
 * wrote (CKPT_WRITE_COMPILE_CACHE=1). A failure here costs only speed: it is reported, not fatal.
 */
function prime() {
  if (process.env.NODE_DISABLE_COMPILE_CACHE) return
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'ckpt-prime-'))
  try {
    const store = path.join(work, 's')
    const img = path.join(work, 'ram')
    const bytes = Buffer.alloc(1 << 20)
    for (let i = 0; i < bytes.length; i += 4096) bytes.writeUInt32LE(i * 2654435761 >>> 0, i)
    fs.writeFileSync(img, bytes)
    const runs = [
      ['--help'],
      ['add', '--store', store, '--timeline', 't', '--vtime', '0', `ram=${img}`],
      ['add', '--store', store, '--timeline', 't', '--vtime', '1', `ram=${img}`],
      ['log', '--store', store],
      ['show', '--store', store, 't@1'],
      ['diff', '--store', store, 't@0', 't@1'],
      ['restore', '--store', store, 't@1', '--all', '--out', path.join(work, 'out')],
      ['verify', '--store', store],
    ]
    for (const args of runs) {
      const r = spawnSync(process.execPath, [cli, ...args], { env: { ...process.env, CKPT_WRITE_COMPILE_CACHE: '1', CKPT_STORE: '' }, encoding: 'utf8' })
      if (r.status !== 0) {
        console.error(`bundle-cli: priming the code cache: \`ckpt ${args.join(' ')}\` exited ${r.status}: ${(r.stderr || '').trim()}`)
        return
      }
      // the second add has a page to store
      if (args[0] === 'add') {
        bytes.writeUInt32LE(7, 4096)
        fs.writeFileSync(img, bytes)
      }
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true })
  }
}
