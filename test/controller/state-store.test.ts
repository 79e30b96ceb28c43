// controller/state-store.ts: the file is private, numbers are never reused across openings, rows survive a
// reopening as written, and a file that is not Ciel's state is a typed error naming it.
import { statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { useTempCache } from '../fixtures/temp-cache.ts';
import { StateStore, StateStoreError, stateLocation } from '../../controller/state-store.ts';

const dir = useTempCache('state');
const spec = { name: 'x', container: 'web', vcpus: 1, memMiB: 64, kernel: 'k', initrd: 'i', cmdline: 'c', disk: 'overlay' as const };

describe('StateStore', () => {
  it('one private file per config; rows and the replica counter survive a reopening', () => {
    const cfg = join(dir, 'a.json');
    writeFileSync(cfg, '{}');
    const s = StateStore.open(cfg);
    expect(s.file).toBe(stateLocation(cfg).file);
    expect(s.file.startsWith(join(dir, 'cache', 'autoscale'))).toBe(true);
    expect(statSync(s.file).mode & 0o777).toBe(0o600);
    expect([s.nextSeq(), s.nextSeq()]).toEqual([1, 2]);
    s.put({ name: `${s.prefix}-web-2`, container: 'web', origin: 'o', state: 'intent', spec, address: '10.0.0.2/24' });
    s.set(`${s.prefix}-web-2`, 'booted', { pid: 42, disk: '/d', ramFile: '/r' });
    s.close();
    const t = StateStore.open(cfg);
    expect(t.nextSeq()).toBe(3);
    expect(t.all()).toMatchObject([{ name: `${t.prefix}-web-2`, container: 'web', origin: 'o', state: 'booted', pid: 42, disk: '/d', ramFile: '/r', address: '10.0.0.2/24', spec }]);
    expect(t.prefix).toMatch(/^ciel-[0-9a-f]{8}$/);
    t.close();
    // another config: another file and prefix
    const other = join(dir, 'b.json');
    writeFileSync(other, '{}');
    expect(stateLocation(other).prefix).not.toBe(t.prefix);
  });

  it('read-only with no file yet: empty, and no file is made', () => {
    const cfg = join(dir, 'never.json');
    const s = StateStore.open(cfg, { readonly: true });
    expect(s.all()).toEqual([]);
    s.close();
    expect(() => statSync(stateLocation(cfg).file)).toThrow();
  });

  it('a file that is not a controller state: StateStoreError naming the file', () => {
    const cfg = join(dir, 'garbage.json');
    const { file } = stateLocation(cfg);
    writeFileSync(file, 'not sqlite at all, 64 bytes of nothing much..........................');
    const err = (() => {
      try {
        StateStore.open(cfg);
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(StateStoreError);
    expect((err as StateStoreError).file).toBe(file);
    expect((err as Error).message).toMatch(new RegExp(`^${file}: not a usable controller state: file is not a database$`));
  });
});
