'use strict'
// Shared by the kafkajs scripts: argument parsing, a hard timeout, a kafkajs client that logs to
// stderr only, and the one JSON result each script prints on stdout.
const { Kafka, logLevel } = require('kafkajs')

// Usage: node <script>.js '<json args>'; args.timeoutMs bounds the whole run.
function start () {
  const args = JSON.parse(process.argv[2] || '{}')
  const ms = args.timeoutMs || 20000
  setTimeout(() => {
    process.stderr.write(`hard timeout after ${ms} ms\n`)
    process.exit(3)
  }, ms).unref()
  return args
}

function client (args) {
  return new Kafka({
    clientId: 'tributary-kafkajs-tests',
    brokers: [args.bootstrap],
    connectionTimeout: 3000,
    requestTimeout: 10000,
    retry: { retries: 3, initialRetryTime: 100, maxRetryTime: 1000 },
    logLevel: logLevel.WARN,
    logCreator: () => ({ namespace, label, log }) => {
      process.stderr.write(`${label} [${namespace}] ${log.message} ${JSON.stringify(log)}\n`)
    }
  })
}

// Buffers become {utf8, hex} so Python can compare exact bytes; null stays null.
function bytes (b) {
  if (b === null || b === undefined) return null
  return { utf8: b.toString('utf8'), hex: b.toString('hex') }
}

function headers (h) {
  const out = []
  for (const [k, v] of Object.entries(h || {})) {
    for (const one of Array.isArray(v) ? v : [v]) out.push([k, bytes(one)])
  }
  return out
}

// Runs `main(args)` and prints its result as one JSON line; failures exit 1 with the error.
function run (main) {
  const args = start()
  main(args).then(
    (result) => {
      process.stdout.write(JSON.stringify(result) + '\n')
      process.exit(0)
    },
    (err) => {
      process.stderr.write(`error: ${err && err.stack ? err.stack : err}\n`)
      process.stdout.write(JSON.stringify({ error: { name: err.name, type: err.type, message: err.message } }) + '\n')
      process.exit(1)
    }
  )
}

// Runs an admin call and returns {ok: value} or {error: {name, type, code}} (kafkajs protocol errors).
async function attempt (fn) {
  try {
    const value = await fn()
    return { ok: value === undefined ? null : value }
  } catch (e) {
    const inner = (e.errors && e.errors[0]) || e.cause || e
    return { error: { name: e.name, type: inner.type || e.type || null, code: inner.code || e.code || null, message: e.message } }
  }
}

module.exports = { run, client, bytes, headers, attempt }
