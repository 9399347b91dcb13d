// Writes real Bull (v4) jobs so opsgate's queue-depth probe is tested against Bull's own key layout.
//
//   node bull_jobs.js REDIS_URL QUEUE WAITING
//
// A worker (concurrency 1) fails one job and keeps a second one active; then WAITING plain jobs, one
// prioritized job and one delayed job are added. Prints one JSON line {"counts": queue.getJobCounts()} and
// holds everything as it is until stdin closes (or LIFETIME_MS passes), then exits without finishing the
// active job, which stays in Bull's active list.
'use strict';

const Queue = require('bull');

const LIFETIME_MS = 60000;
const DELAY_MS = 600000;

async function main() {
  const [redisUrl, name, waitingArg] = process.argv.slice(2);
  const waiting = Number(waitingArg);
  if (!redisUrl || !name || !Number.isInteger(waiting)) {
    throw new Error('usage: node bull_jobs.js REDIS_URL QUEUE WAITING');
  }
  setTimeout(() => {
    console.error(`bull_jobs.js: stdin still open after ${LIFETIME_MS} ms, exiting`);
    process.exit(2);
  }, LIFETIME_MS).unref();
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('close', () => process.exit(0));
  process.stdin.resume();

  const queue = new Queue(name, redisUrl);
  let holding;
  const held = new Promise(resolve => (holding = resolve));
  const failed = new Promise(resolve => queue.once('failed', resolve));
  queue.process(1, async job => {
    if (job.data.kind === 'fail') throw new Error('planned failure');
    if (job.data.kind === 'hold') {
      holding();
      await new Promise(() => {}); // never settles: the job stays active
    }
  });

  await queue.add({ kind: 'fail' });
  await queue.add({ kind: 'hold' });
  await Promise.all([failed, held]);
  for (let i = 0; i < waiting; i += 1) await queue.add({ kind: 'wait', i });
  await queue.add({ kind: 'prioritized' }, { priority: 1 });
  await queue.add({ kind: 'delayed' }, { delay: DELAY_MS });

  const counts = await queue.getJobCounts();
  process.stdout.write(`${JSON.stringify({ counts })}\n`);
}

main().catch(err => {
  console.error(err);
  process.exit(1);
});
