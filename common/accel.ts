// Which QEMU accelerator to use. KVM only where it is a real hardware backend: /dev/kvm usable AND the
// CPU advertises VT-x/AMD-V. On this machine kind /dev/kvm exists but is a software backend (no vmx/svm:
// `-cpu host` aborts, the kernel decompresses at ~6 KB/s, DESIGN.md), so TCG is the fast choice there.
import { accessSync, constants, readFileSync } from 'node:fs';

export interface Accel {
  kind: 'kvm' | 'tcg';
  /** QEMU arguments: -accel ... -cpu ... */
  args: string[];
  why: string;
}

export function chooseAccel(env: NodeJS.ProcessEnv = process.env): Accel {
  const forced = env.CIEL_ACCEL;
  const tcg = (why: string): Accel => ({ kind: 'tcg', args: ['-accel', 'tcg,thread=multi', '-cpu', 'qemu64'], why });
  const kvm = (why: string): Accel => ({ kind: 'kvm', args: ['-accel', 'kvm', '-cpu', 'host'], why });
  if (forced === 'tcg') return tcg('CIEL_ACCEL=tcg');
  if (forced === 'kvm') return kvm('CIEL_ACCEL=kvm');
  let flags = '';
  try {
    flags = readFileSync('/proc/cpuinfo', 'latin1');
  } catch {
    return tcg('no /proc/cpuinfo');
  }
  if (!/^flags\s*:.*\b(vmx|svm)\b/m.test(flags)) return tcg('the CPU has no vmx/svm: /dev/kvm (if any) would be a slow software backend');
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch {
    return tcg('/dev/kvm is not usable');
  }
  return kvm('hardware virtualization (vmx/svm) and /dev/kvm');
}
