// The pool policy (provisioners/pool.ts) over a recording fake backend: which primitive each acquire,
// release, warm start and failure calls, in order. The real backends run the same code in
// qemu-direct.test.ts, warm-start.test.ts, libvirt.test.ts and libvirt-warm.test.ts.

import { describe, expect, it } from 'vitest';
import { ProvisionError } from '../../provisioners/errors.ts';
import type { GuestChannel } from '../../provisioners/guest-channel.ts';
import { VmPool } from '../../provisioners/pool.ts';
import type { Vm, VmSpec } from '../../provisioners/provisioner.ts';
import type { RestoredVm, SavedImage, VmBackend } from '../../provisioners/vm-backend.ts';
import type { WarmImage } from '../../provisioners/warm-identity.ts';

const spec = (name: string, container: string, o: Partial<VmSpec> = {}): VmSpec => ({
  name,
  container,
  vcpus: 1,
  memMiB: 256,
  kernel: '/k',
  initrd: '/i',
  cmdline: `ciel.container=${container}`,
  disk: 'overlay',
  ...o,
});

class FakeBackend implements VmBackend {
  readonly kind = 'fake';
  readonly calls: string[] = [];
  readonly made = new Map<string, Vm>();
  failBoot = false;
  fixupRc = 0;
  lastScript = '';

  check(vm: Vm): void {
    if (!this.made.has(vm.name)) throw new ProvisionError(vm.name, 'lookup', `VM ${vm.name} is not managed by this provisioner`);
  }
  vms(): Vm[] {
    return [...this.made.values()];
  }
  async define(s: VmSpec) {
    this.calls.push(`define ${s.name}`);
    const vm: Vm = { name: s.name, spec: { ...s }, state: 'defined', disk: `/d/${s.name}`, serialLog: `/d/${s.name}.log` };
    this.made.set(s.name, vm);
    return { vm, clone_ms: 5 };
  }
  async boot(vm: Vm) {
    this.calls.push(`boot ${vm.name} ${vm.spec.cmdline}`);
    if (this.failBoot) throw new ProvisionError(vm.name, 'boot', 'no ready line');
    vm.state = 'running';
  }
  async pause(vm: Vm) {
    this.calls.push(`pause ${vm.name}`);
    vm.state = 'paused';
  }
  async resume(vm: Vm) {
    this.calls.push(`resume ${vm.name}`);
    vm.state = 'running';
  }
  async stop(vm: Vm) {
    this.calls.push(`stop ${vm.name}`);
    vm.state = 'stopped';
  }
  async destroy(vm: Vm) {
    this.calls.push(`destroy ${vm.name}`);
    vm.state = 'destroyed';
    this.made.delete(vm.name);
  }
  async respec(vm: Vm, s: VmSpec) {
    this.calls.push(`respec ${vm.name} ${s.cmdline}`);
    vm.spec = { ...s, name: vm.name };
  }
  async saveImage(vm: Vm, file: string): Promise<SavedImage> {
    this.calls.push(`save ${vm.name}`);
    vm.state = 'paused';
    return { image: { file, spec: { ...vm.spec } }, save_ms: 1, bytes: 1 };
  }
  async restore(s: VmSpec, image: WarmImage): Promise<RestoredVm> {
    const { vm } = await this.define({ ...s, cmdline: image.spec.cmdline, ready: null });
    this.calls.push(`restore ${vm.name}`);
    vm.state = 'running';
    return { vm, clone_ms: 7, restore_ms: 100 };
  }
  macOf(vm: Vm): string {
    this.check(vm);
    return '52:54:00:00:00:01';
  }
  async channel(vm: Vm): Promise<GuestChannel> {
    this.check(vm);
    return { exec: async (script: string) => ((this.lastScript = script), { rc: this.fixupRc, out: this.fixupRc ? 'boom' : '' }) } as unknown as GuestChannel;
  }
  async vmStats(): Promise<never> {
    throw new Error('not used');
  }
}

describe('VmPool over a backend', () => {
  it('fresh clone, paused reuse (resume), stopped reuse re-specced for another container (boot)', async () => {
    const b = new FakeBackend();
    const hooked: string[] = [];
    const pool = new VmPool(b, { beforeBoot: async (vm) => void hooked.push(vm.spec.container) });
    const a = await pool.acquire(spec('r1', 'web'));
    expect(a).toMatchObject({ pooled: false, vm: { name: 'r1', state: 'running' } });
    expect(a.clone_ms).toBeGreaterThanOrEqual(5);
    await pool.release(a.vm); // default: pause
    expect(pool.pooled()).toEqual([a.vm]);
    const again = await pool.acquire(spec('r2', 'web'));
    expect(again).toMatchObject({ pooled: true, reuse: 'resume', clone_ms: 0 });
    expect(again.vm).toBe(a.vm);
    // a paused VM is never handed to another container: api gets a fresh clone while web's is paused
    await pool.release(again.vm, 'pause');
    const api = await pool.acquire(spec('r3', 'api'));
    expect(api).toMatchObject({ pooled: false, vm: { name: 'r3' } });
    // stopped: reused for api under its own name, with api's cmdline
    await pool.release(a.vm, 'stop');
    const api2 = await pool.acquire(spec('r4', 'api'));
    expect(api2).toMatchObject({ pooled: true, reuse: 'boot', vm: { name: 'r1', spec: { name: 'r1', container: 'api' } } });
    expect(hooked).toEqual(['web', 'api', 'api']);
    expect(b.calls).toEqual([
      'define r1',
      'boot r1 ciel.container=web',
      'pause r1',
      'resume r1',
      'pause r1',
      'define r3',
      'boot r3 ciel.container=api',
      'stop r1',
      'respec r1 ciel.container=api',
      'boot r1 ciel.container=api',
    ]);
    await pool.close();
    expect(b.made.size).toBe(0);
    expect(pool.pooled()).toEqual([]);
  });

  it('a fresh clone that fails to boot is destroyed; releasing a VM it did not make throws', async () => {
    const b = new FakeBackend();
    b.failBoot = true;
    const pool = new VmPool(b);
    await expect(pool.acquire(spec('x1', 'web'))).rejects.toThrow('no ready line');
    expect(b.calls).toEqual(['define x1', 'boot x1 ciel.container=web', 'destroy x1']);
    const stranger: Vm = { name: 'other', spec: spec('other', 'web'), state: 'running', disk: '', serialLog: '' };
    await expect(pool.release(stranger)).rejects.toThrow(/VM other is not managed by this provisioner/);
    expect(pool.pooled()).toEqual([]);
  });

  it('warm start: restore, fix-up with this VM\'s MAC and identity, then the VM is the spec\'s', async () => {
    const b = new FakeBackend();
    const image: WarmImage = { file: '/w.img', spec: spec('w', 'warm', { cmdline: 'ciel.warm=1' }) };
    const pool = new VmPool(b, { warm: { image, identity: (s) => (s.container === 'web' ? { ip: '10.0.0.5/24' } : undefined) } });
    const w = await pool.acquire(spec('w1', 'web'));
    expect(w).toMatchObject({ warm: true, pooled: false, clone_ms: 7 });
    expect(w.boot_ms).toBeGreaterThanOrEqual(100);
    expect(b.lastScript.split('\n')[0]).toBe(`ciel-net -m '52:54:00:00:00:01' '10.0.0.5/24' ''`);
    expect(b.calls).toEqual(['define w1', 'restore w1', 'respec w1 ciel.container=web']);
    expect(w.vm.spec).toMatchObject({ container: 'web', cmdline: 'ciel.container=web' });
    // no identity for db: a cold clone
    const d = await pool.acquire(spec('d1', 'db'));
    expect(d).toMatchObject({ pooled: false, vm: { name: 'd1' } });
    expect('warm' in d).toBe(false);
    // a failed fix-up destroys the restored VM and names it
    b.fixupRc = 3;
    const e = await pool.warmStart(spec('w2', 'web'), image).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ProvisionError);
    expect(e).toMatchObject({ vm: 'w2', step: 'fixup', message: 'identity fix-up of w2 failed (rc 3): boom' });
    expect(b.made.has('w2')).toBe(false);
  });
});
