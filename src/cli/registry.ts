/**
 * The commands of `ckpt` by name, each loaded when it is run: a command's module and the library
 * parts it imports are the only code a `ckpt NAME` process compiles. The order is COMMANDS' (commands.ts,
 * which holds them all for the help texts and the tests; a test checks both list the same names).
 */
import os from 'node:os'
import { serving, type Command } from './shared.js'

/**
 * A command that writes output files, with SIGINT/SIGTERM/SIGHUP handlers while it runs: they remove
 * this process's temporary files (TARGET.ckpt-partial-PID) and then end the process by the same signal
 * (the default action, back in place: a shell says 130, 143, 129). In a `ckpt serve` process none:
 * there a signal stops the server once the running command has finished (no partial file is left).
 */
export function removingPartialsOnSignals(c: Command): Command {
  return {
    ...c,
    async run(argv) {
      if (serving()) return await c.run(argv)
      const { removePartialFiles } = await import('../output-file.js')
      const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const
      const off = () => signals.forEach((s) => process.off(s, onSignal))
      const onSignal = (sig: NodeJS.Signals) => {
        removePartialFiles()
        off()
        process.kill(process.pid, sig)
        // the default action ends the process; should it not have, end as a shell would say it
        setTimeout(() => process.exit(128 + (os.constants.signals[sig] ?? 0)), 1000)
      }
      signals.forEach((s) => process.on(s, onSignal))
      try {
        return await c.run(argv)
      } finally {
        off()
      }
    },
  }
}

const LOADERS: ReadonlyMap<string, () => Promise<Command>> = new Map([
  ['init', async () => (await import('./commands/init.js')).init],
  ['add', async () => (await import('./commands/add.js')).add],
  ['log', async () => (await import('./commands/log.js')).log],
  ['show', async () => (await import('./commands/show.js')).show],
  ['seek', async () => (await import('./commands/seek.js')).seek],
  ['restore', async () => removingPartialsOnSignals((await import('./commands/restore.js')).restore)],
  ['cat', async () => (await import('./commands/cat.js')).cat],
  ['diff', async () => (await import('./commands/diff.js')).diff],
  ['history', async () => (await import('./commands/history.js')).history],
  ['stats', async () => (await import('./commands/stats.js')).stats],
  ['export', async () => removingPartialsOnSignals((await import('./commands/export.js')).exportCmd)],
  ['import', async () => (await import('./commands/import.js')).importCmd],
  ['verify', async () => (await import('./commands/verify.js')).verify],
  ['repair', async () => (await import('./commands/repair.js')).repair],
  ['thin', async () => (await import('./commands/thin.js')).thin],
  ['rm', async () => (await import('./commands/rm.js')).rm],
  ['fork', async () => (await import('./commands/fork.js')).fork],
  ['ref', async () => (await import('./commands/ref.js')).ref],
  ['gc', async () => (await import('./commands/gc.js')).gc],
  ['remote', async () => (await import('./commands/remote.js')).remote],
  ['push', async () => (await import('./commands/push.js')).push],
  ['pull', async () => (await import('./commands/pull.js')).pull],
  ['serve', async () => (await import('./commands/serve.js')).serve],
])

/** The command names, in the order of the help text. */
export const COMMAND_NAMES: readonly string[] = [...LOADERS.keys()]

/** Command `name`'s module (loaded now), or undefined when there is no such command. */
export async function loadCommand(name: string): Promise<Command | undefined> {
  return await LOADERS.get(name)?.()
}
