#!/usr/bin/env node
/**
 * The `ckpt` command (package.json "bin"): a thin shell over the library, see src/cli/main.ts.
 */
import module from 'node:module'
import { runServed } from './cli/serve-client.js'

// Node >= 22.1: V8's on-disk compile cache, so a later `ckpt` process skips parsing and compiling the
// modules it loads (Node 20 has no such cache; there this is a no-op). Before main is imported.
;(module as { enableCompileCache?: () => unknown }).enableCompileCache?.()

// a closed pipe (`ckpt log | head -1`) is not an error of ours
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0)
  throw err
})

/** The command line run in this process. */
async function runHere(argv: string[]): Promise<number> {
  // `ckpt add` of big files and `ckpt restore` to files start their worker threads (and the add its
  // reading of the files) before the rest loads
  if (argv[0] === 'add') await (await import('./cli/commands/add.js')).startEarly(argv.slice(1))
  else if (argv[0] === 'restore') await (await import('./cli/commands/restore.js')).startEarly(argv.slice(1))
  const { main } = await import('./cli/main.js')
  return await main(argv)
}

// a `ckpt serve` holding the command's store runs it (src/cli/serve-client.ts): this process only relays
const argv = process.argv.slice(2)
process.exitCode = (await runServed(argv)) ?? (await runHere(argv))
