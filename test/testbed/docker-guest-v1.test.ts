// The real Docker guest (Debian 12, systemd, docker.io) with cgroup v1: see docker-guest-suite.ts.
// One guest boot for the whole file; the template is built into the cache on first use (~5 min).
import { dockerGuestSuite } from './docker-guest-suite.ts';

dockerGuestSuite('v1');
