// Container names of an origin VM from its disk image (the config's vms[].disk), as
// `ciel monitor --disk` reads them.

import { DiskNamesWatch } from '../disk/names-watch.ts';

/**
 * Fills a VM's name map (the one its MonitorSampler uses) from its disk image. Names given in the
 * config win. refresh() re-reads the disk only when the image changed or an unknown Docker id appeared
 * (DockerDiskNames); reads never overlap; each distinct error is reported once.
 */
export class DiskNames {
  private readonly watch: DiskNamesWatch;

  constructor(image: string, names: Map<string, string>, explicit: ReadonlySet<string>, report: (e: Error) => void) {
    this.watch = new DiskNamesWatch(
      image,
      (m) => {
        for (const [id, info] of m) if (!explicit.has(id)) names.set(id, info.name);
      },
      report,
    );
  }

  refresh(ids?: string[]): Promise<void> {
    return this.watch.refresh(ids);
  }
}
