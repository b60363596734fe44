/**
 * `ckpt`: dispatch of argv to a command, help, version, and error reporting (exit codes in EXIT).
 * A command's module is loaded only when it runs (registry.ts): `ckpt add` loads add's code and the
 * library parts it uses, not the other 21 commands; help texts load them all (help.ts).
 */
import { wantsHelp, wantsJson } from './args.js'
import { classify, EXIT, UsageError, type ExitCode } from './errors.js'
import { toJson } from './format.js'
import { loadCommand } from './registry.js'
import { jsonPrinted } from './shared.js'

export { EXIT } from './errors.js'

function write(stream: NodeJS.WriteStream, text: string): void {
  stream.write(text.endsWith('\n') ? text : text + '\n')
}

/** Runs one command line; resolves to the exit status (never throws). */
export async function main(argv: string[]): Promise<ExitCode> {
  const json = wantsJson(argv)
  /** a command whose --json output is one document: no error document after it */
  let document = true
  // a `ckpt serve` process runs many command lines: what this one printed
  const printedBefore = jsonPrinted()
  try {
    const [cmd, ...rest] = argv
    if (cmd === undefined) {
      write(process.stderr, (await import('./help.js')).generalHelp())
      return EXIT.USAGE
    }
    if (cmd === '--help' || cmd === '-h') {
      write(process.stdout, (await import('./help.js')).generalHelp())
      return EXIT.OK
    }
    if (cmd === '--version' || cmd === '-V') {
      const { version } = await import('./help.js')
      write(process.stdout, json ? toJson({ version: version() }) : version())
      return EXIT.OK
    }
    if (cmd === 'help') {
      const topic = rest.find((a) => !a.startsWith('-'))
      if (topic === undefined) write(process.stdout, (await import('./help.js')).generalHelp())
      else {
        const c = await loadCommand(topic)
        if (!c) throw new UsageError(`unknown command ${JSON.stringify(topic)}`)
        write(process.stdout, c.help)
      }
      return EXIT.OK
    }
    const c = await loadCommand(cmd)
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
    if (json && !(document && jsonPrinted() > printedBefore)) process.stdout.write(toJson(r.json) + '\n')
    return r.exit
  }
}
