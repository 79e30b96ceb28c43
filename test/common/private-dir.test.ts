import { mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ensurePrivateDir } from '../../common/private-dir.ts';

const base = mkdtempSync(join(tmpdir(), 'ciel-private-'));
afterAll(() => rmSync(base, { recursive: true, force: true }));

describe('ensurePrivateDir', () => {
  it('creates 0700, and tightens an existing 0755 folder to 0700', () => {
    const fresh = ensurePrivateDir(join(base, 'a', 'b'));
    expect(statSync(fresh).mode & 0o777).toBe(0o700);
    const loose = join(base, 'loose');
    mkdirSync(loose, { mode: 0o755 });
    expect(statSync(loose).mode & 0o777).toBe(0o755);
    ensurePrivateDir(loose);
    expect(statSync(loose).mode & 0o777).toBe(0o700);
  });

  it('refuses a symlink in place of the folder (another user could point it anywhere)', () => {
    const target = join(base, 'elsewhere');
    mkdirSync(target);
    const link = join(base, 'link');
    symlinkSync(target, link);
    expect(() => ensurePrivateDir(link)).toThrow(`${link}: is not a folder (a symlink or a file is never used for guest memory)`);
  });
});
