import { describe, expect, it } from 'vitest';
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ToolError } from '../../../common/errors.ts';
import { ARCHIVE_SUITES, hostMirrors, parseSourcesText, privateApt, privateSourcesList, SECURITY_SUITES } from '../../../compiler/kernel/apt.ts';

describe('the host sources files give the mirrors', () => {
  it('reads deb822 .sources (as this machine has) and skips disabled entries', () => {
    const text = [
      'Types: deb',
      '# http://snapshot.debian.org/archive/debian/20250520T000000Z',
      'URIs: http://deb.debian.org/debian',
      'Suites: bookworm bookworm-updates',
      'Components: main',
      'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg',
      '',
      'Types: deb',
      'URIs: http://deb.debian.org/debian-security',
      'Suites: bookworm-security',
      'Components: main',
      '',
      'Types: deb',
      'Enabled: no',
      'URIs: http://example.invalid/x',
      'Suites: nodistro',
    ].join('\n');
    expect(parseSourcesText(text, true)).toEqual([
      { uri: 'http://deb.debian.org/debian', suites: ['bookworm', 'bookworm-updates'], signedBy: '/usr/share/keyrings/debian-archive-keyring.gpg' },
      { uri: 'http://deb.debian.org/debian-security', suites: ['bookworm-security'], signedBy: undefined },
    ]);
  });

  it('reads one-line .list entries with options', () => {
    expect(parseSourcesText('# c\ndeb [arch=amd64 signed-by=/k.gpg] http://m/debian bookworm main\ndeb-src http://m/debian bookworm main\n', false)).toEqual([
      { uri: 'http://m/debian', suites: ['bookworm'], signedBy: '/k.gpg' },
    ]);
  });

  it('picks the archive and security mirrors from an /etc/apt tree, and says when there is none', () => {
    const etc = mkdtempSync(join(tmpdir(), 'ciel-etc-'));
    mkdirSync(join(etc, 'sources.list.d'));
    writeFileSync(join(etc, 'sources.list.d', 'vendor.list'), 'deb https://vendor.invalid/apt cloud-sdk-bookworm main\n');
    expect(() => hostMirrors(etc)).toThrow(ToolError);
    writeFileSync(join(etc, 'sources.list'), 'deb http://mirror.invalid/debian bookworm main\ndeb http://mirror.invalid/debian-security bookworm-security main\n');
    expect(hostMirrors(etc)).toEqual({ archive: 'http://mirror.invalid/debian', security: 'http://mirror.invalid/debian-security', keyring: '/usr/share/keyrings/debian-archive-keyring.gpg' });
  });

  it('lists every suite that carries a kernel line, main only, amd64 only', () => {
    const text = privateSourcesList({ archive: 'http://m/debian', security: 'http://m/debian-security', keyring: '/k.gpg' });
    const lines = text.trim().split('\n');
    expect(lines).toHaveLength(ARCHIVE_SUITES.length + SECURITY_SUITES.length);
    expect(lines).toContain('deb [arch=amd64 signed-by=/k.gpg] http://m/debian bullseye main');
    expect(lines).toContain('deb [arch=amd64 signed-by=/k.gpg] http://m/debian trixie-backports main');
    expect(lines).toContain('deb [arch=amd64 signed-by=/k.gpg] http://m/debian sid main');
    expect(lines).toContain('deb [arch=amd64 signed-by=/k.gpg] http://m/debian-security bullseye-security main');
    expect(lines).toContain('deb [arch=amd64 signed-by=/k.gpg] http://m/debian-security trixie-security main');
  });

  it('keeps its state in the cache and never points apt at the system lists or sources', () => {
    const apt = privateApt();
    const opt = (k: string) => apt.options[apt.options.findIndex((o) => o.startsWith(`${k}=`))]!.split('=')[1];
    expect(opt('Dir::Etc::sourcelist').startsWith(apt.dir)).toBe(true);
    expect(opt('Dir::Etc::sourceparts')).toBe('-');
    expect(opt('Dir::State::Lists').startsWith(apt.dir)).toBe(true);
    expect(opt('Dir::Cache').startsWith(apt.dir)).toBe(true);
    expect(opt('Dir::State::status').startsWith(apt.dir)).toBe(true);
    expect(readFileSync(join(apt.dir, 'sources.list'), 'utf8')).toContain(' bullseye-security main');
  });
});
