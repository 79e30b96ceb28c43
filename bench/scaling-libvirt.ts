// Benchmark: scale-out time with the libvirt provisioner (libvirtd + virsh), minimal VM (1 vCPU, 256 MiB,
// web only, TCG), split into clone and boot (until `CIEL-READY web`), medians of `reps`:
// - overlay clone: dumpxml of the template domain, qcow2 overlay, define; then `virsh start` + boot;
// - pooled reuse of a paused domain: `virsh resume`;
// - warm start: a booted warm-mode domain saved once with `virsh save`; each new domain restored from it
//   under its own name/UUID/MAC (libvirt-warm.ts: a per-clone image header streamed through a FIFO), then
//   its identity fixed up over the control channel. clone = image check + overlay + define + making the
//   clone's image; boot = restore + fix-up. The note also gives the same restore with 'copy' mode (a real
//   per-clone image file: the header + the stream copied), for the cost of making the image that way.
// libvirtd is started when absent and stopped afterwards only if this started it. Used by bench/scaling.ts
// (the lead integrates it); `npx tsx bench/scaling-libvirt.ts [reps]` runs it alone.

import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { cacheDir } from '../common/cache.ts';
import { tool } from '../provisioners/host-tool.ts';
import { ensureTestGuest } from '../testbed/minimal-guest.ts';
import { LibvirtDaemon } from '../provisioners/libvirt-daemon.ts';
import { LibvirtProvisioner } from '../provisioners/libvirt.ts';
import type { VmSpec } from '../provisioners/provisioner.ts';
import { median, ScaleOutSamples, type ScaleOutRow } from './scale-out-rows.ts';

const f0 = (x: number) => x.toFixed(0);

export const LIBVIRT_METHODS = {
  overlay: 'libvirt: overlay clone (define + start)',
  paused: 'libvirt: pooled reuse, paused VM (resume)',
  warm: 'libvirt: warm start (restore saved memory + fix-up)',
} as const;

export async function benchLibvirtScaleOut(reps: number, progress: (s: string) => void): Promise<ScaleOutRow[]> {
  const M = LIBVIRT_METHODS;
  const guest = await ensureTestGuest();
  const dir = cacheDir('bench-scaling-libvirt', String(process.pid));
  const daemon = await LibvirtDaemon.ensure();
  const template = `ciel-lvb-tmpl-${process.pid}`;
  const P = `ciel-lvb-${process.pid}`;
  const spec = (name: string): VmSpec => guest.spec(name, 'web');
  const samples = new ScaleOutSamples();
  const add = samples.add.bind(samples);
  const provs: LibvirtProvisioner[] = [];
  try {
    // e1000: the test guest's NIC driver (the warm fix-up sets the MAC on eth0)
    await LibvirtProvisioner.defineTemplate(
      { name: template, disk: guest.template, kernel: guest.kernel, initrd: guest.initrd, cmdline: guest.cmdline('none'), vcpus: 1, memMiB: 256, serialLog: join(dir, `${template}.serial.log`), nicModel: 'e1000' },
      daemon.uri,
      dir,
    );
    const prov = new LibvirtProvisioner({ template, dir, uri: daemon.uri });
    provs.push(prov);

    for (let rep = 1; rep <= reps; rep++) {
      progress(`libvirt rep ${rep}/${reps}: overlay clone (define) + start`);
      const a = await prov.cloneFromTemplate(spec(`${P}-ovl-${rep}`));
      const ab = await prov.start(a.vm);
      add(M.overlay, a.clone_ms, ab.boot_ms);
      progress(`libvirt rep ${rep}/${reps}: pooled reuse (suspend → resume)`);
      await prov.release(a.vm, 'pause');
      const p = await prov.acquire(spec(`${P}-pool-${rep}`));
      if (p.reuse !== 'resume' || p.vm !== a.vm) throw new Error(`expected the paused domain ${a.vm.name} resumed, got ${p.vm.name} (${p.reuse})`);
      add(M.paused, p.clone_ms, p.boot_ms);
      await prov.destroy(p.vm);
    }

    progress('libvirt warm start: boot a warm-mode domain, virsh save it');
    const image = join(dir, 'warm.save');
    const saved = await prov.prepareWarmImage({ ...spec(`${P}-warm`), cmdline: guest.cmdline('none', { warm: true }), ready: 'CIEL-WARM-READY' }, image);
    const copy = new LibvirtProvisioner({ template, dir, uri: daemon.uri, udpPortBase: 41000 + (process.pid % 1000) * 16, warmImageMode: 'copy' });
    provs.push(copy);
    const w = { restore: [] as number[], fixup: [] as number[], image: [] as number[], copyImage: [] as number[], copyRestore: [] as number[] };
    for (let rep = 1; rep <= reps; rep++) {
      progress(`libvirt rep ${rep}/${reps}: warm start (pipe)`);
      const r = await prov.warmStart(spec(`${P}-warm-${rep}`), saved.image);
      add(M.warm, r.clone_ms, r.boot_ms);
      w.restore.push(r.restore_ms);
      w.fixup.push(r.fixup_ms);
      w.image.push(r.image_ms);
      await prov.destroy(r.vm);
      progress(`libvirt rep ${rep}/${reps}: warm start (copy mode, for comparison)`);
      const c = await copy.warmStart(spec(`${P}-warmcp-${rep}`), saved.image);
      w.copyImage.push(c.image_ms);
      w.copyRestore.push(c.restore_ms);
      await copy.destroy(c.vm);
    }
    samples.note(
      M.warm,
      `restore ${f0(median(w.restore))} ms + fix-up ${f0(median(w.fixup))} ms; image ${(saved.bytes / 2 ** 20).toFixed(1)} MiB (${saved.bytes} B), saved once in ${f0(saved.save_ms)} ms; ` +
      `per-clone image: ${f0(median(w.image))} ms (new header through a FIFO, stream not copied); copying the stream instead: ${f0(median(w.copyImage))} ms, restore ${f0(median(w.copyRestore))} ms`,
    );
  } finally {
    for (const p of provs) await p.close().catch(() => {});
    await tool('virsh', ['-c', daemon.uri, 'undefine', template]).catch(() => {});
    rmSync(dir, { recursive: true, force: true });
    await daemon.stop();
  }
  return samples.rows();
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const reps = Number(process.argv[2] ?? 3);
  const rows = await benchLibvirtScaleOut(reps, (s) => console.error(s));
  console.log(`libvirt scale-out, minimal VM (1 vCPU, 256 MiB, web), medians of ${reps}`);
  console.log(`${'method'.padEnd(52)} ${'clone ms'.padStart(9)} ${'boot ms'.padStart(9)} ${'total ms'.padStart(9)}`);
  for (const r of rows) console.log(`${r.method.padEnd(52)} ${f0(r.clone_ms).padStart(9)} ${f0(r.boot_ms).padStart(9)} ${f0(r.total_ms).padStart(9)}${r.note ? `\n    ${r.note}` : ''}`);
  console.log(JSON.stringify(rows));
}
