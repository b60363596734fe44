#!/usr/bin/env node
/**
 * The `ckpt` command (package.json "bin"): a thin shell over the library, see src/cli/main.ts.
 */
import module from 'node:module'

// Node >= 22.1: V8's on-disk compile cache, so a later `ckpt` process skips parsing and compiling the
// modules it loads (Node 20 has no such cache; there this is a no-op). Before main is imported.
;(module as { enableCompileCache?: () => unknown }).enableCompileCache?.()
// `ckpt add` of big files and `ckpt restore` to files start their worker threads (and the add its reading
// of the files) before the rest loads
if (process.argv[2] === 'add') await (await import('./cli/commands/add.js')).startEarly(process.argv.slice(3))
else if (process.argv[2] === 'restore') await (await import('./cli/commands/restore.js')).startEarly(process.argv.slice(3))
const { main } = await import('./cli/main.js')

// a closed pipe (`ckpt log | head -1`) is not an error of ours
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0)
  throw err
})

process.exitCode = await main(process.argv.slice(2))
