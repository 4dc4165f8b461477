'use strict';
// The case runner the Node interop peers share: each case is an async
// function with a time limit, reported as one "ok"/"FAIL" line, and
// summary() prints the greatest-style line the test runner adds up.

const results = [];

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}

async function runCase(name, fn, ms = 30000) {
  const t0 = Date.now();
  try {
    await withTimeout(fn(), ms, name);
    results.push(true);
    console.log(`ok   ${name} (${((Date.now() - t0) / 1000).toFixed(2)} s)`);
  } catch (e) {
    results.push(false);
    console.log(`FAIL ${name}: ${e && e.message}`);
  }
}

// Prints the summary line; returns the number of failed cases.
function summary() {
  const passed = results.filter(Boolean).length;
  console.log(`Pass: ${passed}, fail: ${results.length - passed}, skip: 0.`);
  return results.length - passed;
}

module.exports = { withTimeout, runCase, summary };
