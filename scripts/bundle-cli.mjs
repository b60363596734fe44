#!/usr/bin/env node
/**
 * Bundles the compiled CLI (dist/src/cli.js, from tsc) into dist/cli/ with esbuild, run by `npm run build`.
 * The `ckpt` command (package.json "bin") is dist/cli/ckpt.js: one process then reads and compiles a
 * handful of files instead of ~175, and resolves no module paths, which is most of what a small
 * `ckpt add` costs beyond Node's own start (docs/performance.md, "One ckpt process").
 *
 * - Commands stay lazy: with splitting, each command's module is a chunk loaded when it runs.
 * - The worker threads' scripts are entries of their own beside the chunks (worker.js,
 *   sync-reader-worker.js), where the pools look for them (next to the module that starts them).
 * - Native addons (classic-level, zstd-napi, @napi-rs/blake-hash), hash-wasm's wasm and the AWS SDK stay
 *   external: required from node_modules at run time, as without the bundle.
 * - Without esbuild (a build from the sources with --omit=dev), dist/cli/ckpt.js is a two-line shim
 *   that runs dist/src/cli.js: the same command, unbundled.
 */
import fs from 'node:fs'
import path from 'node:path'
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
  await esbuild.build({
    entryPoints: {
      ckpt: entry,
      worker: path.join(root, 'dist/src/pipeline/worker.js'),
      'sync-reader-worker': path.join(root, 'dist/store/remote/sync-reader-worker.js'),
    },
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    outdir,
    chunkNames: 'chunk-[hash]',
    external: ['classic-level', 'zstd-napi', '@napi-rs/*', 'hash-wasm', '@aws-sdk/*', '@smithy/*'],
    // CommonJS dependencies bundled into ESM call require(): give the bundle one (named apart from
    // any `require` a module declares itself)
    banner: { js: "import { createRequire as __ckptCreateRequire } from 'node:module'; const require = __ckptCreateRequire(import.meta.url);" },
    legalComments: 'none',
    logLevel: 'warning',
  })
  // the entry's shebang (from src/cli.ts) is kept by esbuild
} else {
  fs.writeFileSync(cli, "#!/usr/bin/env node\n// unbundled (esbuild was not installed at build time): the compiled CLI itself\nimport '../src/cli.js'\n")
}
fs.chmodSync(cli, 0o755)
