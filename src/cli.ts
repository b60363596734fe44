#!/usr/bin/env node
/**
 * The `ckpt` command (package.json "bin"): a thin shell over the library, see src/cli/main.ts.
 */
import { main } from './cli/main.js'

// a closed pipe (`ckpt log | head -1`) is not an error of ours
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0)
  throw err
})

process.exitCode = await main(process.argv.slice(2))
