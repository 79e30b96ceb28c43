// Keeping names from a VM's disk fresh while sampling: DockerDiskNames re-reads the disk only when the
// image changed or an unknown Docker id appeared; this adds what both the monitor daemon and
// `ciel autoscale` need around it: reads never overlap, and each distinct error is reported once (a
// missing image would otherwise be reported every interval).

import { DockerDiskNames, type DockerContainerInfo } from './docker-disk.ts';

export class DiskNamesWatch {
  private readonly disk: DockerDiskNames;
  private pending: Promise<void> | null = null;
  private lastError = '';

  constructor(
    image: string,
    private readonly onNames: (m: Map<string, DockerContainerInfo>) => void,
    private readonly report: (e: Error) => void,
  ) {
    this.disk = new DockerDiskNames(image);
  }

  /** Ask the disk about `ids` (all containers when omitted); joins a read already under way. */
  refresh(ids?: string[]): Promise<void> {
    this.pending ??= this.disk
      .lookup(ids)
      .then((m) => {
        this.onNames(m);
        this.lastError = '';
      })
      .catch((e: unknown) => {
        const err = e instanceof Error ? e : new Error(String(e));
        if (err.message !== this.lastError) this.report(err);
        this.lastError = err.message;
      })
      .finally(() => {
        this.pending = null;
      });
    return this.pending;
  }

  /** Resolves when the read under way (if any) has finished. */
  settle(): Promise<void> {
    return this.pending ?? Promise.resolve();
  }
}
