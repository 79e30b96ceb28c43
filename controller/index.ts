export * from './types.ts';
export { hpaDesired, lsqSlope, parseTime } from './math.ts';
export { PolicyEngine, containerKey, type ContainerStepResult, type VmCheckResult } from './policy.ts';
export {
  Autoscaler,
  jsonLines,
  type AutoscalerOptions,
  type Backend,
  type ContainerSampler,
  type LoadBalancer,
  type ReplicaProvisioner,
  type VmStatsSource,
} from './autoscaler.ts';
export { utilisation, vmUsage, containerUsage, vmCapacity, type Usage, type Capacity } from './utilisation.ts';
export { AutoscaleService, StartError, type AutoscaleServiceOptions } from './service.ts';
