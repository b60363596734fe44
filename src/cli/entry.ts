/**
 * The `ckpt` command line, run in this process or relayed to a `ckpt serve` holding its store: what
 * src/cli.ts (the unbundled command) awaits, and what the CLI's bundle exports to its launcher
 * (dist/cli/ckpt.js, written by scripts/bundle-cli.mjs), which relays first (src/cli/client.ts) and
 * loads this bundle only for a command it runs itself. Without top-level await, so that the bundle
 * can be one CommonJS script, compiled by V8 once and then loaded from its code cache.
 */
import { exitOnClosedPipe } from './closed-pipe.js'
import { runServed } from './serve-client.js'

/** Runs `ckpt ARGV...` in this process (no server asked) and resolves to its exit status. */
export async function runLocal(argv: string[]): Promise<number> {
  // `ckpt add` of big files and `ckpt restore` to files start their worker threads (and the add its
  // reading of the files) before the rest loads
  if (argv[0] === 'add') await (await import('./commands/add.js')).startEarly(argv.slice(1))
  else if (argv[0] === 'restore') await (await import('./commands/restore.js')).startEarly(argv.slice(1))
  const { main } = await import('./main.js')
  return await main(argv)
}

/** Runs `ckpt ARGV...` and resolves to its exit status. */
export async function runCli(argv: string[]): Promise<number> {
  exitOnClosedPipe()
  // a `ckpt serve` holding the command's store runs it (src/cli/serve-client.ts): this process only relays
  return (await runServed(argv)) ?? (await runLocal(argv))
}
