// The layering rules, checked in CI (`npm run lint:deps`, part of `npm test`).
// Product: common passes compiler vmi vmstats disk monitor controller provisioners cli.
// Around it: testbed/ (the lab), bench/, bin/, test/ -- nothing in the product depends on them.
const PRODUCT = '^(common|passes|compiler|vmi|vmstats|disk|monitor|controller|provisioners|cli)/';
const RUNTIME = '^(vmi|vmstats|disk|monitor|controller|provisioners)/';

module.exports = {
  forbidden: [
    {
      name: 'product-imports-lab',
      comment: 'Product code never imports the tests, benches, the demo or the testbed.',
      severity: 'error',
      from: { path: PRODUCT },
      to: { path: '^(test|bench|bin|testbed)/' },
    },
    {
      name: 'testbed-imports-tests',
      comment: 'The testbed is a library for tests, benches and the demo; it does not depend on them.',
      severity: 'error',
      from: { path: '^testbed/' },
      to: { path: '^(test|bench|bin)/' },
    },
    {
      name: 'runtime-loads-compiler',
      comment: 'Reading a guest never loads the compiler (ts-morph, LLVM, the BTF parser): common/build-artifact.ts reads builds.',
      severity: 'error',
      from: { path: RUNTIME },
      to: { path: ['^(compiler|passes)/', 'node_modules/(ts-morph|@ts-morph)/'] },
    },
    {
      name: 'common-is-a-leaf',
      comment: 'common/ holds what every folder shares; it depends on no other folder of ours.',
      severity: 'error',
      from: { path: '^common/' },
      to: { path: '^(passes|compiler|vmi|vmstats|disk|monitor|controller|provisioners|cli|testbed|test|bench|bin)/' },
    },
    {
      name: 'no-folder-cycles',
      comment: 'Folders form a DAG.',
      severity: 'error',
      scope: 'folder',
      from: {},
      to: { circular: true },
    },
    {
      name: 'no-module-cycles',
      severity: 'error',
      from: { path: PRODUCT },
      to: { circular: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(dist|generated|node_modules)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default'] },
  },
};
