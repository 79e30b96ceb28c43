// What the real Docker guest is made of: the Debian packages, the files Ciel adds to the guest (control
// channel, network identity, fstab) and the three services in the paper's spirit (a CPU-bound web app, a
// database, periodic batch work). Everything here goes into the template's cache key.
import { CTL_SCRIPT } from '../minimal-guest.ts';

export const SUITE = 'bookworm';

/** Debian packages of the guest (Install-Recommends off). redis-server: the `db` image is cut from it. */
export const GUEST_PACKAGES = [
  'systemd', 'systemd-sysv', 'udev', 'dbus', 'docker.io', 'containerd', 'runc', 'iproute2', 'iptables', 'kmod',
  'initramfs-tools', 'zstd', 'procps', 'apparmor', 'linux-base', 'redis-server',
];

/** The guest's address on QEMU's user network (slirp: 10.0.2.0/24, gateway 10.0.2.2). */
export const TEMPLATE_ADDRESS = '10.0.2.15/24';
export const GUEST_GATEWAY = '10.0.2.2';

/** systemd-networkd's file for eth0: the VM's network identity (a clone gets its own, written offline). */
export function networkFile(address: string): string {
  return `[Match]\nName=eth0\n\n[Network]\nAddress=${address}\nGateway=${GUEST_GATEWAY}\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n`;
}
export const NETWORK_FILE_PATH = '/etc/systemd/network/10-eth0.network';

/**
 * The control channel: the same framing as the busybox guests (`<id> <base64 script>` in, `@@B <id>`,
 * output, `@@E <id> <rc>` out; provisioners/guest-channel.ts), run by systemd as root on ttyS1.
 */
export const CTL_UNIT = `[Unit]
Description=Ciel control channel on ttyS1
DefaultDependencies=no
After=systemd-udevd.service local-fs.target
Before=docker.service

[Service]
ExecStart=/usr/local/sbin/ciel-ctl
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
`;
export { CTL_SCRIPT };

/** Docker's daemon.json for the cgroup v1 guest (the paper's setup). */
export const CGROUPFS_DAEMON_JSON = JSON.stringify({ 'exec-opts': ['native.cgroupdriver=cgroupfs'] }) + '\n';

/**
 * The web app's request handler: a fixed amount of CPU work per request (like the paper's
 * image-pixelating app), a CGI script for busybox httpd. `n` iterations of shell arithmetic.
 */
export const WEB_CGI = `#!/bin/sh
n=\${QUERY_STRING:-20000}
case "$n" in *[!0-9]*|'') n=20000 ;; esac
i=0; s=0
while [ $i -lt $n ]; do s=$(( (s * 31 + i) % 1000003 )); i=$((i+1)); done
printf 'Content-Type: text/plain\\r\\n\\r\\nwork %s %s\\n' "$n" "$s"
`;

/** Periodic batch work: every 10 s, checksum 8 MiB of generated data, then write a summary. */
export const BATCH_SCRIPT = `#!/bin/sh
while :; do
  head -c 8388608 /dev/zero | md5sum > /tmp/last
  echo "$(date +%s) $(cat /tmp/last)" >> /tmp/log
  sleep 10
done
`;

export interface ServiceSpec {
  name: 'web' | 'db' | 'batch';
  /** image tag made by `docker import` */
  image: string;
  /** docker run arguments after the options we set for all (name, restart policy) */
  run: string[];
  /** guest TCP port the service answers on (published on the VM's address) */
  port?: number;
}

// busybox's sh as PID 1 ignores SIGTERM: SIGKILL stops these at once instead of holding shutdown 90 s
export const SERVICES: readonly ServiceSpec[] = [
  { name: 'web', image: 'ciel/web:1', port: 80, run: ['-p', '80:80', '--stop-signal', 'SIGKILL', 'ciel/web:1', '/bin/busybox', 'httpd', '-f', '-p', '80', '-h', '/www'] },
  { name: 'db', image: 'ciel/redis:7', port: 6379, run: ['-p', '6379:6379', 'ciel/redis:7', '/usr/bin/redis-server', '--bind', '0.0.0.0', '--protected-mode', 'no', '--save', '', '--appendonly', 'no'] },
  { name: 'batch', image: 'ciel/batch:1', run: ['--stop-signal', 'SIGKILL', 'ciel/batch:1', '/bin/sh', '/batch.sh'] },
];

/** Where the image tarballs wait in the guest until the template's first boot imports them. */
export const IMAGE_DIR = '/var/lib/ciel/images';
