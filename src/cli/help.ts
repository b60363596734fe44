/**
 * The texts of `ckpt --help`, `ckpt help COMMAND` and `ckpt --version`. They need every command's
 * module (their help texts): main.ts loads this module only for them, so running one command loads
 * that command alone (registry.ts).
 */
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { COMMANDS } from './commands.js'
import { EXIT } from './errors.js'
import { usageLines } from './shared.js'

/** The package version, from the nearest package.json named "ckpt" above this file. */
export function version(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url))
  for (;;) {
    try {
      const p = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string }
      if (p.name === 'ckpt' && p.version) return p.version
    } catch {}
    const up = path.dirname(dir)
    if (up === dir) return 'unknown'
    dir = up
  }
}

/**
 * Every command's usage lines in COMMANDS' order, without their `usage: ` (7 characters, which the
 * further lines of a usage are indented by): `ckpt init --store DIR [--json]`, ...
 */
export function synopsis(): string[] {
  const out: string[] = []
  for (const c of COMMANDS.values()) for (const l of usageLines(c.help)) out.push(l.slice('usage: '.length))
  return out
}

/** `ckpt --help`: the commands, the synopsis of each, what they share; README.md's CLI synopsis is this text (scripts/cli-synopsis.mjs). */
export function generalHelp(): string {
  const width = Math.max(...[...COMMANDS.keys()].map((k) => k.length))
  const list = [...COMMANDS].map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`).join('\n')
  const quiet = [...COMMANDS].filter(([, c]) => 'quiet' in c.options).map(([name]) => name)
  const lines = [...COMMANDS].filter(([, c]) => c.json === 'lines').map(([name]) => name)
  return `usage: ckpt COMMAND [OPTIONS]

ckpt: a content-addressed checkpoint store for emulators and virtual machines.

commands:
${list}
  ${'help'.padEnd(width)}  show this text, or a command's (ckpt help COMMAND)

synopsis (ckpt COMMAND --help says more):
${synopsis()
  .map((l) => '  ' + l)
  .join('\n')}

Every command takes --store DIR (default: $CKPT_STORE), --json and --help. On a terminal, the
commands that may take a while (${quiet.join(', ')}) draw a progress
line on stderr, with a bar and a percentage when the total is known; --quiet turns it off.
Checkpoint references (REF): a CID, TIMELINE@VTIME (nearest at or before), TIMELINE (latest) or
ref:NAME (a ref set by ckpt ref).
With --json, stdout carries one JSON document, or JSON lines for ${lines.join(', ')}
(schemas/cli/COMMAND.schema.json says what each holds).

exit status: ${EXIT.OK} success, ${EXIT.DATA} data error (e.g. CKPT_NOT_FOUND), ${EXIT.USAGE} usage error, ${EXIT.STORE} the store cannot be opened

examples:
  ckpt init --store s
  ckpt add --store s --timeline vm1 --vtime 0 --label boot ram=ram.bin disk=disk.img --blob cpu=cpu.bin
  ckpt log --store s
  ckpt restore --store s vm1@0 --region ram --out ram.bin
  ckpt --version`
}
