// Round-trip fixture, not a seed: what PM2 decides for an app that leaves exec_mode, instances or merge_logs out,
// and env values that are not strings. The import must write these decisions out, because nodefleet.pm2.pm2_app
// always gives PM2 an exec mode and an instance count.
module.exports = {
  apps: [
    // instances without exec_mode: PM2 runs a Node.js app in cluster mode.
    { name: 'implicit-cluster', script: 'dist/server.js', instances: 2 },
    // Neither: fork mode, and PM2 merges the logs (no -<pm_id> in the file names, here the default ones).
    { name: 'implicit-fork', script: 'dist/worker.js' },
    // instances 0: one process per CPU.
    { name: 'all-cpus', script: 'dist/server.js', exec_mode: 'cluster', instances: 0, out_file: 'logs/all-cpus.log' },
    // fork mode given, no instances: merged logs too; env values PM2 turns into strings.
    {
      name: 'typed-env', script: 'dist/worker.js', exec_mode: 'fork', out_file: 'logs/typed-env.log',
      env: { FEATURE_BETA: true, SAMPLE_RATIO: 0.25, RETRIES: 3, LABEL: 'x' }
    }
  ]
};
