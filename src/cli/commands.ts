/**
 * The commands of `ckpt`, one module each in commands/NAME.ts: each parses its arguments, makes one
 * library call (or a few) and prints text, or JSON with --json (one document, or JSON lines: Command.json).
 */
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
import { serve } from './commands/serve.js'
import { show } from './commands/show.js'
import { stats } from './commands/stats.js'
import { thin } from './commands/thin.js'
import { verify } from './commands/verify.js'
import { removingPartialsOnSignals } from './registry.js'
import type { Command } from './shared.js'

export type { Command } from './shared.js'

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
  ['serve', serve],
])
