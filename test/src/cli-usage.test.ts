/**
 * The usage texts of `ckpt`: every option a command's parser accepts (its option table) is in its
 * usage lines and in its option list, and nothing else is; the main --help carries every command's
 * usage (the synopsis); README.md's CLI synopsis block, when it has the markers, is `ckpt --help`.
 */
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { COMMANDS } from '../../src/cli/commands.js'
import { generalHelp, synopsis } from '../../src/cli/help.js'
import { usageLines } from '../../src/cli/shared.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')

/** The long option names (`--name`) a text mentions. */
function optionsIn(text: string): Set<string> {
  return new Set([...text.matchAll(/(?<![\w-])--([a-z][a-z-]*)/g)].map((m) => m[1]!))
}

/** What the parser accepts, without --help (every command takes it; the main help says so). */
function accepted(options: Record<string, unknown>): Set<string> {
  return new Set(Object.keys(options).filter((o) => o !== 'help'))
}

describe('usage lines', () => {
  it('start with "usage: ckpt NAME", further lines indented under it', () => {
    for (const [name, c] of COMMANDS) {
      const lines = usageLines(c.help)
      expect(lines[0], name).toMatch(new RegExp(`^usage: ckpt ${name} `))
      for (const l of lines.slice(1)) expect(l, name).toMatch(new RegExp(`^ {7}(ckpt ${name} | {${name.length + 6}}\\S)`))
    }
  })

  it("name exactly the options each command's parser accepts", () => {
    for (const [name, c] of COMMANDS) {
      const usage = [...optionsIn(usageLines(c.help).join('\n'))].sort()
      expect(usage, `ckpt ${name}: usage lines vs option table`).toEqual([...accepted(c.options)].sort())
    }
  })

  it('every accepted option has a line of its own in the option list, and the list names no other', () => {
    for (const [name, c] of COMMANDS) {
      const listed = new Set([...c.help.matchAll(/^ {2}--([a-z][a-z-]*)/gm)].map((m) => m[1]!))
      expect([...listed].sort(), `ckpt ${name} --help: option list`).toEqual([...accepted(c.options)].sort())
    }
  })

  it('the known gaps are closed: --json on seek/rm/fork/ref, restore --blob, add --meta/--policy, thin --saved, repair --shallow', () => {
    const usage = (n: string) => usageLines(COMMANDS.get(n)!.help).join('\n')
    for (const n of ['seek', 'rm', 'fork', 'ref']) expect(usage(n)).toContain('[--json]')
    expect(usage('restore')).toContain('--blob NAME')
    expect(usage('add')).toContain('[--meta KEY=VALUE]...')
    expect(usage('add')).toContain('[--policy SPEC]')
    expect(usage('thin')).toContain('--saved')
    expect(usage('repair')).toContain('[--shallow]')
  })
})

describe('ckpt --help', () => {
  it("lists every command, every command's usage lines (the synopsis), and ref:NAME among the REFs", () => {
    const help = generalHelp()
    for (const name of COMMANDS.keys()) expect(help).toMatch(new RegExp(`^  ${name} `, 'm'))
    const lines = synopsis()
    expect(lines.length).toBeGreaterThanOrEqual(COMMANDS.size)
    expect(help).toContain(lines.map((l) => '  ' + l).join('\n'))
    expect(help).toContain('ref:NAME')
  })

  it('the built CLI prints it (dist/cli/ckpt.js)', () => {
    const r = spawnSync(process.execPath, [path.join(ROOT, 'dist/cli/ckpt.js'), '--help'], { encoding: 'utf8' })
    expect(r.status).toBe(0)
    expect(r.stdout).toBe(generalHelp() + '\n')
  })
})

describe("README.md's CLI synopsis", () => {
  it('is ckpt --help in a text fence, between <!-- cli-synopsis --> and <!-- /cli-synopsis --> (when it has them)', async () => {
    // @ts-expect-error: a plain ES module without types
    const { readmeBlock, fenced } = (await import('../../scripts/cli-synopsis.mjs')) as {
      readmeBlock(text: string): { text: string } | undefined
      fenced(s: string): string
    }
    const block = readmeBlock(fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8'))
    if (!block) return
    expect(block.text, 'README.md is out of date: run npm run build && node scripts/cli-synopsis.mjs --write').toBe(fenced(generalHelp() + '\n'))
  })
})
