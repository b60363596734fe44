/**
 * The deterministic BIOS guest of the v86 tests: v86 running Debian's SeaBIOS, booting the 512-byte
 * boot sector of test/fixtures/v86-boot.S from a floppy. SeaBIOS lives in .guest/ (or $V86_GUEST_DIR):
 * fetched with `node scripts/fetch-guest.mjs --bios-only` when missing; without apt the emulator tests
 * skip with the message `noBios()` returns.
 */
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
export const GUEST = process.env.V86_GUEST_DIR ?? path.join(ROOT, '.guest')
const BIOS = ['bios.bin', 'vgabios-stdvga.bin']

let why: string | undefined | null = null

/** undefined when SeaBIOS is there (fetched once if missing), else why the emulator tests skip */
export function noBios(): string | undefined {
  if (why !== null) return why
  const have = () => BIOS.every((f) => fs.existsSync(path.join(GUEST, f)))
  if (have()) return (why = undefined)
  const r = spawnSync(process.execPath, [path.join(ROOT, 'scripts/fetch-guest.mjs'), GUEST, '--bios-only'], { encoding: 'utf8', timeout: 180_000 })
  if (have()) return (why = undefined)
  const said = (r.stderr ?? '').split('\n').filter((l) => l.startsWith('fetch-guest:')).pop()
  return (why = `no SeaBIOS in ${GUEST} and scripts/fetch-guest.mjs --bios-only failed: ${said ?? r.error?.message ?? (r.stderr ?? '').trim().split('\n').pop()}`)
}

/**
 * test/fixtures/v86-boot.S, assembled: 172 bytes of code, then zeros, then the 55 aa signature.
 * Forever: tick++ (in %bp), a busy loop, fill the RAM page at 0x10000 + (tick & 15) * 0x1000 with the
 * tick (2048 words), print "tick XXXX\r\n" on COM1 and the text screen (cursor cell: the word at 0x600),
 * and every 8th tick hlt.
 */
export const BOOT_SECTOR = (() => {
  const code = Buffer.from(
    'fa31c08ed88ed0bc007cfb31edc7060006000045b90040e2fe89e883e00fc1e0080500108ec031ff89e8b90008fcf3abbea67cac84c07405e82e00ebf6b9040089ebc1c30488d8240f04303c3976020407e81500e2ecb00de80e00b00ae80900f7c5070075adf4ebaa50bafd03eca82074fb58baf803ee3c0d742a3c0a74260657bf00b88ec78b3e0006d1e7b4072689055f07ff060006813e0006d0077206c70600060000c37469636b2000',
    'hex',
  )
  const s = new Uint8Array(512)
  s.set(code)
  s[510] = 0x55
  s[511] = 0xaa
  return s
})()

/** guest physical addresses the boot sector writes */
export const BOOT_ADDR = {
  /** the VGA cursor (a character cell index, word): changes with every character printed */
  cursor: 0x600,
  /** the page filled with the tick when tick & 15 === k */
  tickPage: (k: number) => 0x10000 + k * 0x1000,
}

const file = (f: string) => new Uint8Array(fs.readFileSync(path.join(GUEST, f))).buffer

/** V86 options of the BIOS guest: 32 MiB, JIT off, not started (the test drives main_loop itself). */
export function biosGuestOptions(): Record<string, unknown> {
  const fda = new Uint8Array(1474560)
  fda.set(BOOT_SECTOR)
  return {
    wasm_path: path.join(ROOT, 'node_modules/v86/build/v86.wasm'),
    memory_size: 32 << 20,
    vga_memory_size: 2 << 20,
    bios: { buffer: file('bios.bin') },
    vga_bios: { buffer: file('vgabios-stdvga.bin') },
    fda: { buffer: fda.buffer },
    autostart: false,
    disable_jit: true,
    preserve_mac_from_state_image: true,
  }
}

/** A new emulator of the BIOS guest, once its wasm is loaded. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function bootBiosGuest(V86: any): Promise<any> {
  const e = new V86(biosGuestOptions())
  await new Promise<void>((r) => e.add_listener('emulator-ready', () => r()))
  return e
}
