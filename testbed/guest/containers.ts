// The containers the test guest creates, with fixed Docker-style ids so tests can assert them.
// The init script is generated from this list (build.ts), so changing it changes the initramfs cache key.

export type Driver = 'cgroupfs' | 'systemd';
export type Role = 'burner' | 'memfill' | 'disk' | 'net' | 'netpeer' | 'idle';

export interface GuestContainer {
  /** short friendly name, also the role */
  name: Role;
  /** 64-hex Docker id */
  id: string;
  /** cgroupfs driver: /docker/<id>; systemd driver: /system.slice/docker-<id>.scope */
  driver: Driver;
  /** index used for the private subnet 10.77.<index>.0/24 (host side .1, container eth0 .2) */
  index: number;
}

function cg(driver: Driver, id: string): string {
  return driver === 'cgroupfs' ? `/docker/${id}` : `/system.slice/docker-${id}.scope`;
}

const LIST: GuestContainer[] = [
  { name: 'burner', id: 'c0950a75a032bf794d311c4b43a4b187fba9664f3d7679cb12754906e6b734b2', driver: 'cgroupfs', index: 1 },
  { name: 'memfill', id: '1293c8187ed1e3c05b99b071ea5f38acfce21b8d326ff3bd7a759725edcc589b', driver: 'cgroupfs', index: 2 },
  { name: 'disk', id: 'a32560a85b5a09ff35586859dd3bee1c51d7ba61689d7d6357e34a005beac6c5', driver: 'systemd', index: 3 },
  { name: 'net', id: '660dd376c5338120681de6f9063401d1415a79166c18f74ea1f8d9383560f9f7', driver: 'systemd', index: 4 },
  { name: 'netpeer', id: '2f2bf893f25eeff48c12d496041985c2f2fcf4249d3a6d6bf8af0d3e75a43a94', driver: 'cgroupfs', index: 5 },
  { name: 'idle', id: '2f8091727cd657a0811336067a46eeab3da701f6f13523bde16beb71c3f39384', driver: 'systemd', index: 6 },
];

export const GUEST_CONTAINERS: readonly (GuestContainer & { cgroup: string })[] = LIST.map((c) => ({
  ...c,
  cgroup: cg(c.driver, c.id),
}));

/** The known loads, so tests can check magnitudes. */
export const LOAD = {
  /** burner is capped with a CFS quota at this fraction of one CPU */
  burnerCpuFraction: 0.5,
  /** memfill writes this many MiB into a tmpfs file (page cache / shmem, "file" in memory.stat) */
  memfillFileMiB: 48,
  /** memfill holds this many MiB of anonymous memory (a dd buffer blocked on a full pipe) */
  memfillAnonMiB: 16,
  /** disk writes and reads this many KiB with O_DIRECT per round, one round per second */
  diskKiBPerRound: 1024,
  /** net pings netpeer with this payload size, 5 per second */
  netPingBytes: 1000,
} as const;

export function containerByName(name: Role): GuestContainer & { cgroup: string } {
  const c = GUEST_CONTAINERS.find((x) => x.name === name);
  if (!c) throw new Error(`no guest container ${name}`);
  return c;
}

/**
 * The three services of the autoscaling demo/e2e/bench guest (web, db, batch), in Docker cgroup layouts.
 * Not in GUEST_CONTAINERS (so the standard guest and its initramfs cache key are unchanged): they are
 * created at run time in a `bare` guest through `sh()` (testbed/services.ts).
 */
export type ServiceName = 'web' | 'db' | 'batch';
const SERVICE_LIST: { name: ServiceName; id: string; driver: Driver }[] = [
  { name: 'web', id: '7e1b5ca3f0d94e2c8a6b13d5f7a9c0e2b4d6f8a1c3e5b7d9f0a2c4e6b8d0f1a3', driver: 'cgroupfs' },
  { name: 'db', id: 'db0c4f2a8e6b1d3f5a7c9e0b2d4f6a8c1e3b5d7f9a0c2e4b6d8f1a3c5e7b9d0f', driver: 'cgroupfs' },
  { name: 'batch', id: 'ba7c90e1d3f5a7c9b1d3f5e7a9c0b2d4e6f8a1c3b5d7e9f0a2c4b6d8e0f1a3c5', driver: 'systemd' },
];
export const SERVICE_CONTAINERS: readonly { name: ServiceName; id: string; driver: Driver; cgroup: string }[] = SERVICE_LIST.map((c) => ({
  ...c,
  cgroup: cg(c.driver, c.id),
}));
