// The files that make a Docker guest a real server behind IPVS direct routing, written on its disk
// offline (before it boots, like the rest of a clone's identity):
//  - eth0's address on the private segment (systemd-networkd; no gateway: clients are on the segment),
//  - the virtual IP on lo (a second systemd-networkd file, for lo): packets the balancer forwards keep the
//    VIP as their destination, so the guest must own it; on lo it is a LOCAL address, so Docker's
//    published-port DNAT (`-m addrtype --dst-type LOCAL -j DOCKER`) sends them on into the web container,
//  - sysctl.d: arp_ignore=1 (answer ARP only for addresses on the asking interface: the VIP on lo is never
//    announced, the balancer alone answers for it) and arp_announce=2 (never use the VIP as an ARP source).
import { NETWORK_FILE_PATH } from './recipe.ts';

export const LO_NETWORK_PATH = '/etc/systemd/network/05-lo-vip.network';
export const ARP_SYSCTL_PATH = '/etc/sysctl.d/60-ciel-direct-routing.conf';

/** eth0 on the segment: its address only (the template's file has QEMU's user-network gateway). */
export function segmentNetworkFile(address: string): string {
  return `[Match]\nName=eth0\n\n[Network]\nAddress=${address}\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n`;
}

/** lo keeps 127.0.0.1 (networkd adds, it does not replace) and gains the VIP as a /32. */
export function loVipNetworkFile(vip: string): string {
  return `[Match]\nName=lo\n\n[Network]\nAddress=${vip}/32\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n`;
}

export const ARP_SYSCTL = [
  'net.ipv4.conf.all.arp_ignore = 1',
  'net.ipv4.conf.all.arp_announce = 2',
  'net.ipv4.conf.default.arp_ignore = 1',
  'net.ipv4.conf.default.arp_announce = 2',
  '',
].join('\n');

/** Every file a real server behind the VIP needs on its disk. */
export function directRoutingFiles(address: string, vip: string): { path: string; content: string }[] {
  return [
    { path: NETWORK_FILE_PATH, content: segmentNetworkFile(address) },
    { path: LO_NETWORK_PATH, content: loVipNetworkFile(vip) },
    { path: ARP_SYSCTL_PATH, content: ARP_SYSCTL },
  ];
}
