/**
 * The commands of `ckpt`, one module each in commands/NAME.ts: each parses its arguments, makes one
 * library call (or a few) and prints text, or JSON with --json (one document, or JSON lines: Command.json).
 */
import os from 'node:os'
import { add } from './commands/add.js'
import { cat } from './commands/cat.js'
import { diff } from './commands/diff.js'
import { exportCmd } from './commands/export.js'
import { fork } from './commands/fork.js'
import { gc } from './commands/gc.js'
import { history } from './commands/history.js'
import { importCmd } from './commands/import.js'
import { init } from './commands/init.js'
import { log } from './commands/log.js'
import { pull } from './commands/pull.js'
import { push } from './commands/push.js'
import { ref } from './commands/ref.js'
import { remote } from './commands/remote.js'
import { repair } from './commands/repair.js'
import { restore } from './commands/restore.js'
import { rm } from './commands/rm.js'
import { seek } from './commands/seek.js'
import { show } from './commands/show.js'
import { stats } from './commands/stats.js'
import { thin } from './commands/thin.js'
import { verify } from './commands/verify.js'
import type { Command } from './shared.js'

export type { Command } from './shared.js'

/**
 * A command that writes output files, with SIGINT/SIGTERM/SIGHUP handlers while it runs: they remove
 * this process's temporary files (TARGET.ckpt-partial-PID) and then end the process by the same signal
 * (the default action, back in place: a shell says 130, 143, 129).
 */
function removingPartialsOnSignals(c: Command): Command {
  return {
    ...c,
    async run(argv) {
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

export const COMMANDS: ReadonlyMap<string, Command> = new Map([
  ['init', init],
  ['add', add],
  ['log', log],
  ['show', show],
  ['seek', seek],
  ['restore', removingPartialsOnSignals(restore)],
  ['cat', cat],
  ['diff', diff],
  ['history', history],
  ['stats', stats],
  ['export', removingPartialsOnSignals(exportCmd)],
  ['import', importCmd],
  ['verify', verify],
  ['repair', repair],
  ['thin', thin],
  ['rm', rm],
  ['fork', fork],
  ['ref', ref],
  ['gc', gc],
  ['remote', remote],
  ['push', push],
  ['pull', pull],
])
