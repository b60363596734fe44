/** The scan's span size (SPAN_SIZE of the scan cache, SPEC §18): a power of two; its own module so that loading it loads nothing else. */
export const SPAN_SIZE = 64 << 10
