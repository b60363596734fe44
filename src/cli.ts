#!/usr/bin/env node
/**
 * The `ckpt` command (unbundled; package.json's "bin" is the bundle's launcher, dist/cli/ckpt.js): a thin
 * shell over the library, see src/cli/entry.ts and src/cli/main.ts.
 */
import module from 'node:module'

// Node >= 22.1: V8's on-disk compile cache, so a later `ckpt` process skips parsing and compiling the
// modules it loads (Node 20 has no such cache; there this is a no-op). Before the CLI is imported.
;(module as { enableCompileCache?: () => unknown }).enableCompileCache?.()

const { runCli } = await import('./cli/entry.js')
process.exitCode = await runCli(process.argv.slice(2))
