/**
 * `ckpt`: dispatch of argv to a command, help, version, and error reporting (exit codes in EXIT).
 */
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { wantsHelp, wantsJson } from './args.js'
import { COMMANDS } from './commands.js'
import { classify, EXIT, UsageError, type ExitCode } from './errors.js'
import { toJson } from './format.js'
import { jsonPrinted, usageLines } from './shared.js'

export { EXIT } from './errors.js'

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

function write(stream: NodeJS.WriteStream, text: string): void {
  stream.write(text.endsWith('\n') ? text : text + '\n')
}

/** Runs one command line; resolves to the exit status (never throws). */
export async function main(argv: string[]): Promise<ExitCode> {
  const json = wantsJson(argv)
  /** a command whose --json output is one document: no error document after it */
  let document = true
  try {
    const [cmd, ...rest] = argv
    if (cmd === undefined) {
      write(process.stderr, generalHelp())
      return EXIT.USAGE
    }
    if (cmd === '--help' || cmd === '-h') {
      write(process.stdout, generalHelp())
      return EXIT.OK
    }
    if (cmd === '--version' || cmd === '-V') {
      write(process.stdout, json ? toJson({ version: version() }) : version())
      return EXIT.OK
    }
    if (cmd === 'help') {
      const topic = rest.find((a) => !a.startsWith('-'))
      if (topic === undefined) write(process.stdout, generalHelp())
      else {
        const c = COMMANDS.get(topic)
        if (!c) throw new UsageError(`unknown command ${JSON.stringify(topic)}`)
        write(process.stdout, c.help)
      }
      return EXIT.OK
    }
    const c = COMMANDS.get(cmd)
    if (!c) throw new UsageError(cmd.startsWith('-') ? `unknown option ${JSON.stringify(cmd)} before the command` : `unknown command ${JSON.stringify(cmd)}`)
    document = c.json === 'document'
    if (wantsHelp(rest)) {
      write(process.stdout, c.help)
      return EXIT.OK
    }
    return (await c.run(rest)) ?? EXIT.OK
  } catch (err) {
    const r = classify(err)
    process.stderr.write(r.line + '\n')
    // JSON lines end with the error; a document command's error is its one document
    if (json && !(document && jsonPrinted() > 0)) process.stdout.write(toJson(r.json) + '\n')
    return r.exit
  }
}
