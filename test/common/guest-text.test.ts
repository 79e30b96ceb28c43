// Hostile names from a guest's disk and memory: every path that shows or passes them on is fuzzed with
// control characters, quotes, spaces, '=', newlines, huge lengths and invalid UTF-8.
import { describe, expect, it } from 'vitest';
import { isContainerName, printable } from '../../common/guest-text.ts';
import { replicaSpec } from '../../controller/replica-provisioner.ts';
import { parseDockerConfig } from '../../disk/docker-disk.ts';
import { displayName } from '../../monitor/live-table.ts';

const ID = 'a'.repeat(64);
const HOSTILE = [
  'web\x1b[2J\x1b[31m', // clear screen, red
  'x\x1b]2;pwned\x07', // set the terminal (tmux pane) title
  'web ciel.load=9 init=/bin/sh', // a space adds kernel parameters
  'web=1',
  "we'b",
  'we"b',
  'web\nciel.vip=1.2.3.4',
  'web\u202eevil', // right-to-left override
  'w'.repeat(5000),
  Buffer.from([0x77, 0xff, 0xfe, 0x62]).toString('utf8'), // invalid UTF-8 -> U+FFFD
  '-rf',
  '',
];

describe('names from the guest', () => {
  it('parseDockerConfig keeps only names Docker allows; a hostile one leaves the container unnamed', () => {
    for (const name of HOSTILE) expect(parseDockerConfig(ID, JSON.stringify({ ID, Name: `/${name}`, Config: { Image: 'busybox' } })), JSON.stringify(name)).toBeNull();
    expect(parseDockerConfig(ID, JSON.stringify({ ID, Name: '/web_1.a-b', Config: { Image: 'registry:5000/team/web:1.2@sha256:' + 'f'.repeat(64) } }))).toEqual({
      id: ID,
      name: 'web_1.a-b',
      image: 'registry:5000/team/web:1.2@sha256:' + 'f'.repeat(64),
    });
    // a hostile image is dropped, the (valid) name kept
    expect(parseDockerConfig(ID, JSON.stringify({ ID, Name: '/web', Config: { Image: 'busybox\x1b[2J' } }))).toEqual({ id: ID, name: 'web', image: '' });
  });

  it('the live table shows no control character and no more than 40 characters of any name or path', () => {
    for (const name of HOSTILE) {
      for (const c of [{ id: ID, name, cgroup: '/docker/x' }, { id: '', name: undefined, cgroup: `/system.slice/${name}` }]) {
        const shown = displayName(c);
        // eslint-disable-next-line no-control-regex
        expect(shown, JSON.stringify(name)).not.toMatch(/[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e]/);
        expect([...shown].length).toBeLessThanOrEqual(40);
      }
    }
    expect(printable('web\x1b[2J', 40)).toBe('web?[2J');
    expect(printable('w'.repeat(50), 10)).toBe('wwwwwwwww…');
  });

  it('a kernel command line never receives a name Docker would not allow', () => {
    const p = { kind: 'qemu-direct', template: '/t.qcow2', kernel: '/k', initrd: '/i', cmdline: 'console=ttyS0 ciel.container={container}', vcpus: 1, memMiB: 64 } as Parameters<typeof replicaSpec>[0];
    for (const name of HOSTILE) expect(() => replicaSpec(p, name, 'r1'), JSON.stringify(name)).toThrow(/is not a Docker container name: never put in a kernel command line/);
    expect(replicaSpec(p, 'web', 'r1').cmdline).toBe('console=ttyS0 ciel.container=web');
    expect(HOSTILE.some(isContainerName)).toBe(false);
  });
});
