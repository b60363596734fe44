/**
 * What the `ckpt` launcher loads first (dist/cli/client.cjs, scripts/bundle-cli.mjs): the relay to a
 * `ckpt serve` holding the command's store, which needs nothing of the library, so a served command
 * never loads the CLI's bundle (src/cli/entry.ts).
 */
export { exitOnClosedPipe } from './closed-pipe.js'
export { runServed } from './serve-client.js'
