// Strings that come from a guest (names and images from its disk, cgroup paths and the kernel release from
// its memory) are data, never control: they are checked where they enter and made harmless where they are
// shown. A name that Docker itself could not have written is not a name: the container is shown by its id.

/** Docker's container name rule (daemon/names: [a-zA-Z0-9][a-zA-Z0-9_.-]+), capped at 128 characters. */
const CONTAINER_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/** An image reference as Docker writes it: name[:tag][@digest], no spaces, quotes or controls. */
const IMAGE_REF = /^[A-Za-z0-9][A-Za-z0-9._\-/:@+]{0,254}$/;

export const isContainerName = (s: string): boolean => CONTAINER_NAME.test(s);
export const isImageRef = (s: string): boolean => IMAGE_REF.test(s);

/**
 * For a terminal: C0/C1 controls, DEL, line/paragraph separators and bidi overrides become '?'
 * (an ESC from a guest would otherwise clear, colour or retitle the operator's terminal), and more
 * than `max` characters are cut with '…'.
 */
export function printable(s: string, max = 64): string {
  // eslint-disable-next-line no-control-regex
  const clean = s.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, '?');
  const chars = [...clean];
  return chars.length > max ? chars.slice(0, max - 1).join('') + '…' : clean;
}
