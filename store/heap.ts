/**
 * A full V8 collection, for the passes that scan the whole index (gc): they make garbage (a key and a
 * value per entry) faster than V8 collects its old generation on its own, and gc's peak RSS is one of
 * its promises. The flag is V8's own `--expose-gc`, set on first use (never at import); where it cannot
 * be had this does nothing.
 */
import v8 from 'node:v8'
import vm from 'node:vm'

let collect: (() => void) | undefined

export function fullCollection(): void {
  collect ??= (() => {
    try {
      v8.setFlagsFromString('--expose-gc')
      const f = vm.runInNewContext('gc') as unknown
      return typeof f === 'function' ? (f as () => void) : () => {}
    } catch {
      return () => {}
    }
  })()
  collect()
}
